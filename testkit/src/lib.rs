//! Harness of the real API server test tier (see `docs/testing.md`).
//!
//! - [`api_server`]: one real Kubernetes API server for custom resources per test process
//!   (etcd + the upstream apiextensions-apiserver built by `../shared/tools/crd-apiserver`), with
//!   the CRDs from `manifests/crds/` installed and Established. Stopped when the process ends.
//! - [`ClusterProxy`]: what the controllers talk to. It forwards the `nlu.dev` resources and
//!   discovery to that real server and serves the core kinds (which the real server cannot) from
//!   the fake API's store; it records every request so tests can count writes.
//! - [`fake_api`]: the one in-memory fake of the Kubernetes API (its semantics listed there),
//!   behind the proxy above and, as [`FakeApi`], behind a `kube::Client` for the mocked tiers
//!   (feature `fake-api`, which `apiserver` includes).
//! - [`RedisServer`]: a real `redis-server` on a free loopback port, killed on drop.
//! - [`RedisCluster`]: a real Redis Cluster of three masters and three replicas, whose masters
//!   tests kill to see a replica take over.
//! - [`ProcessCluster`]: the whole product as processes: the API server and proxy above, a
//!   kubelet running every Deployment's pods as real processes, and a loopback model hub.
//! - [`walls`]: reads ARCHITECTURE.md's "Walls" tables and checks a crate's imports against them.
//!
//! When the API server tool is not built, [`api_server`] prints a visible `SKIP` line and returns
//! `None`; with `NLU_REQUIRE_APISERVER=1` (CI) it panics instead, so the tier cannot pass unseen.

#[cfg(feature = "apiserver")]
mod apiserver;
#[cfg(feature = "apiserver")]
mod cluster;
#[cfg(feature = "fake-api")]
pub mod fake_api;
#[cfg(feature = "apiserver")]
mod oidc_issuer;
#[cfg(feature = "apiserver")]
mod proxy;
mod redis;
mod redis_cluster;
mod skip;
pub mod walls;
mod watchdog;

#[cfg(feature = "apiserver")]
pub use apiserver::{api_server, ApiServer};
#[cfg(feature = "apiserver")]
pub use cluster::{collect_garbage, workspace_binary, ClusterOptions, PodInfo, ProcessCluster};
#[cfg(feature = "fake-api")]
pub use fake_api::FakeApi;
#[cfg(feature = "apiserver")]
pub use oidc_issuer::OidcIssuer;
#[cfg(feature = "apiserver")]
pub use proxy::{kubeconfig_text, Call, ClusterProxy, RecordedRequest};
pub use redis::RedisServer;
pub use redis_cluster::RedisCluster;
pub use watchdog::kill_when_this_process_ends;
