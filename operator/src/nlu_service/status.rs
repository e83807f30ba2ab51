//! Status from what the cluster reports: a pure function of the NluService, its applied
//! Deployment and Ingress (as the API server answered), the spec problem if any, and the time.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use nlu_crds::conditions::{
    condition, set_condition, DEGRADED, INGRESS_READY, MODEL_LOADED, PROGRESSING, READY,
};
use nlu_crds::{NluService, NluServiceStatus};

use super::build::ingress::DEFAULT_PATH;
use super::validate::Problem;
use crate::apply::NameTaken;

/// What the controller saw in this reconcile.
pub struct Observed<'a> {
    /// Why the spec cannot be served; the children were left as they were.
    pub problem: Option<&'a Problem>,
    /// Objects of a child's name (or the JWK Set ConfigMap) that someone else holds: not written.
    pub taken: &'a [NameTaken],
    pub deployment: Option<&'a Deployment>,
    pub ingress: Option<&'a Ingress>,
}

/// The status to write: the previous conditions updated (transition times kept where the status
/// did not flip), counts from the Deployment, and the URL clients call.
pub fn compute(svc: &NluService, seen: &Observed<'_>, now: Time) -> NluServiceStatus {
    let old = svc.status.clone().unwrap_or_default();
    let generation = svc.metadata.generation;
    let mut conditions = old.conditions.clone();
    let mut set = |type_: &str, ok: bool, reason: &str, message: String| {
        set_condition(
            &mut conditions,
            condition(type_, ok, reason, message, generation, now.clone()),
        );
    };

    let dep_status = seen
        .deployment
        .and_then(|d| d.status.clone())
        .unwrap_or_default();
    let desired = seen
        .deployment
        .and_then(|d| d.spec.as_ref()?.replicas)
        .unwrap_or(1);
    let ready = dep_status.ready_replicas.unwrap_or(0);
    let updated = dep_status.updated_replicas.unwrap_or(0);
    let rollout_seen = seen
        .deployment
        .is_some_and(|d| dep_status.observed_generation >= d.metadata.generation);
    let deadline_exceeded = dep_status.conditions.iter().flatten().find(|c| {
        c.type_ == "Progressing" && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
    });

    match (seen.problem, deadline_exceeded) {
        (Some(p), _) => set(DEGRADED, true, p.reason, p.message.clone()),
        (None, _) if !seen.taken.is_empty() => set(
            DEGRADED,
            true,
            "NameConflict",
            seen.taken
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; "),
        ),
        (None, Some(c)) => set(
            DEGRADED,
            true,
            "ProgressDeadlineExceeded",
            c.message
                .clone()
                .unwrap_or_else(|| "the rollout stopped making progress".into()),
        ),
        (None, None) => set(
            DEGRADED,
            false,
            "AsExpected",
            "the spec is valid and the rollout progresses".into(),
        ),
    }

    if seen.problem.is_some() {
        set(
            PROGRESSING,
            false,
            "SpecInvalid",
            "not rolling out an invalid spec".into(),
        );
    } else if seen.deployment.is_none() {
        set(
            PROGRESSING,
            false,
            "NameConflict",
            "the Deployment of this name is someone else's".into(),
        );
    } else if !rollout_seen || updated < desired || ready < desired {
        set(
            PROGRESSING,
            true,
            "RollingOut",
            format!("{updated}/{desired} pods updated, {ready}/{desired} ready"),
        );
    } else {
        set(
            PROGRESSING,
            false,
            "RolloutComplete",
            format!("{ready}/{desired} pods ready"),
        );
    }

    if ready > 0 {
        set(
            MODEL_LOADED,
            true,
            "PodReady",
            format!("{ready} pod(s) loaded and warmed up the model"),
        );
    } else {
        set(
            MODEL_LOADED,
            false,
            "NoReadyPod",
            "no pod has loaded the model yet".into(),
        );
    }

    let degraded = seen.problem.is_some() || !seen.taken.is_empty() || deadline_exceeded.is_some();
    if degraded {
        set(
            READY,
            false,
            "Degraded",
            "see the Degraded condition".into(),
        );
    } else if desired > 0 && ready >= desired {
        set(
            READY,
            true,
            "AllReplicasReady",
            format!("{ready}/{desired} pods ready"),
        );
    } else {
        set(
            READY,
            false,
            "ReplicasNotReady",
            format!("{ready}/{desired} pods ready"),
        );
    }

    if svc.spec.ingress.is_some() {
        match seen.ingress.and_then(ingress_address) {
            Some(addr) => set(
                INGRESS_READY,
                true,
                "AddressAssigned",
                format!("load balancer address {addr}"),
            ),
            None => set(
                INGRESS_READY,
                false,
                "AwaitingAddress",
                "the ingress controller has not assigned an address yet".into(),
            ),
        }
    } else {
        conditions.retain(|c| c.type_ != INGRESS_READY);
    }

    NluServiceStatus {
        conditions,
        observed_generation: generation,
        replicas: seen
            .deployment
            .map(|_| dep_status.replicas.unwrap_or(0))
            .or(old.replicas),
        ready_replicas: seen.deployment.map(|_| ready).or(old.ready_replicas),
        url: Some(url(svc, seen.ingress)),
    }
}

fn ingress_address(ingress: &Ingress) -> Option<String> {
    let lb = ingress
        .status
        .as_ref()?
        .load_balancer
        .as_ref()?
        .ingress
        .as_ref()?
        .first()?;
    lb.hostname.clone().or_else(|| lb.ip.clone())
}

