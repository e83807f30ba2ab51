//! The PodDisruptionBudget, only when at least two pods run: on one pod any budget would
//! block node drains.

use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use nlu_crds::NluService;
use serde_json::json;

use super::labels::{child_meta, selector};
use super::typed;

/// The fewest pods `svc` runs: the autoscaler's minimum, else the fixed count (default 1).
pub fn min_replicas(svc: &NluService) -> i32 {
    match &svc.spec.autoscaling {
        Some(a) => a.min_replicas,
        None => svc.spec.replicas.unwrap_or(1),
    }
}

/// The PDB of `svc` (at most one pod evicted at a time), or `None` below two pods.
pub fn pdb(svc: &NluService) -> Option<PodDisruptionBudget> {
    (min_replicas(svc) > 1).then(|| PodDisruptionBudget {
        metadata: child_meta(svc),
        spec: Some(typed(
            json!({"maxUnavailable": 1, "selector": {"matchLabels": selector(svc)}}),
        )),
        status: None,
    })
}
