//! The loaded model behind the routes: loading, warm-up, and the request flows of each task
//! (validate -> tokenize off the runtime -> queue -> model thread -> answer).

pub mod embedding;
pub mod rerank;
pub mod uninlu;

use std::sync::Arc;

use anyhow::Context;
use serde::Serialize;

pub use embedding::{EmbedRequest, Embedded, EmbeddingEngine};
pub use rerank::{RerankEngine, RerankRequest, Reranked};
/// A token as `/tokenize` shows it (the model's type, spoken by the engine to the edge).
pub use crate::model::tokenizer::Token;
pub use uninlu::UniNluEngine;

use crate::batching::{Arrival, Batcher, Job, Settings};
use crate::cost::Bill;
use crate::error::Error;
use crate::metrics::Metrics;
use crate::model::kernels::linear::{kernel_path, runnable};
use crate::model::{
    self, CrossEncoder, Dtype, Embedder, HubConfig, Pooling, ScoreActivation, UniNluModel,
};
use crate::uninlu::Limits;
use nlu_crds::serve::Task;

/// What the engine needs to load and run a model; `config` makes it from the flags.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// A model folder or a hub id.
    pub model: String,
    pub hub: HubConfig,
    pub task: Task,
    pub dtype: Dtype,
    /// Embedding pooling; `None`: the model folder's.
    pub pooling: Option<Pooling>,
    /// Embeddings are L2-normalised unless a request says otherwise.
    pub normalize: bool,
    /// The name `/info` and `/v1/embeddings` report; `None`: the hub id or the folder's name.
    pub served_model_name: Option<String>,
    pub batching: Settings,
    /// Embedding: longest input in tokens; rerank: longest (query, text) pair; never above
    /// what the model allows.
    pub max_input_length: Option<usize>,
    /// Embedding and rerank: most inputs (texts) per request.
    pub max_batch_inputs: usize,
    pub uninlu: Limits,
}

/// The dtype the model will run in ([`runnable`]), logging a fallback.
fn runnable_logged(requested: Dtype) -> Dtype {
    let (dtype, fallback) = runnable(requested);
    if let Some(why) = fallback {
        tracing::warn!("{why}");
    }
    dtype
}

/// What GET /info reports.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ModelInfo {
    pub model: String,
    /// `embedding`, `uninlu` or `rerank`.
    #[schema(value_type = String)]
    pub task: &'static str,
    /// Embedding size (hidden size of the encoder).
    pub dims: usize,
    /// Embedding task: longest input in tokens ([CLS]/[SEP] included); rerank task: longest
    /// (query, text) pair in tokens, special tokens included.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_input_length: Option<usize>,
    /// UniNLU task: longest text in characters.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_text_chars: Option<usize>,
    /// Embedding task only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pooling: Option<Pooling>,
    /// Embedding task only: whether vectors are L2-normalised unless a request says otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub normalize: Option<bool>,
    /// Embedding task only: whether the model has bge-m3's sparse head (`/embed_sparse`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sparse: Option<bool>,
    /// Embedding task, models with bge-m3's multi-vector head only: the size of each
    /// `/embed_colbert` vector.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub colbert_dims: Option<usize>,
    /// Rerank task only: what turns a logit into a score (`sigmoid` or `identity`), applied
    /// unless a request asks for raw scores.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub activation: Option<ScoreActivation>,
    /// Number format of the weights: `f32`, `bf16` or `int8`.
    #[schema(value_type = String)]
    pub dtype: Dtype,
    /// The matmul kernel of the linear layers on this CPU: `avx512`, `avx2` (AVX2 + FMA, no
    /// AVX-512; or int8 on AVX2), `avx512-vnni` or `avx-vnni` (int8), `amx` (bf16) or `gemm`
    /// (CPUs with neither).
    #[schema(value_type = String)]
    pub kernel: &'static str,
}

pub enum Engine {
    Embedding {
        engine: EmbeddingEngine,
        info: ModelInfo,
    },
    UniNlu {
        engine: UniNluEngine,
        info: ModelInfo,
    },
    Rerank {
        engine: RerankEngine,
        info: ModelInfo,
    },
}

