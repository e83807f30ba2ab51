//! nlu-server library: model loading, pipelines, batching, HTTP.

pub mod model;
pub mod uninlu;
