//! The CRDs against a real Kubernetes API server (`../shared/tools/crd-apiserver`: etcd and the
//! upstream apiextensions-apiserver, the code a cluster runs for custom resources). Everything
//! here is real: schema validation, CEL rules, pruning, the status subresource, printer columns,
//! `kubectl explain`. Without the tool the tests print SKIP (and fail under
//! `NLU_REQUIRE_APISERVER=1`).

#[path = "apiserver/common.rs"]
mod common;
#[path = "apiserver/kubectl.rs"]
mod kubectl;
#[path = "apiserver/samples.rs"]
mod samples;
#[path = "apiserver/storage.rs"]
mod storage;
#[path = "apiserver/validation.rs"]
mod validation;
