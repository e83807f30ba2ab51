//! The ClusterIP Service in front of the pods: `http` for clients, `metrics` for scrapers.

use k8s_openapi::api::core::v1::Service;
use nlu_crds::NluService;
use serde_json::json;

use super::labels::{child_meta, selector};
use super::typed;

/// Port clients call (`http://<name>.<namespace>.svc`).
pub const HTTP_SERVICE_PORT: i32 = 80;
/// Port scrapers call; it targets the server's private metrics listener.
pub const METRICS_SERVICE_PORT: i32 = 9090;

/// The Service of `svc`.
pub fn service(svc: &NluService) -> Service {
    Service {
        metadata: child_meta(svc),
        spec: Some(typed(json!({
            "type": "ClusterIP",
            "selector": selector(svc),
            "ports": [
                {"name": "http", "port": HTTP_SERVICE_PORT, "targetPort": "http", "protocol": "TCP"},
                {"name": "metrics", "port": METRICS_SERVICE_PORT, "targetPort": "metrics", "protocol": "TCP"},
            ],
        }))),
        status: None,
    }
}
