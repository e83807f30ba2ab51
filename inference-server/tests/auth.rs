//! Multi-tenant security over real HTTP(S): real `redis-server`s (one, TLS-only, or a cluster)
//! started here, real TLS with certificates made at test time, tokens minted with the contract
//! crate.

#[path = "auth/audit.rs"]
mod audit;
#[path = "server/connections.rs"]
mod connections;
#[path = "auth/costs.rs"]
mod costs;
#[path = "auth/federated.rs"]
mod federated;
#[path = "auth/harness.rs"]
mod harness;
#[path = "auth/in_flight.rs"]
mod in_flight;
#[path = "auth/overhead.rs"]
mod overhead;
#[path = "auth/quota.rs"]
mod quota;
#[path = "auth/redis_acl.rs"]
mod redis_acl;
#[path = "auth/redis_cluster.rs"]
mod redis_cluster;
#[path = "auth/redis_failure.rs"]
mod redis_failure;
#[path = "auth/redis_tls.rs"]
mod redis_tls;
#[path = "auth/task_scopes.rs"]
mod task_scopes;
#[path = "auth/tls.rs"]
mod tls;
#[path = "auth/tokens.rs"]
mod tokens;
