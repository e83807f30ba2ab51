//! Embedding requests: validate, tokenize off the runtime, batch on the model thread, pool.

use std::sync::Arc;

use crate::batching::{Batcher, Job, Settings, Worker};
use crate::cost::Bill;
use crate::error::Error;
use crate::metrics::Metrics;
use crate::model::pooling::l2_normalize;
use crate::model::tokenizer::{Encoding, Token, Tokenizer};
use crate::model::{Embedder, MultiEmbedding, Outputs, SparseWeights};

/// One text's token ids and the outputs its request asked for.
pub struct EmbedInput {
    ids: Vec<u32>,
    outputs: Outputs,
}

/// Runs batches through the embedder, computing what any input of the batch asked for in one
/// forward and giving each input only its own; vectors come back raw (normalised per request).
struct EmbedWorker(Arc<Embedder>);

impl Worker for EmbedWorker {
    type Input = EmbedInput;
    type Output = MultiEmbedding;
    fn run(&mut self, batch: Vec<EmbedInput>) -> anyhow::Result<Vec<MultiEmbedding>> {
        let any = batch
            .iter()
            .fold(Outputs::default(), |all, input| all.union(input.outputs));
        let (ids, wants): (Vec<Vec<u32>>, Vec<Outputs>) =
            batch.into_iter().map(|i| (i.ids, i.outputs)).unzip();
        let encoded = self.0.encode(&ids, any, false)?;
        Ok(encoded
            .into_iter()
            .zip(wants)
            .map(|(all, want)| MultiEmbedding {
                dense: all.dense.filter(|_| want.dense),
                sparse: all.sparse.filter(|_| want.sparse),
                colbert: all.colbert.filter(|_| want.colbert),
            })
            .collect())
    }
}

pub struct EmbedRequest {
    pub texts: Vec<String>,
    /// Cut inputs over the limit instead of refusing them.
    pub truncate: bool,
    pub normalize: bool,
    /// Keep only the first this many dimensions of each vector (Matryoshka models), then
    /// normalise if `normalize`; `None` keeps the model's size.
    pub dimensions: Option<usize>,
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
    batcher: Batcher<EmbedInput, MultiEmbedding>,
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

    /// Encodes each of `texts` off the runtime (cut to the input limit when `truncate`;
    /// `special` adds the special tokens) and turns it into what `each` makes of the tokenizer,
    /// the text and its encoding.
    async fn encode_each<T: Send + 'static>(
        &self,
        texts: Vec<String>,
        truncate: bool,
        special: bool,
        each: fn(&Tokenizer, &str, Encoding) -> T,
    ) -> Result<Vec<T>, Error> {
        let embedder = self.embedder.clone();
        let max_len = truncate.then_some(self.limits.max_input_length);
        super::tokenize_off_runtime(&self.metrics, move || {
            let tokenizer = embedder.tokenizer();
            texts
                .iter()
                .map(|t| {
                    Ok(each(
                        tokenizer,
                        t,
                        tokenizer.encode_with(t, max_len, special)?,
                    ))
                })
                .collect::<Result<Vec<_>, _>>()
        })
        .await
    }

    /// `/tokenize`: each text's tokens, under the same input checks as [`Self::embed`]; no
    /// model work, so nothing to charge.
    pub async fn tokenize(
        &self,
        texts: Vec<String>,
        truncate: bool,
        special: bool,
    ) -> Result<Vec<Vec<Token>>, Error> {
        check_inputs(&texts, self.limits.max_batch_inputs)?;
        let tokens = self
            .encode_each(texts, truncate, special, |tokenizer, text, encoding| {
                tokenizer.tokens(text, &encoding)
            })
            .await?;
        check_lengths(
            tokens.iter().map(Vec::len),
            self.limits.max_input_length,
            "input",
        )?;
        Ok(tokens)
    }

    /// `/decode`: the text of each list of ids.
    pub async fn decode(
        &self,
        ids: Vec<Vec<u32>>,
        skip_special: bool,
    ) -> Result<Vec<String>, Error> {
        if ids.is_empty() || ids.iter().any(Vec::is_empty) {
            return Err(Error::invalid(
                "empty_input",
                "ids must hold at least one id in each list",
            ));
        }
        check_count(ids.len(), self.limits.max_batch_inputs)?;
        let embedder = self.embedder.clone();
        tokio::task::spawn_blocking(move || {
            ids.iter()
                .map(|ids| embedder.tokenizer().decode(ids, skip_special))
                .collect::<Result<Vec<_>, _>>()
        })
        .await
        .map_err(|e| Error::internal(format!("tokenizer task failed: {e}")))?
        .map_err(|e| Error::invalid("invalid_input", e.to_string()))
    }

    /// Tokenizes, charges the tokens to `bill`, then runs the model.
    pub async fn embed(&self, req: EmbedRequest, bill: &mut Bill) -> Result<Embedded, Error> {
        let dims = check_dimensions(req.dimensions, self.embedder.info().dims)?;
        let (outputs, tokens) = self
            .run(req.texts, req.truncate, Outputs::DENSE, bill)
            .await?;
        let vectors = outputs
            .into_iter()
            .map(|out| {
                let mut v = out.dense.expect("asked for the dense vector");
                v.truncate(dims);
                if req.normalize {
                    l2_normalize(&mut v);
                }
                v
            })
            .collect();
        Ok(Embedded { vectors, tokens })
    }

    /// `/embed_sparse`: bge-m3's lexical weights of each text (never normalised).
    pub async fn embed_sparse(
        &self,
        texts: Vec<String>,
        truncate: bool,
        bill: &mut Bill,
    ) -> Result<Vec<SparseWeights>, Error> {
        self.require(
            self.embedder.has_sparse(),
            "a sparse head (`sparse_linear`)",
        )?;
        let (outputs, _) = self.run(texts, truncate, Outputs::SPARSE, bill).await?;
        Ok(outputs
            .into_iter()
            .map(|out| out.sparse.expect("asked for the sparse weights"))
            .collect())
    }

    /// `/embed_colbert`: bge-m3's multi-vector output, one vector per token after the first,
    /// each normalised when `normalize` (FlagEmbedding's `normalize_embeddings`).
    pub async fn embed_colbert(
        &self,
        texts: Vec<String>,
        truncate: bool,
        normalize: bool,
        bill: &mut Bill,
    ) -> Result<Vec<Vec<Vec<f32>>>, Error> {
        self.require(
            self.embedder.colbert_dims().is_some(),
            "a multi-vector head (`colbert_linear`)",
        )?;
        let (outputs, _) = self.run(texts, truncate, Outputs::COLBERT, bill).await?;
        Ok(outputs
            .into_iter()
            .map(|out| {
                let mut vectors = out.colbert.expect("asked for the multi-vectors");
                if normalize {
                    vectors.iter_mut().for_each(|v| l2_normalize(v));
                }
                vectors
            })
            .collect())
    }

    /// Refuses a route whose head the model lacks, as a route of another task is refused.
    fn require(&self, has_head: bool, head: &str) -> Result<(), Error> {
        if has_head {
            return Ok(());
        }
        Err(Error::not_found(format!(
            "the model {} has no {head}; this route needs a model with one, such as BAAI/bge-m3",
            self.embedder.info().model
        )))
    }

    /// Checks and tokenizes `texts`, charges the tokens to `bill`, then runs the model for
    /// `outputs`; returns them in input order with the tokens charged.
    async fn run(
        &self,
        texts: Vec<String>,
        truncate: bool,
        outputs: Outputs,
        bill: &mut Bill,
    ) -> Result<(Vec<MultiEmbedding>, usize), Error> {
        check_inputs(&texts, self.limits.max_batch_inputs)?;
        let arrival = self.batcher.announce();
        let encoded: Vec<Vec<u32>> = self
            .encode_each(texts, truncate, true, |_, _, encoding| encoding.ids)
            .await?;
        check_lengths(
            encoded.iter().map(Vec::len),
            self.limits.max_input_length,
            "input",
        )?;
        let jobs = encoded
            .into_iter()
            .map(|ids| Job {
                tokens: ids.len(),
                input: EmbedInput { ids, outputs },
            })
            .collect();
        super::run_charged(&self.batcher, arrival, bill, jobs).await
    }
}