/// The public URL when exposed (host, else the load balancer address), else the Service's
/// in-cluster URL.
pub fn url(svc: &NluService, ingress: Option<&Ingress>) -> String {
    if let Some(spec) = &svc.spec.ingress {
        let scheme = if spec.tls.is_some() { "https" } else { "http" };
        let host = spec
            .host
            .clone()
            .or_else(|| ingress.and_then(ingress_address));
        if let Some(host) = host {
            let path = spec
                .path
                .as_deref()
                .unwrap_or(DEFAULT_PATH)
                .trim_end_matches('/');
            return format!("{scheme}://{host}{path}");
        }
    }
    let ns = svc.namespace().unwrap_or_default();
    // The Service's http port is 80, the scheme default.
    format!("http://{}.{ns}.svc", svc.name_any())
}

#[cfg(test)]
mod tests {
    use k8s_openapi::jiff::Timestamp;
    use nlu_crds::conditions::is_true;
    use serde_json::json;

    use super::*;

    fn svc(spec: serde_json::Value) -> NluService {
        serde_json::from_value(json!({
            "apiVersion": "nlu.dev/v1alpha1", "kind": "NluService",
            "metadata": {"name": "s", "namespace": "n", "generation": 3}, "spec": spec,
        }))
        .unwrap()
    }

    fn at(secs: i64) -> Time {
        Time(Timestamp::from_second(secs).unwrap())
    }

    fn reason(status: &NluServiceStatus, type_: &str) -> String {
        status
            .conditions
            .iter()
            .find(|c| c.type_ == type_)
            .map(|c| c.reason.clone())
            .unwrap_or_default()
    }

    fn deployment(status: serde_json::Value) -> Deployment {
        serde_json::from_value(json!({"metadata": {"generation": 2}, "spec": {"replicas": 2, "selector": {}, "template": {}}, "status": status})).unwrap()
    }

    #[test]
    fn ingress_address_makes_ingress_ready_and_the_url_public() {
        let s = svc(
            json!({"model": {"task": "embedding", "source": {"url": "https://m"}}, "ingress": {"path": "/api/"}}),
        );
        let ing: Ingress = serde_json::from_value(
            json!({"status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.7"}]}}}),
        )
        .unwrap();
        let dep = deployment(
            json!({"observedGeneration": 2, "replicas": 2, "updatedReplicas": 2, "readyReplicas": 2}),
        );
        let status = compute(
            &s,
            &Observed {
                problem: None,
                taken: &[],
                deployment: Some(&dep),
                ingress: Some(&ing),
            },
            at(10),
        );
        assert!(is_true(&status.conditions, INGRESS_READY));
        assert!(is_true(&status.conditions, READY));
        assert_eq!(status.url.as_deref(), Some("http://203.0.113.7/api"));
        assert_eq!(status.observed_generation, Some(3));
        assert_eq!((status.replicas, status.ready_replicas), (Some(2), Some(2)));

        // Ingress switched off: its condition disappears, the URL falls back to the Service.
        let off = NluService {
            spec: svc(json!({"model": {"task": "embedding", "source": {"url": "https://m"}}})).spec,
            status: Some(status),
            ..s
        };
        let status = compute(
            &off,
            &Observed {
                problem: None,
                taken: &[],
                deployment: Some(&dep),
                ingress: None,
            },
            at(20),
        );
        assert!(status.conditions.iter().all(|c| c.type_ != INGRESS_READY));
        assert_eq!(status.url.as_deref(), Some("http://s.n.svc"));
    }

    #[test]
    fn stalled_rollout_is_degraded_and_not_ready() {
        let s = svc(json!({"model": {"task": "embedding", "source": {"url": "https://m"}}}));
        let dep = deployment(json!({
            "observedGeneration": 2, "replicas": 2, "updatedReplicas": 1, "readyReplicas": 1,
            "conditions": [{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded", "message": "ReplicaSet has timed out progressing."}],
        }));
        let status = compute(
            &s,
            &Observed {
                problem: None,
                taken: &[],
                deployment: Some(&dep),
                ingress: None,
            },
            at(10),
        );
        assert_eq!(reason(&status, DEGRADED), "ProgressDeadlineExceeded");
        assert_eq!(reason(&status, READY), "Degraded");
        assert_eq!(reason(&status, PROGRESSING), "RollingOut");
        assert!(
            is_true(&status.conditions, MODEL_LOADED),
            "one pod is serving"
        );
    }

    #[test]
    fn a_child_name_someone_else_holds_degrades_with_name_conflict() {
        let s = svc(json!({"model": {"task": "embedding", "source": {"url": "https://m"}}}));
        let taken = [
            NameTaken {
                kind: "Deployment".into(),
                name: "s".into(),
            },
            NameTaken {
                kind: "ConfigMap".into(),
                name: "nlu-jwks".into(),
            },
        ];
        let seen = Observed {
            problem: None,
            taken: &taken,
            deployment: None,
            ingress: None,
        };
        let status = compute(&s, &seen, at(10));
        assert_eq!(reason(&status, DEGRADED), "NameConflict");
        assert!(is_true(&status.conditions, DEGRADED));
        let message = &status
            .conditions
            .iter()
            .find(|c| c.type_ == DEGRADED)
            .unwrap()
            .message;
        assert!(
            message.contains("Deployment \"s\"") && message.contains("ConfigMap \"nlu-jwks\""),
            "{message}"
        );
        assert_eq!(reason(&status, READY), "Degraded");
        assert_eq!(reason(&status, PROGRESSING), "NameConflict");
    }
}
