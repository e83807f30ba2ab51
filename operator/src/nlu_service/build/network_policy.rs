//! The NetworkPolicy of the server pods: in, the ingress controller, same-namespace clients
//! and the monitoring namespace may reach the HTTP port; out, DNS, Redis when auth is on, and
//! the web when an init container downloads the model.

use k8s_openapi::api::networking::v1::NetworkPolicy;
use nlu_crds::nlu_service::AuthMode;
use nlu_crds::NluService;
use serde_json::{json, Value};

use super::deployment::{auth_mode, download_args, HTTP_PORT, METRICS_PORT};
use super::labels::{child_meta, selector};
use super::typed;
use crate::config::OperatorConfig;

fn namespace(name: &str) -> Value {
    json!({"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": name}}})
}

fn tcp(port: i32) -> Value {
    json!({"protocol": "TCP", "port": port})
}

/// The NetworkPolicy of `svc`.
pub fn network_policy(svc: &NluService, cfg: &OperatorConfig) -> NetworkPolicy {
    let http = json!([tcp(HTTP_PORT)]);
    let ingress = json!([
        {"from": [namespace(&cfg.ingress_namespace), {"podSelector": {}}], "ports": http},
        // The monitoring namespace reaches /metrics on its own port, not the API.
        {"from": [namespace(&cfg.monitoring_namespace)], "ports": [tcp(METRICS_PORT)]},
    ]);
    let mut egress = vec![json!({
        "to": [namespace("kube-system")],
        "ports": [{"protocol": "UDP", "port": 53}, tcp(53)],
    })];
    if auth_mode(&svc.spec) == AuthMode::Jwt {
        egress.push(json!({"ports": [tcp(i32::from(cfg.redis_port))]}));
    }
    if download_args(&svc.spec.model.source).is_some() {
        egress.push(json!({"ports": [tcp(443), tcp(80)]}));
    }
    NetworkPolicy {
        metadata: child_meta(svc),
        spec: Some(typed(json!({
            "podSelector": {"matchLabels": selector(svc)},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": ingress,
            "egress": egress,
        }))),
    }
}