impl Engine {
    /// Resolves the model (folder or hub id), loads it and starts its model thread. Blocking.
    pub fn load(config: &EngineConfig, metrics: Arc<Metrics>) -> anyhow::Result<Self> {
        let files = model::resolve(&config.model, &config.hub)
            .with_context(|| format!("cannot load model {}", config.model))?;
        let settings = config.batching.clone();
        let dtype = runnable_logged(config.dtype);
        match config.task {
            Task::Embedding => {
                let embedder = Embedder::load(&files, config.pooling, dtype)?;
                let model_info = embedder.info().clone();
                let model_max =
                    sentence_max_seq_length(&files.dir).unwrap_or(model_info.max_positions);
                let max_input_length = cap(
                    config.max_input_length,
                    model_max.min(model_info.max_positions),
                );
                let info = ModelInfo {
                    model: served_name(config, &files),
                    task: Task::Embedding.as_str(),
                    dims: model_info.dims,
                    max_input_length: Some(max_input_length),
                    max_text_chars: None,
                    pooling: Some(model_info.pooling),
                    normalize: Some(config.normalize),
                    sparse: Some(embedder.has_sparse()),
                    colbert_dims: embedder.colbert_dims(),
                    activation: None,
                    dtype,
                    kernel: kernel_path(dtype),
                };
                let limits = embedding::EmbedLimits {
                    max_input_length,
                    max_batch_inputs: config.max_batch_inputs,
                };
                let engine =
                    EmbeddingEngine::start(embedder, settings, limits, config.normalize, metrics);
                Ok(Engine::Embedding { engine, info })
            }
            Task::Uninlu => {
                let model = UniNluModel::load(&files, dtype)?;
                let limits = config.uninlu.clone();
                let info = ModelInfo {
                    model: served_name(config, &files),
                    task: Task::Uninlu.as_str(),
                    dims: model.info().hidden_size,
                    max_input_length: None,
                    max_text_chars: Some(limits.max_text_chars),
                    pooling: None,
                    normalize: None,
                    sparse: None,
                    colbert_dims: None,
                    activation: None,
                    dtype,
                    kernel: kernel_path(dtype),
                };
                Ok(Engine::UniNlu {
                    engine: UniNluEngine::start(model, settings, limits, metrics),
                    info,
                })
            }
            Task::Rerank => {
                let model = CrossEncoder::load(&files, dtype)?;
                let model_info = model.info().clone();
                let max_input_length = cap(config.max_input_length, model_info.max_positions);
                let info = ModelInfo {
                    model: served_name(config, &files),
                    task: Task::Rerank.as_str(),
                    dims: model_info.hidden_size,
                    max_input_length: Some(max_input_length),
                    max_text_chars: None,
                    pooling: None,
                    normalize: None,
                    sparse: None,
                    colbert_dims: None,
                    activation: Some(model_info.activation),
                    dtype,
                    kernel: kernel_path(dtype),
                };
                let limits = embedding::EmbedLimits {
                    max_input_length,
                    max_batch_inputs: config.max_batch_inputs,
                };
                Ok(Engine::Rerank {
                    engine: RerankEngine::start(model, settings, limits, metrics),
                    info,
                })
            }
        }
    }

    pub fn info(&self) -> &ModelInfo {
        match self {
            Engine::Embedding { info, .. }
            | Engine::UniNlu { info, .. }
            | Engine::Rerank { info, .. } => info,
        }
    }

    pub fn embedding(&self) -> Option<&EmbeddingEngine> {
        match self {
            Engine::Embedding { engine, .. } => Some(engine),
            _ => None,
        }
    }

    pub fn uninlu(&self) -> Option<&UniNluEngine> {
        match self {
            Engine::UniNlu { engine, .. } => Some(engine),
            _ => None,
        }
    }

    pub fn rerank(&self) -> Option<&RerankEngine> {
        match self {
            Engine::Rerank { engine, .. } => Some(engine),
            _ => None,
        }
    }

