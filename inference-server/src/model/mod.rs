//! Model layer: model files (local folder or hub download), tokenizer, a CPU-oriented BERT /
//! XLM-RoBERTa encoder on candle, pooling, the sentence embedder (with bge-m3's sparse and
//! multi-vector heads), the cross-encoder (reranker) and the SiameseUniNLU model.

pub mod bert;
pub mod bge_m3;
pub mod cross_encoder;
pub mod download;
pub mod embedder;
pub mod files;
pub mod kernels;
pub mod pooling;
pub mod tokenizer;
pub mod uninlu;
pub mod windows;

pub use bert::Family;
pub use bge_m3::SparseWeights;
pub use cross_encoder::{CrossEncoder, CrossEncoderInfo, ScoreActivation};
pub use download::{download, download_archive, download_into, HubConfig, HubKind};
pub use embedder::{Embedder, EmbedderInfo, MultiEmbedding, Outputs};
pub use files::{resolve, ModelFiles};
pub use kernels::linear::Dtype;
pub use pooling::Pooling;
pub use tokenizer::{Encoding, PairEncoding, Tokenizer};
pub use uninlu::{Logits, TextStates, UniNluInfo, UniNluModel};

use std::path::PathBuf;

/// Everything that can go wrong while loading or running a model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The model folder lacks a file or holds one we cannot read.
    #[error("model folder {dir}: {message}")]
    Files { dir: PathBuf, message: String },
    /// The hub could not deliver the model.
    #[error("cannot download {repo} from {endpoint}: {message}")]
    Download {
        repo: String,
        endpoint: String,
        message: String,
    },
    /// The model argument is neither a folder nor a hub id.
    #[error("{0:?} is neither a model folder nor a hub id of the form owner/name")]
    BadSpec(String),
    /// `config.json` (or a tokenizer/pooling config) is not what the model needs.
    #[error("invalid model config: {0}")]
    Config(String),
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// A caller handed the model an input it cannot run (empty, too long, unknown ids).
    #[error("invalid model input: {0}")]
    Input(String),
    #[error("tensor computation failed: {0}")]
    Candle(#[from] candle_core::Error),
}

pub type Result<T, E = ModelError> = std::result::Result<T, E>;
