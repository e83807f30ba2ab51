//! The UniNLU pipeline around [`crate::model::UniNluModel`]: schema parsing, prompt
//! construction, decoding and the traversal that ties them together, with the
//! limits a server needs. Synchronous and free of I/O.

pub mod decode;
pub mod limits;
pub mod pipeline;
pub mod presets;
pub mod prompts;
pub mod schema;
pub mod task;

pub use decode::ChainItem;
pub use limits::Limits;
pub use pipeline::{classification_labels, predict, Prediction, PromptJob, Traversal};
pub use presets::{PresetError, Presets};
pub use schema::{Schema, SchemaNode};
pub use task::task_of;

use crate::error::{Error, Kind};
use crate::model::ModelError;

/// Why a prediction request cannot be served.
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

/// Malformed input is `Invalid`, oversized text `TooLarge`, a schema too large to run
/// `TooComplex`, a model failure `Internal`; each with a stable machine-readable code.
impl From<PredictError> for Error {
    fn from(e: PredictError) -> Self {
        let (kind, code) = match &e {
            PredictError::InvalidSchema(_) => (Kind::Invalid, "invalid_schema"),
            PredictError::TextTooLong { .. } | PredictError::TooManyWindows { .. } => {
                (Kind::TooLarge, "text_too_long")
            }
            PredictError::SchemaTooDeep { .. } => (Kind::TooComplex, "schema_too_deep"),
            PredictError::TooManyKeys { .. } => (Kind::TooComplex, "schema_too_large"),
            PredictError::TooManyPrompts { .. } => (Kind::TooComplex, "too_many_prompts"),
            PredictError::Model(_) => (Kind::Internal, "model_error"),
        };
        Error::new(kind, code, e.to_string())
    }
}

/// Both are the client's mistake: a 400 that says what to send.
impl From<PresetError> for Error {
    fn from(e: PresetError) -> Self {
        let code = match &e {
            PresetError::Unknown(..) => "unknown_task_type",
            PresetError::NeedsSchema(_) => "schema_required",
        };
        Error::new(Kind::Invalid, code, e.to_string())
    }
}
