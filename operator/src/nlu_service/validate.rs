//! Checks for specs that pass the CRD schema (or predate it) but cannot work. A problem makes
//! the service Degraded with `reason` and leaves its running children as they are.

use std::path::{Component, Path};

use nlu_crds::nlu_service::{AuthMode, ModelSource, NluServiceSpec, Task};

/// Why a spec cannot be served, as a condition reason and a message for `kubectl describe`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub reason: &'static str,
    pub message: String,
}

impl Problem {
    pub fn new(reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
        }
    }
}

/// The first problem of `spec`, if any.
pub fn check(spec: &NluServiceSpec) -> Result<(), Problem> {
    check_source(&spec.model.source)?;
    if spec.model.task != Task::Embedding && spec.model.pooling.is_some() {
        return Err(Problem::new(
            "PoolingNotApplicable",
            "model.pooling applies to the embedding task only",
        ));
    }
    if spec.replicas.is_some() && spec.autoscaling.is_some() {
        return Err(Problem::new(
            "ConflictingReplicas",
            "set either replicas or autoscaling, not both: with autoscaling the HPA owns the replica count",
        ));
    }
    if let Some(a) = &spec.autoscaling {
        if a.min_replicas < 1 || a.min_replicas > a.max_replicas {
            return Err(Problem::new(
                "InvalidAutoscaling",
                format!(
                    "autoscaling needs 1 <= minReplicas <= maxReplicas, got {}..{}",
                    a.min_replicas, a.max_replicas
                ),
            ));
        }
    }
    let auth = spec.auth.as_ref();
    if spec.ingress.is_some()
        && auth.and_then(|a| a.mode) == Some(AuthMode::None)
        && auth.and_then(|a| a.allow_unauthenticated) != Some(true)
    {
        return Err(Problem::new(
            "UnauthenticatedIngress",
            nlu_crds::nlu_service::UNAUTHENTICATED_INGRESS,
        ));
    }
    if let Some(tls) = spec.ingress.as_ref().and_then(|i| i.tls.as_ref()) {
        if spec
            .ingress
            .as_ref()
            .and_then(|i| i.host.as_deref())
            .unwrap_or("")
            .is_empty()
        {
            return Err(Problem::new(
                "IngressTlsWithoutHost",
                "ingress.tls needs ingress.host: certificates are issued for a host name",
            ));
        }
        if tls.cluster_issuer.is_some() && tls.issuer.is_some() {
            return Err(Problem::new(
                "ConflictingIssuers",
                "set at most one of ingress.tls.clusterIssuer or ingress.tls.issuer",
            ));
        }
    }
    Ok(())
}

fn check_source(source: &ModelSource) -> Result<(), Problem> {
    let set = [
        source.hugging_face.is_some(),
        source.model_scope.is_some(),
        source.pvc.is_some(),
        source.url.is_some(),
    ];
    if set.iter().filter(|s| **s).count() != 1 {
        return Err(Problem::new(
            "InvalidModelSource",
            "exactly one of model.source.huggingFace, modelScope, pvc or url must be set",
        ));
    }
    if let Some(path) = source.pvc.as_ref().and_then(|p| p.path.as_deref()) {
        relative_model_path(path)?;
    }
    if let Some(url) = &source.url {
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            return Err(Problem::new(
                "InvalidModelUrl",
                format!("model.source.url {url:?} is not an http(s) URL"),
            ));
        }
    }
    Ok(())
}

/// `path` as a clean relative path inside the volume (`.` and empty parts dropped), or the
/// problem when it would leave the volume (absolute, `..`).
pub fn relative_model_path(path: &str) -> Result<String, Problem> {
    let mut parts = Vec::new();
    for component in Path::new(path).components() {
        match component {
            Component::Normal(part) => parts.push(part.to_string_lossy().into_owned()),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                return Err(Problem::new(
                    "InvalidModelPath",
                    format!("model.source.pvc.path {path:?} must stay inside the volume: relative, without '..'"),
                ))
            }
        }
    }
    Ok(parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> NluServiceSpec {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn each_unservable_spec_has_its_reason() {
        let cases = [
            ("model: {task: embedding, source: {}}", "InvalidModelSource"),
            ("model: {task: embedding, source: {url: 'https://a', pvc: {claimName: m}}}", "InvalidModelSource"),
            ("model: {task: embedding, source: {pvc: {claimName: m, path: /abs}}}", "InvalidModelPath"),
            ("model: {task: embedding, source: {url: 'ftp://a'}}", "InvalidModelUrl"),
            ("model: {task: uninlu, source: {url: 'https://a'}, pooling: cls}", "PoolingNotApplicable"),
            ("model: {task: rerank, source: {url: 'https://a'}, pooling: mean}", "PoolingNotApplicable"),
            ("model: {task: embedding, source: {url: 'https://a'}}\nreplicas: 2\nautoscaling: {minReplicas: 1, maxReplicas: 2}", "ConflictingReplicas"),
            ("model: {task: embedding, source: {url: 'https://a'}}\nautoscaling: {minReplicas: 3, maxReplicas: 2}", "InvalidAutoscaling"),
            ("model: {task: embedding, source: {url: 'https://a'}}\ningress: {tls: {issuer: x}}", "IngressTlsWithoutHost"),
            ("model: {task: embedding, source: {url: 'https://a'}}\ningress: {host: h, tls: {issuer: x, clusterIssuer: y}}", "ConflictingIssuers"),
            ("model: {task: embedding, source: {url: 'https://a'}}\ningress: {host: h}\nauth: {mode: none}", "UnauthenticatedIngress"),
            ("model: {task: embedding, source: {url: 'https://a'}}\ningress: {host: h}\nauth: {mode: none, allowUnauthenticated: false}", "UnauthenticatedIngress"),
        ];
        for (yaml, reason) in cases {
            assert_eq!(check(&spec(yaml)).unwrap_err().reason, reason, "{yaml}");
        }
        let fine = "model: {task: embedding, source: {pvc: {claimName: m, path: a/b}}, pooling: mean}\nreplicas: 2\ningress: {host: h, tls: {issuer: x}}";
        assert_eq!(check(&spec(fine)), Ok(()));
        let open = "model: {task: embedding, source: {url: 'https://a'}}\ningress: {host: h}\nauth: {mode: none, allowUnauthenticated: true}";
        assert_eq!(check(&spec(open)), Ok(()));
        let internal = "model: {task: embedding, source: {url: 'https://a'}}\nauth: {mode: none}";
        assert_eq!(
            check(&spec(internal)),
            Ok(()),
            "no Ingress: in-cluster only"
        );
    }

    #[test]
    fn model_paths_stay_inside_the_volume() {
        assert_eq!(
            relative_model_path("models/./gte//base").unwrap(),
            "models/gte/base"
        );
        assert_eq!(relative_model_path("").unwrap(), "");
        for bad in ["/etc", "../secrets", "a/../../b", "a/.."] {
            assert_eq!(
                relative_model_path(bad).unwrap_err().reason,
                "InvalidModelPath",
                "{bad}"
            );
        }
    }
}
