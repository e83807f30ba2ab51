//! The HorizontalPodAutoscaler (autoscaling/v2) when `spec.autoscaling` is set.

use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use kube::ResourceExt;
use nlu_crds::serve::{exported_metric, IN_FLIGHT_REQUESTS};
use nlu_crds::NluService;
use serde_json::json;

use super::labels::child_meta;
use super::typed;

/// CPU utilisation target when the spec names none, in percent of the request.
pub const DEFAULT_CPU_TARGET: i32 = 70;
/// Scale down only after load stayed low this long: model pods are slow to come back.
pub const SCALE_DOWN_STABILIZATION_SECONDS: i32 = 300;

/// The HPA of `svc`, or `None` without autoscaling.
pub fn hpa(svc: &NluService) -> Option<HorizontalPodAutoscaler> {
    let a = svc.spec.autoscaling.as_ref()?;
    let mut metrics = vec![json!({
        "type": "Resource",
        "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": a.target_cpu_utilization_percentage.unwrap_or(DEFAULT_CPU_TARGET)}},
    })];
    // The Pods metric is the server's in-flight gauge, as a metrics adapter serves it.
    if let Some(inflight) = a.target_inflight_requests {
        metrics.push(json!({
            "type": "Pods",
            "pods": {"metric": {"name": exported_metric(IN_FLIGHT_REQUESTS)}, "target": {"type": "AverageValue", "averageValue": inflight.to_string()}},
        }));
    }
    Some(HorizontalPodAutoscaler {
        metadata: child_meta(svc),
        spec: Some(typed(json!({
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": svc.name_any()},
            "minReplicas": a.min_replicas,
            "maxReplicas": a.max_replicas,
            "metrics": metrics,
            "behavior": {"scaleDown": {"stabilizationWindowSeconds": SCALE_DOWN_STABILIZATION_SECONDS}},
        }))),
        status: None,
    })
}
