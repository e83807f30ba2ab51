//! nlu-server library: model loading, pipelines, batching, HTTP.

pub mod auth;
pub mod batching;
pub mod cli_auth;
pub mod cli_download;
pub mod config;
pub mod cost;
pub mod duration_flag;
pub mod engine;
pub mod error;
pub mod http;
pub mod listener;
pub mod metrics;
pub mod model;
pub mod reloading;
pub mod server;
pub mod tls;
pub mod uninlu;
