//! nlu-server library: model loading, pipelines, batching, HTTP.
