//! The NetworkPolicy of the server pods: in, the ingress controller, same-namespace clients
//! and the monitoring namespace may reach the HTTP port; out, DNS, Redis when auth is on (only
//! the operator's Redis pods when the service uses that Redis and the operator knows where they
//! run), and the web when an init container downloads the model.

use k8s_openapi::api::networking::v1::NetworkPolicy;
use nlu_crds::nlu_service::AuthMode;
use nlu_crds::NluService;
use serde_json::{json, Value};

use super::deployment::{auth_mode, download_args, HTTP_PORT, METRICS_PORT};
use super::labels::{child_meta, selector};
use super::typed;
use crate::config::OperatorConfig;
use crate::tenant::redis_acl::uses_operator_redis;

fn namespace(name: &str) -> Value {
    json!({"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": name}}})
}

fn tcp(port: i32) -> Value {
    json!({"protocol": "TCP", "port": port})
}

/// The pods of the operator's Redis, when `svc` reads that Redis (its namespace's credential)
/// and the operator was told where they run (`--redis-namespace`, `--redis-pod-labels`).
fn operator_redis_pods(svc: &NluService, cfg: &OperatorConfig) -> Option<Value> {
    let ns = cfg.redis_namespace.as_deref()?;
    if cfg.redis_url.is_none() || cfg.redis_pod_labels.is_empty() || !uses_operator_redis(svc) {
        return None;
    }
    let labels: serde_json::Map<String, Value> = cfg
        .redis_pod_labels
        .iter()
        .map(|(k, v)| (k.clone(), json!(v)))
        .collect();
    let mut peer = namespace(ns);
    peer["podSelector"] = json!({"matchLabels": labels});
    Some(peer)
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
        let ports = json!([tcp(i32::from(cfg.redis_port))]);
        egress.push(match operator_redis_pods(svc, cfg) {
            Some(pods) => json!({"to": [pods], "ports": ports}),
            None => json!({"ports": ports}),
        });
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
