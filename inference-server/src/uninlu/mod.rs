//! The UniNLU pipeline around [`crate::model::UniNluModel`]: schema parsing, prompt
//! construction, sliding windows, decoding and the traversal that ties them together, with the
//! limits a server needs. Synchronous and free of I/O.

pub mod decode;
pub mod limits;
pub mod pipeline;
pub mod prompts;
pub mod schema;
pub mod windows;

pub use decode::ChainItem;
pub use limits::Limits;
pub use pipeline::{classification_labels, predict, Prediction, PromptJob, Traversal};
pub use schema::{Schema, SchemaNode};

use crate::model::ModelError;

/// Why a prediction request cannot be served. [`PredictError::status`] gives the HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum PredictError {
    /// Malformed schema (not an object, `{}` sub-schema, non-null non-object value).
    #[error("invalid schema: {0}")]
    InvalidSchema(String),
    #[error("text has {chars} characters; the limit is {limit}")]
    TextTooLong { chars: usize, limit: usize },
    #[error("text needs {windows} windows of 384 tokens; the limit is {limit}")]
    TooManyWindows { windows: usize, limit: usize },
    #[error("schema is {depth} levels deep; the limit is {limit}")]
    SchemaTooDeep { depth: usize, limit: usize },
    #[error("schema has {keys} keys; the limit is {limit}")]
    TooManyKeys { keys: usize, limit: usize },
    /// Raised while the traversal expands, before the extra prompts run.
    #[error("the schema expands to more than {limit} prompts for this text")]
    TooManyPrompts { limit: usize },
    #[error(transparent)]
    Model(#[from] ModelError),
}

impl PredictError {
    /// 400 for malformed input, 413 for oversized text, 422 for a schema too large to run,
    /// 500 for model failures.
    pub fn status(&self) -> u16 {
        match self {
            Self::InvalidSchema(_) => 400,
            Self::TextTooLong { .. } | Self::TooManyWindows { .. } => 413,
            Self::SchemaTooDeep { .. } | Self::TooManyKeys { .. } | Self::TooManyPrompts { .. } => {
                422
            }
            Self::Model(_) => 500,
        }
    }

    /// Stable machine-readable code for `{"error": {"code", ...}}`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidSchema(_) => "invalid_schema",
            Self::TextTooLong { .. } => "text_too_long",
            Self::TooManyWindows { .. } => "text_too_long",
            Self::SchemaTooDeep { .. } => "schema_too_deep",
            Self::TooManyKeys { .. } => "schema_too_large",
            Self::TooManyPrompts { .. } => "too_many_prompts",
            Self::Model(_) => "model_error",
        }
    }
}
