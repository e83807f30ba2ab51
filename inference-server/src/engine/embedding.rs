//! Embedding requests: validate, tokenize off the runtime, batch on the model thread, pool.

use std::sync::Arc;
use std::time::Instant;

use crate::batching::{Batcher, Job, Settings, Worker};
use crate::cost::Bill;
use crate::error::Error;
use crate::metrics::Metrics;
use crate::model::pooling::l2_normalize;
use crate::model::Embedder;

/// Runs batches of token ids through the embedder; vectors come back raw (normalised per request).
struct EmbedWorker(Arc<Embedder>);

impl Worker for EmbedWorker {
    type Input = Vec<u32>;
    type Output = Vec<f32>;
    fn run(&mut self, batch: Vec<Vec<u32>>) -> anyhow::Result<Vec<Vec<f32>>> {
        Ok(self.0.embed(&batch, false)?)
    }
}

pub struct EmbedRequest {
    pub texts: Vec<String>,
    /// Cut inputs over the limit instead of refusing them.
    pub truncate: bool,
    pub normalize: bool,
}

pub struct Embedded {
    pub vectors: Vec<Vec<f32>>,
    /// Tokens the model ran, [CLS]/[SEP] included (OpenAI's `usage`).
    pub tokens: usize,
}

#[derive(Debug, Clone, Copy)]
pub struct EmbedLimits {
    /// Tokens per input; never above the model's positions.
    pub max_input_length: usize,
    pub max_batch_inputs: usize,
}

pub struct EmbeddingEngine {
    embedder: Arc<Embedder>,
    batcher: Batcher<Vec<u32>, Vec<f32>>,
    metrics: Arc<Metrics>,
    limits: EmbedLimits,
    normalize: bool,
}

impl EmbeddingEngine {
    pub fn start(
        embedder: Embedder,
        settings: Settings,
        limits: EmbedLimits,
        normalize: bool,
        metrics: Arc<Metrics>,
    ) -> Self {
        let embedder = Arc::new(embedder);
        let batcher = Batcher::start(EmbedWorker(embedder.clone()), settings, metrics.clone());
        EmbeddingEngine {
            embedder,
            batcher,
            metrics,
            limits,
            normalize,
        }
    }

    pub fn normalize_default(&self) -> bool {
        self.normalize
    }

    pub fn embedder(&self) -> &Embedder {
        &self.embedder
    }

    pub fn shutdown(&self) {
        self.batcher.shutdown();
    }

    /// Tokenizes, charges the tokens to `bill`, then runs the model.
    pub async fn embed(&self, req: EmbedRequest, bill: &mut Bill) -> Result<Embedded, Error> {
        check_inputs(&req.texts, self.limits.max_batch_inputs)?;
        let arrival = self.batcher.announce();
        let started = Instant::now();
        let embedder = self.embedder.clone();
        let max_len = self.limits.max_input_length;
        let (texts, truncate) = (req.texts, req.truncate);
        let encoded = tokio::task::spawn_blocking(move || {
            texts
                .iter()
                .map(|t| {
                    embedder
                        .tokenizer()
                        .encode(t, truncate.then_some(max_len))
                        .map(|e| e.ids)
                })
                .collect::<Result<Vec<_>, _>>()
        })
        .await
        .map_err(|e| Error::internal(format!("tokenizer task failed: {e}")))?
        .map_err(|e| Error::invalid("invalid_input", e.to_string()))?;
        self.metrics
            .tokenize_seconds
            .observe(started.elapsed().as_secs_f64());
        check_lengths(&encoded, max_len)?;

        let tokens = encoded.iter().map(Vec::len).sum();
        let request = self.batcher.admit(bill.tenant_key(), tokens)?;
        bill.charge(tokens).await?;
        let jobs = encoded
            .into_iter()
            .map(|ids| Job {
                tokens: ids.len(),
                input: ids,
            })
            .collect();
        let mut vectors = arrival.run_all(&request, jobs).await?;
        if req.normalize {
            vectors.iter_mut().for_each(|v| l2_normalize(v));
        }
        Ok(Embedded { vectors, tokens })
    }
}

/// Pure: the request-level checks that need no tokenizer.
pub fn check_inputs(texts: &[String], max_inputs: usize) -> Result<(), Error> {
    if texts.is_empty() {
        return Err(Error::invalid(
            "empty_input",
            "the input list is empty",
        ));
    }
    if texts.len() > max_inputs {
        return Err(Error::too_large(format!(
            "{} inputs in one request; the limit is {max_inputs} (--max-batch-inputs)",
            texts.len()
        )));
    }
    if let Some(i) = texts.iter().position(|t| t.trim().is_empty()) {
        return Err(Error::invalid(
            "empty_input",
            format!("input {i} is empty"),
        ));
    }
    Ok(())
}

/// Pure: refuses any tokenized input over the limit (only reachable without truncation).
pub fn check_lengths(encoded: &[Vec<u32>], max_len: usize) -> Result<(), Error> {
    match encoded.iter().position(|ids| ids.len() > max_len) {
        Some(i) => Err(Error::too_large(format!(
            "input {i} has {} tokens; the limit is {max_len} (--max-input-length); send \"truncate\": true to cut it",
            encoded[i].len()
        ))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_checks_name_the_problem() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(check_inputs(&[], 4).unwrap_err().code, "empty_input");
        assert!(check_inputs(&s(&["a", ""]), 4)
            .unwrap_err()
            .message
            .contains("input 1"));
        let e = check_inputs(&s(&["a"; 5]), 4).unwrap_err();
        assert_eq!(e.kind, crate::error::Kind::TooLarge);
        assert!(e.message.contains("--max-batch-inputs"));
        assert!(check_inputs(&s(&["a"]), 4).is_ok());
    }

    #[test]
    fn length_check_names_the_limit() {
        let e = check_lengths(&[vec![1, 2], vec![1, 2, 3]], 2).unwrap_err();
        assert!(
            e.message.contains("input 1 has 3 tokens; the limit is 2"),
            "{}",
            e.message
        );
        assert!(check_lengths(&[vec![1, 2]], 2).is_ok());
    }
}
