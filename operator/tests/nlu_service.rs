//! NluService controller without a cluster: pure builders (asserts and YAML snapshots of the
//! full child set), reconciles and leader election against nlu-testkit's recording fake API
//! (`nlu_testkit::FakeApi`).

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
