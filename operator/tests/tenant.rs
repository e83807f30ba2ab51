//! Tenant controller against a real Redis and a mocked Kubernetes API (see `tenant/harness.rs`
//! for what is real and what is not). One test binary; every test starts its own Redis.

#[path = "tenant/harness.rs"]
mod harness;

#[path = "tenant/env.rs"]
mod env;

#[path = "tenant/flows.rs"]
mod flows;

#[path = "tenant/redis_cluster.rs"]
mod redis_cluster;

#[path = "tenant/redis_tls.rs"]
mod redis_tls;
