//! UniNLU requests: the traversal runs level by level; the text encoding and every level's
//! prompts go through the shared model thread, where requests take turns (fair scheduling).

use std::sync::Arc;
use std::time::Instant;

use serde_json::Value;

use crate::batching::{Batcher, Job, Settings, Worker};
use crate::cost::Bill;
use crate::error::Error;
use crate::metrics::Metrics;
use crate::model::{Logits, TextStates, UniNluModel};
use crate::model::windows::TextWindow;
use crate::uninlu::{Limits, PredictError, Prediction, PromptJob, Schema, Traversal};

/// Work for the model thread.
pub enum UniJob {
    /// Lower layers over one text's windows (once per request).
    Encode(Vec<TextWindow>),
    /// One prompt against a text's lower-layer states.
    Score {
        text: Arc<TextStates>,
        prompt: Vec<u32>,
    },
}

pub enum UniOut {
    States(Arc<TextStates>),
    Logits(Logits),
}

struct UniWorker(Arc<UniNluModel>);

/// A prompt's ids and its position in the batch.
type Indexed = (usize, Vec<u32>);

impl Worker for UniWorker {
    type Input = UniJob;
    type Output = UniOut;

    /// Encodings run one text at a time; all prompts of the batch (from any request) run in
    /// one forward, grouped by their text.
    fn run(&mut self, batch: Vec<UniJob>) -> anyhow::Result<Vec<UniOut>> {
        let mut outputs: Vec<Option<UniOut>> = batch.iter().map(|_| None).collect();
        let mut texts: Vec<(Arc<TextStates>, Vec<Indexed>)> = Vec::new();
        for (i, job) in batch.into_iter().enumerate() {
            match job {
                UniJob::Encode(windows) => {
                    outputs[i] = Some(UniOut::States(Arc::new(self.0.encode_text(&windows)?)))
                }
                UniJob::Score { text, prompt } => {
                    match texts.iter_mut().find(|(t, _)| Arc::ptr_eq(t, &text)) {
                        Some((_, prompts)) => prompts.push((i, prompt)),
                        None => texts.push((text, vec![(i, prompt)])),
                    }
                }
            }
        }
        let prompt_ids: Vec<Vec<Vec<u32>>> = texts
            .iter()
            .map(|(_, ps)| ps.iter().map(|(_, p)| p.clone()).collect())
            .collect();
        let jobs: Vec<(&TextStates, &[Vec<u32>])> = texts
            .iter()
            .zip(&prompt_ids)
            .map(|((t, _), ids)| (t.as_ref(), ids.as_slice()))
            .collect();
        let scored = if jobs.is_empty() {
            Vec::new()
        } else {
            self.0.score_many(&jobs)?
        };
        for ((_, prompts), logits) in texts.iter().zip(scored) {
            for ((i, _), l) in prompts.iter().zip(logits) {
                outputs[*i] = Some(UniOut::Logits(l));
            }
        }
        outputs
            .into_iter()
            .map(|o| o.ok_or_else(|| anyhow::anyhow!("the model returned too few logits")))
            .collect()
    }
}

pub struct UniNluEngine {
    model: Arc<UniNluModel>,
    batcher: Batcher<UniJob, UniOut>,
    metrics: Arc<Metrics>,
    limits: Limits,
}

/// A traversal and the prompts it asks for next, with their batch costs.
struct Step {
    traversal: Traversal,
    jobs: Vec<(PromptJob, usize)>,
}

impl Step {
    /// Token positions the next level runs.
    fn cost(&self) -> usize {
        self.jobs.iter().map(|(_, tokens)| tokens).sum()
    }
}

impl UniNluEngine {
    pub fn start(
        model: UniNluModel,
        settings: Settings,
        limits: Limits,
        metrics: Arc<Metrics>,
    ) -> Self {
        let model = Arc::new(model);
        let batcher = Batcher::start(UniWorker(model.clone()), settings, metrics.clone());
        UniNluEngine {
            model,
            batcher,
            metrics,
            limits,
        }
    }

    pub fn model(&self) -> &UniNluModel {
        &self.model
    }

    pub fn shutdown(&self) {
        self.batcher.shutdown();
    }

    /// A request's schema, checked against this server's depth and key limits.
    pub fn schema(&self, value: &Value) -> Result<Schema, Error> {
        Ok(Schema::parse(value, &self.limits)?)
    }

    /// Runs the traversal level by level; each level's work (the first with the text's
    /// encoding) is charged to `bill` before it runs.
    pub async fn predict(
        &self,
        text: String,
        schema: Schema,
        bill: &mut Bill,
    ) -> Result<Prediction, Error> {
        let arrival = self.batcher.announce();
        let started = Instant::now();
        let (model, limits) = (self.model.clone(), self.limits.clone());
        let traversal =
            blocking(move || Traversal::new(model.tokenizer(), &text, schema, &limits)).await?;
        let mut step = self.step(traversal, None).await?;
        self.metrics
            .tokenize_seconds
            .observe(started.elapsed().as_secs_f64());

        let windows = step.traversal.text_windows().to_vec();
        let tokens = windows.len() * windows.first().map_or(0, |w| w.ids.len());
        let first = tokens + step.cost();
        let mut request = self.batcher.admit(bill.tenant_key(), first)?;
        bill.charge(first).await?;
        let encoded = arrival
            .run_all(
                &request,
                vec![Job {
                    input: UniJob::Encode(windows),
                    tokens,
                }],
            )
            .await?;
        let Some(UniOut::States(states)) = encoded.into_iter().next() else {
            return Err(Error::internal(
                "the model thread answered an encoding with logits",
            ));
        };

        let mut arrival = self.batcher.announce();
        while !step.jobs.is_empty() {
            let jobs = step
                .jobs
                .into_iter()
                .map(|(job, tokens)| Job {
                    input: UniJob::Score {
                        text: states.clone(),
                        prompt: job.ids,
                    },
                    tokens,
                })
                .collect();
            let logits = arrival
                .run_all(&request, jobs)
                .await?
                .into_iter()
                .map(|out| match out {
                    UniOut::Logits(l) => Ok(l),
                    UniOut::States(_) => Err(Error::internal(
                        "the model thread answered a prompt with states",
                    )),
                })
                .collect::<Result<Vec<_>, _>>()?;
            arrival = self.batcher.announce();
            step = self.step(step.traversal, Some(logits)).await?;
            if !step.jobs.is_empty() {
                bill.charge(step.cost()).await?;
                request.grow(step.cost());
            }
        }
        drop(arrival);
        let prediction = step.traversal.finish();
        self.metrics
            .uninlu_prompts
            .observe(prediction.prompts as f64);
        Ok(prediction)
    }

    /// Feeds the last level's logits (decoding) and builds the next level's prompts
    /// (tokenizing), off the async runtime.
    async fn step(
        &self,
        mut traversal: Traversal,
        logits: Option<Vec<Logits>>,
    ) -> Result<Step, Error> {
        let model = self.model.clone();
        blocking(move || {
            if let Some(logits) = logits {
                traversal.accept(&logits)?;
            }
            let jobs = traversal.next_prompts(model.tokenizer())?;
            let jobs = jobs
                .into_iter()
                .map(|job| {
                    let cost = traversal.prompt_cost(&job);
                    (job, cost)
                })
                .collect();
            Ok(Step { traversal, jobs })
        })
        .await
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, PredictError> + Send + 'static,
) -> Result<T, Error> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::internal(format!("pipeline task failed: {e}")))?
        .map_err(Error::from)
}
