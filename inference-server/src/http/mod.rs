//! HTTP: routes, request and response shapes, errors, access logs.

pub mod access_log;
pub mod deadline;
pub mod embeddings;
pub mod errors;
pub mod handlers;
pub mod health;
pub mod models;
pub mod openapi;
pub mod path_prefix;
pub mod playground;
pub mod predict;
pub mod rerank;
pub mod request_cost;
pub mod router;
pub mod tokens;

pub use router::{metrics_router, router, AppState};