/// Pure: the request-level checks that need no tokenizer.
pub fn check_inputs(texts: &[String], max_inputs: usize) -> Result<(), Error> {
    if texts.is_empty() {
        return Err(Error::invalid("empty_input", "the input list is empty"));
    }
    check_count(texts.len(), max_inputs)?;
    if let Some(i) = texts.iter().position(|t| t.trim().is_empty()) {
        return Err(Error::invalid("empty_input", format!("input {i} is empty")));
    }
    Ok(())
}

/// Pure: refuses more inputs in one request than `--max-batch-inputs`.
fn check_count(inputs: usize, max_inputs: usize) -> Result<(), Error> {
    if inputs > max_inputs {
        return Err(Error::too_large(format!(
            "{inputs} inputs in one request; the limit is {max_inputs} (--max-batch-inputs)"
        )));
    }
    Ok(())
}

/// Pure: the size of the vectors to return, refusing a `dimensions` of 0 or above the model's.
pub fn check_dimensions(dimensions: Option<usize>, model_dims: usize) -> Result<usize, Error> {
    match dimensions {
        None => Ok(model_dims),
        Some(d) if (1..=model_dims).contains(&d) => Ok(d),
        Some(d) => Err(Error::invalid(
            "invalid_dimensions",
            format!("dimensions is {d}; this model gives 1 to {model_dims}"),
        )),
    }
}

/// Pure: refuses the first tokenized sequence over the limit (only reachable without
/// truncation), naming it as `what` and its index.
pub fn check_lengths(
    lengths: impl IntoIterator<Item = usize>,
    max_len: usize,
    what: &str,
) -> Result<(), Error> {
    match lengths.into_iter().enumerate().find(|&(_, n)| n > max_len) {
        Some((i, n)) => Err(Error::too_large(format!(
            "{what} {i} has {n} tokens; the limit is {max_len} (--max-input-length); send \"truncate\": true to cut it"
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
    fn dimensions_stay_within_the_model() {
        assert_eq!(check_dimensions(None, 384).unwrap(), 384);
        assert_eq!(check_dimensions(Some(384), 384).unwrap(), 384);
        assert_eq!(check_dimensions(Some(1), 384).unwrap(), 1);
        for wrong in [0, 385] {
            let e = check_dimensions(Some(wrong), 384).unwrap_err();
            assert_eq!(e.code, "invalid_dimensions");
            assert!(e.message.contains("1 to 384"), "{}", e.message);
        }
    }

    #[test]
    fn length_check_names_the_limit() {
        let e = check_lengths([2, 3], 2, "input").unwrap_err();
        assert!(
            e.message.contains("input 1 has 3 tokens; the limit is 2"),
            "{}",
            e.message
        );
        assert!(check_lengths([2], 2, "input").is_ok());
    }
}
