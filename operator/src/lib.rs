//! nlu-operator: the NluService and Tenant controllers, their pure builders, and the process
//! pieces they share (config, context, controller kit, server-side apply, metrics, admin server,
//! leader election).

pub mod admin;
pub mod apply;
pub mod config;
pub mod context;
pub mod controller_kit;
pub mod leader;
pub mod metrics;
pub mod nlu_service;
pub mod ownership;
pub mod tenant;

