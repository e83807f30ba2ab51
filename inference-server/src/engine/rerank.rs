//! Rerank requests: validate, encode each (query, text) pair off the runtime, charge the pairs'
//! tokens, score each pair as one job of the shared batcher, apply the model's activation.

use std::sync::Arc;

use super::embedding::{check_inputs, check_lengths, EmbedLimits};
use crate::batching::{Batcher, Job, Settings, Worker};
use crate::cost::Bill;
use crate::error::Error;
use crate::metrics::Metrics;
use crate::model::{CrossEncoder, PairEncoding, ScoreActivation};

/// Runs batches of pairs through the cross-encoder; one raw logit per pair.
struct RerankWorker(Arc<CrossEncoder>);

impl Worker for RerankWorker {
    type Input = PairEncoding;
    type Output = f32;
    fn run(&mut self, batch: Vec<PairEncoding>) -> anyhow::Result<Vec<f32>> {
        Ok(self.0.score(&batch)?)
    }
}

pub struct RerankRequest {
    pub query: String,
    pub texts: Vec<String>,
    /// Cut pairs over the limit instead of refusing them (the longer of query and text loses
    /// tokens first).
    pub truncate: bool,
    /// Return the raw logits instead of the model's activation of them.
    pub raw_scores: bool,
}

pub struct Reranked {
    /// One score per text, in the request's order.
    pub scores: Vec<f32>,
    /// Tokens the model ran, special tokens included.
    pub tokens: usize,
}

pub struct RerankEngine {
    model: Arc<CrossEncoder>,
    batcher: Batcher<PairEncoding, f32>,
    metrics: Arc<Metrics>,
    /// Tokens per pair and texts per request.
    limits: EmbedLimits,
}

impl RerankEngine {
    pub fn start(
        model: CrossEncoder,
        settings: Settings,
        limits: EmbedLimits,
        metrics: Arc<Metrics>,
    ) -> Self {
        let model = Arc::new(model);
        let batcher = Batcher::start(RerankWorker(model.clone()), settings, metrics.clone());
        RerankEngine {
            model,
            batcher,
            metrics,
            limits,
        }
    }

    pub fn activation(&self) -> ScoreActivation {
        self.model.info().activation
    }

    pub fn shutdown(&self) {
        self.batcher.shutdown();
    }

    /// Encodes every pair off the runtime, cut to the input limit when `truncate`.
    async fn encode_pairs(
        &self,
        query: String,
        texts: Vec<String>,
        truncate: bool,
    ) -> Result<Vec<PairEncoding>, Error> {
        let model = self.model.clone();
        let max_len = truncate.then_some(self.limits.max_input_length);
        super::tokenize_off_runtime(&self.metrics, move || {
            texts
                .iter()
                .map(|t| model.tokenizer().encode_pair(&query, t, max_len))
                .collect::<Result<Vec<_>, _>>()
        })
        .await
    }

    /// Scores each text against the query: encodes, charges the tokens to `bill`, then runs
    /// the model.
    pub async fn rerank(&self, req: RerankRequest, bill: &mut Bill) -> Result<Reranked, Error> {
        if req.query.trim().is_empty() {
            return Err(Error::invalid("empty_input", "the query is empty"));
        }
        check_inputs(&req.texts, self.limits.max_batch_inputs)?;
        let arrival = self.batcher.announce();
        let pairs = self
            .encode_pairs(req.query, req.texts, req.truncate)
            .await?;
        check_lengths(
            pairs.iter().map(|p| p.ids.len()),
            self.limits.max_input_length,
            "the query with input",
        )?;
        let jobs = pairs
            .into_iter()
            .map(|pair| Job {
                tokens: pair.ids.len(),
                input: pair,
            })
            .collect();
        let (mut scores, tokens) = super::run_charged(&self.batcher, arrival, bill, jobs).await?;
        if !req.raw_scores {
            let activation = self.activation();
            scores.iter_mut().for_each(|s| *s = activation.apply(*s));
        }
        Ok(Reranked { scores, tokens })
    }
}