    /// One real request through the whole path (tokenizer, queue, model thread), so the first
    /// client does not pay for lazy initialisation. Blocking.
    pub fn warm_up(&self) -> anyhow::Result<()> {
        let run = async {
            let unmetered = &mut Bill::new(None, u64::MAX);
            match self {
                Engine::Embedding { engine, .. } => engine
                    .embed(
                        EmbedRequest {
                            texts: vec!["warm up".into()],
                            truncate: true,
                            normalize: true,
                            dimensions: None,
                        },
                        unmetered,
                    )
                    .await
                    .map(drop),
                Engine::UniNlu { engine, .. } => {
                    let schema = engine.schema(&serde_json::json!({ "warm up": null }))?;
                    engine
                        .predict("warm up".into(), schema, unmetered)
                        .await
                        .map(drop)
                }
                Engine::Rerank { engine, .. } => engine
                    .rerank(
                        RerankRequest {
                            query: "warm up".into(),
                            texts: vec!["warm up".into()],
                            truncate: true,
                            raw_scores: false,
                        },
                        unmetered,
                    )
                    .await
                    .map(drop),
            }
        };
        futures::executor::block_on(run)
            .map_err(|e| anyhow::anyhow!("warm-up failed: {}", e.message))
    }

    /// Finishes the queued work and stops the model thread.
    pub fn shutdown(&self) {
        match self {
            Engine::Embedding { engine, .. } => engine.shutdown(),
            Engine::UniNlu { engine, .. } => engine.shutdown(),
            Engine::Rerank { engine, .. } => engine.shutdown(),
        }
    }
}

/// Runs `tokenize` on the blocking pool (the tokio workers never compute) and times it; a
/// model error there is the client's input error.
async fn tokenize_off_runtime<T: Send + 'static>(
    metrics: &Metrics,
    tokenize: impl FnOnce() -> model::Result<T> + Send + 'static,
) -> Result<T, Error> {
    let started = std::time::Instant::now();
    let out = tokio::task::spawn_blocking(tokenize)
        .await
        .map_err(|e| Error::internal(format!("tokenizer task failed: {e}")))?
        .map_err(|e| Error::invalid("invalid_input", e.to_string()))?;
    metrics
        .tokenize_seconds
        .observe(started.elapsed().as_secs_f64());
    Ok(out)
}

/// Admits `jobs` as one request, charges their tokens to `bill` before they run, runs them
/// and returns their outputs in order with the tokens charged.
async fn run_charged<I: Send + 'static, O: Send + 'static>(
    batcher: &Batcher<I, O>,
    arrival: Arrival<'_, I, O>,
    bill: &mut Bill,
    jobs: Vec<Job<I>>,
) -> Result<(Vec<O>, usize), Error> {
    let tokens = jobs.iter().map(|job| job.tokens).sum();
    let request = batcher.admit(bill.tenant_key(), tokens)?;
    bill.charge(tokens).await?;
    Ok((arrival.run_all(&request, jobs).await?, tokens))
}

/// The length sentence-transformers models were trained and are evaluated at
/// (`sentence_bert_config.json` `max_seq_length`), when the folder says.
fn sentence_max_seq_length(dir: &std::path::Path) -> Option<usize> {
    let text = std::fs::read_to_string(dir.join("sentence_bert_config.json")).ok()?;
    let config: serde_json::Value = serde_json::from_str(&text).ok()?;
    config.get("max_seq_length")?.as_u64().map(|n| n as usize)
}

/// `--served-model-name`, else the hub id as given, else the folder's name.
fn served_name(config: &EngineConfig, files: &model::ModelFiles) -> String {
    match &config.served_model_name {
        Some(name) => name.clone(),
        None if model::download::is_hub_id(&config.model)
            && !std::path::Path::new(&config.model).exists() =>
        {
            config.model.clone()
        }
        None => files.name(),
    }
}

/// `--max-input-length`, never beyond what the model allows.
fn cap(requested: Option<usize>, model_max: usize) -> usize {
    requested.map_or(model_max, |r| r.min(model_max))
}
