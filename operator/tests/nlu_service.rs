//! NluService controller without a cluster: pure builders (asserts and YAML snapshots of the
//! full child set), reconciles and leader election against the recording API stand-in in
//! `nlu_service/mock.rs`.

#[path = "nlu_service/mock.rs"]
pub mod mock;

#[path = "nlu_service/fixtures.rs"]
pub mod fixtures;

#[path = "nlu_service/builders.rs"]
mod builders;

#[path = "nlu_service/snapshots.rs"]
mod snapshots;

#[path = "nlu_service/reconcile.rs"]
mod reconcile;

#[path = "nlu_service/leader.rs"]
mod leader;
