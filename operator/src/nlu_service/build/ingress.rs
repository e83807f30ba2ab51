//! The Ingress when `spec.ingress` is set, with cert-manager doing TLS: the operator annotates
//! and names the Secret, cert-manager issues into it; the operator never writes the Secret.
//! It publishes only the routes the route table marks public (the model routes, and the
//! playground when it is on), each as an exact path (a prefix for a route with a parameter):
//! probes, `/metrics` and any future route stay inside the cluster.

use std::collections::BTreeMap;

use k8s_openapi::api::networking::v1::Ingress;
use kube::ResourceExt;
use nlu_crds::routes::Route;
use nlu_crds::serve::Task;
use nlu_crds::NluService;
use serde_json::json;

use super::deployment::{playground_on, strip_nulls};
use super::labels::child_meta;
use super::service::HTTP_SERVICE_PORT;
use super::typed;

/// Path prefix of the service when the spec names none.
pub const DEFAULT_PATH: &str = "/";

/// The paths the Ingress of a server of `task` routes, with their `pathType`: `prefix` + each
/// public route (`Exact`, or `Prefix` up to a route's first parameter), and the bare prefix (which
/// the server redirects to `prefix/`) when the playground is on.
pub fn public_paths(prefix: &str, task: Task, playground: bool) -> Vec<(String, &'static str)> {
    let prefix = prefix.trim_end_matches('/');
    let bare = (playground && !prefix.is_empty()).then(|| (prefix.to_owned(), "Exact"));
    bare.into_iter()
        .chain(
            Route::ALL
                .into_iter()
                .filter(|r| r.is_public(task, playground))
                .map(|r| {
                    let (path, exact) = r.ingress_path();
                    (
                        format!("{prefix}{path}"),
                        if exact { "Exact" } else { "Prefix" },
                    )
                }),
        )
        .collect()
}

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
    let backend =
        json!({"service": {"name": svc.name_any(), "port": {"number": HTTP_SERVICE_PORT}}});
    let paths: Vec<_> = public_paths(
        spec.path.as_deref().unwrap_or(DEFAULT_PATH),
        svc.spec.model.task,
        playground_on(&svc.spec),
    )
    .into_iter()
    .map(|(path, path_type)| json!({"path": path, "pathType": path_type, "backend": backend}))
    .collect();
    let mut body = json!({
        "ingressClassName": spec.class_name,
        "rules": [{"host": spec.host, "http": {"paths": paths}}],
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_routes_and_the_playground_are_published() {
        let paths = |prefix, task, playground| -> Vec<String> {
            public_paths(prefix, task, playground)
                .into_iter()
                .map(|(path, kind)| format!("{kind} {path}"))
                .collect()
        };
        assert_eq!(
            paths("/", Task::Embedding, false),
            [
                "Exact /v1/embeddings",
                "Exact /embed",
                "Exact /embed_sparse",
                "Exact /embed_colbert",
                "Exact /similarity",
                "Exact /tokenize",
                "Exact /decode",
                "Exact /v1/models",
                "Prefix /v1/models",
                "Exact /health"
            ]
        );
        assert_eq!(
            paths("/", Task::Rerank, false),
            [
                "Exact /rerank",
                "Exact /v1/rerank",
                "Exact /v1/models",
                "Prefix /v1/models",
                "Exact /health"
            ]
        );
        let prefixed = paths("/uninlu/", Task::Uninlu, true);
        assert_eq!(prefixed[0], "Exact /uninlu");
        for path in [
            "Exact /uninlu/",
            "Exact /uninlu/api/predict",
            "Exact /uninlu/info",
            "Exact /uninlu/playground/playground.js",
            "Prefix /uninlu/v1/models",
            "Exact /uninlu/predict",
            "Exact /uninlu/health",
        ] {
            assert!(prefixed.iter().any(|p| p == path), "{path}: {prefixed:?}");
        }
        assert!(!prefixed
            .iter()
            .any(|p| p.ends_with("/metrics") || p.ends_with("/healthz")));
        assert!(!prefixed.iter().any(|p| p.ends_with("/embed")));
        assert!(!prefixed.iter().any(|p| p.ends_with("rerank")));
        assert!(!paths("/", Task::Uninlu, true).contains(&"Exact ".to_owned()));
    }
}
