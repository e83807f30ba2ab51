//! The operator's controllers against a real Kubernetes API server, driven by watches.
//!
//! Real here: the API server for NluService and Tenant (`../shared/tools/crd-apiserver`: etcd and
//! the upstream apiextensions-apiserver, so storage, validation, the status subresource,
//! generations, finalizers, deletion and watches behave as in a cluster), kube-runtime's
//! `Controller` with the operator's own `run` functions, and `redis-server`.
//! Not real: the core kinds (Secrets, ConfigMaps, Deployments, Services, Events, ...) live in
//! nlu-testkit's fake API behind the same URL, because this server cannot serve them; and
//! nothing runs Pods, so tests write a Deployment's status as the kubelet would.
//! Without the tool or redis-server the tests print SKIP (and fail under `NLU_REQUIRE_*=1`).

#[path = "apiserver/harness.rs"]
mod harness;
#[path = "apiserver/nlu_service.rs"]
mod nlu_service;
#[path = "apiserver/redis_acl.rs"]
mod redis_acl;
#[path = "apiserver/tenant.rs"]
mod tenant;
#[path = "apiserver/scale.rs"]
mod scale;
