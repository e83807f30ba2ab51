//! The Ingress when `spec.ingress` is set, with cert-manager doing TLS: the operator annotates
//! and names the Secret, cert-manager issues into it; the operator never writes the Secret.

use std::collections::BTreeMap;

use k8s_openapi::api::networking::v1::Ingress;
use kube::ResourceExt;
use nlu_crds::NluService;
use serde_json::json;

use super::deployment::strip_nulls;
use super::labels::child_meta;
use super::service::HTTP_SERVICE_PORT;
use super::typed;

/// Path routed to the service when the spec names none.
pub const DEFAULT_PATH: &str = "/";

/// The Ingress of `svc`, or `None` when it is not exposed.
pub fn ingress(svc: &NluService) -> Option<Ingress> {
    let spec = svc.spec.ingress.as_ref()?;
    let mut meta = child_meta(svc);
    let tls = spec.tls.as_ref();
    let annotations: BTreeMap<String, String> = tls
        .and_then(|t| {
            t.cluster_issuer
                .as_ref()
                .map(|i| ("cert-manager.io/cluster-issuer".to_owned(), i.clone()))
                .or_else(|| {
                    t.issuer
                        .as_ref()
                        .map(|i| ("cert-manager.io/issuer".to_owned(), i.clone()))
                })
        })
        .into_iter()
        .collect();
    if !annotations.is_empty() {
        meta.annotations = Some(annotations);
    }
    let mut body = json!({
        "ingressClassName": spec.class_name,
        "rules": [{
            "host": spec.host,
            "http": {"paths": [{
                "path": spec.path.as_deref().unwrap_or(DEFAULT_PATH),
                "pathType": "Prefix",
                "backend": {"service": {"name": svc.name_any(), "port": {"number": HTTP_SERVICE_PORT}}},
            }]},
        }],
        "tls": tls.map(|t| json!([{
            "hosts": [spec.host],
            "secretName": t.secret_name.clone().unwrap_or_else(|| format!("{}-tls", svc.name_any())),
        }])),
    });
    strip_nulls(&mut body);
    Some(Ingress {
        metadata: meta,
        spec: Some(typed(body)),
        status: None,
    })
}
