//! nlu-server library: model loading, pipelines, batching, HTTP.

pub mod batching;
pub mod config;
pub mod engine;
pub mod http;
pub mod metrics;
pub mod model;
pub mod server;
pub mod uninlu;
