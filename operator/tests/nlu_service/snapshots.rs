//! YAML snapshots of the full child set of each representative NluService. A diff fails the
//! test; `UPDATE_SNAPSHOTS=1 cargo test -p nlu-operator --test nlu_service` rewrites them (then
//! review the diff).

use std::path::PathBuf;

use serde::Deserialize;

use nlu_operator::config::OperatorConfig;
use nlu_operator::nlu_service::build::{children, Children};

use crate::fixtures::cases;

/// The children as one multi-document YAML, in apply order.
pub fn render(c: &Children) -> String {
    let mut docs = vec![
        serde_yaml::to_string(&c.deployment).unwrap(),
        serde_yaml::to_string(&c.service).unwrap(),
        serde_yaml::to_string(&c.network_policy).unwrap(),
    ];
    docs.extend(c.ingress.iter().map(|o| serde_yaml::to_string(o).unwrap()));
    docs.extend(c.hpa.iter().map(|o| serde_yaml::to_string(o).unwrap()));
    docs.extend(c.pdb.iter().map(|o| serde_yaml::to_string(o).unwrap()));
    docs.join("---\n")
}

pub fn snapshot_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/snapshots")
        .join(format!("{name}.yaml"))
}

#[test]
fn child_sets_match_snapshots() {
    let update = std::env::var_os("UPDATE_SNAPSHOTS").is_some();
    let mut failures = Vec::new();
    for (name, svc) in cases() {
        let rendered = render(&children(&svc, &OperatorConfig::default()));
        let path = snapshot_path(name);
        if update {
            std::fs::write(&path, &rendered).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e} (run with UPDATE_SNAPSHOTS=1 to create it)",
                path.display()
            )
        });
        if expected != rendered {
            failures.push(format!(
                "--- {name}: expected {}\n{expected}\n--- got\n{rendered}",
                path.display()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "snapshots differ (UPDATE_SNAPSHOTS=1 to accept):\n{}",
        failures.join("\n")
    );
}

/// Each snapshot document parses back as its Kubernetes kind, so the YAML is what the API
/// server would receive, not only what our serializer writes.
#[test]
fn snapshots_parse_as_kubernetes_objects() {
    for (name, _) in cases() {
        let text = std::fs::read_to_string(snapshot_path(name)).unwrap();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let value = serde_yaml::Value::deserialize(doc).unwrap();
            let kind = value["kind"].as_str().unwrap_or_default().to_owned();
            let ok = match kind.as_str() {
                "Deployment" => {
                    serde_yaml::from_value::<k8s_openapi::api::apps::v1::Deployment>(value).is_ok()
                }
                "Service" => {
                    serde_yaml::from_value::<k8s_openapi::api::core::v1::Service>(value).is_ok()
                }
                "NetworkPolicy" => {
                    serde_yaml::from_value::<k8s_openapi::api::networking::v1::NetworkPolicy>(value)
                        .is_ok()
                }
                "Ingress" => {
                    serde_yaml::from_value::<k8s_openapi::api::networking::v1::Ingress>(value)
                        .is_ok()
                }
                "HorizontalPodAutoscaler" => serde_yaml::from_value::<
                    k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler,
                >(value)
                .is_ok(),
                "PodDisruptionBudget" => serde_yaml::from_value::<
                    k8s_openapi::api::policy::v1::PodDisruptionBudget,
                >(value)
                .is_ok(),
                _ => false,
            };
            assert!(ok, "{name}: document of kind {kind:?} does not parse");
        }
    }
}
