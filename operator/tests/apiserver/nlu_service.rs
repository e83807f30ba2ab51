//! The NluService controller, watch-driven, against the real server (see `apiserver.rs` for what
//! is real and what is not).

use std::time::Duration;

use http::Method;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use nlu_crds::{NluService, NluServiceStatus};
use nlu_operator::config::Policy;
use serde_json::json;

use crate::harness::{create_theirs, eventually, sample, warning_event, Running};

/// The Secret `nlu-redis` with the Redis URL the embedding sample's auth refers to (stand-in).
async fn create_redis_secret(op: &Running, ns: &str) {
    let redis_url =
        json!({"metadata": {"name": "nlu-redis"}, "stringData": {"url": "redis://redis:6379/0"}});
    create_theirs::<Secret>(&op.client, ns, redis_url).await;
}

fn condition<'a>(status: &'a NluServiceStatus, type_: &str) -> &'a Condition {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .unwrap_or_else(|| panic!("no {type_} condition in {status:?}"))
}

/// What the kubelet and the Deployment controller would report: `ready` of the Deployment's pods
/// ready, all updated, its current generation observed.
async fn play_kubelet(deployments: &Api<Deployment>, name: &str, ready: i32) {
    let deployment = deployments.get(name).await.unwrap();
    let desired = deployment
        .spec
        .as_ref()
        .and_then(|s| s.replicas)
        .unwrap_or(1);
    let status = json!({"status": {
        "observedGeneration": deployment.metadata.generation,
        "replicas": desired, "updatedReplicas": desired, "readyReplicas": ready, "availableReplicas": ready,
    }});
    deployments
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
}

async fn status_where(
    api: &Api<NluService>,
    what: &str,
    test: impl Fn(&NluServiceStatus) -> bool,
) -> NluServiceStatus {
    eventually(what, 20, || async {
        api.get("gte").await.ok()?.status.filter(|s| test(s))
    })
    .await
}

#[tokio::test]
async fn status_follows_the_deployment_through_the_status_subresource() {
    let Some(server) = nlu_testkit::api_server() else {
        return;
    };
    let ns = "nlus-status";
    let op = Running::nlu_service(server, ns).await;
    let services: Api<NluService> = Api::namespaced(op.client.clone(), ns);
    let deployments: Api<Deployment> = Api::namespaced(op.client.clone(), ns);
    // The embedding sample: 2 fixed replicas, the Redis URL in the Secret nlu-redis (stand-in).
    create_redis_secret(&op, ns).await;
    let created = services
        .create(
            &PostParams::default(),
            &sample("nluservice-embedding.yaml", ns, "gte"),
        )
        .await
        .unwrap();

    let first = status_where(&services, "the first status", |s| {
        s.observed_generation == Some(1)
    })
    .await;
    let ready = condition(&first, "Ready");
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "ReplicasNotReady"),
        "{first:?}"
    );
    assert_eq!(ready.observed_generation, Some(1));
    assert_eq!(condition(&first, "Progressing").status, "True");
    assert_eq!(first.ready_replicas, Some(0));
    assert_eq!(first.url.as_deref(), Some("http://gte.nlus-status.svc"));
    let deployment = deployments.get("gte").await.unwrap();
    assert_eq!(deployment.spec.as_ref().unwrap().replicas, Some(2));
    assert!(deployment
        .owner_references()
        .iter()
        .any(|o| Some(&o.uid) == created.metadata.uid.as_ref() && o.controller == Some(true)));

    // One of two pods ready: Ready stays False (new message, same lastTransitionTime), ModelLoaded
    // flips to True (new lastTransitionTime). Timestamps have second precision: let one pass.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    play_kubelet(&deployments, "gte", 1).await;
    let half = status_where(&services, "readyReplicas 1", |s| {
        s.ready_replicas == Some(1)
    })
    .await;
    let (ready_then, ready_now) = (condition(&first, "Ready"), condition(&half, "Ready"));
    assert_eq!(ready_now.status, "False");
    assert_ne!(
        ready_now.message, ready_then.message,
        "the message reports 1 of 2"
    );
    assert_eq!(
        ready_now.last_transition_time, ready_then.last_transition_time,
        "Ready did not flip: its time must hold"
    );
    let (loaded_then, loaded_now) = (
        condition(&first, "ModelLoaded"),
        condition(&half, "ModelLoaded"),
    );
    assert_eq!(
        (loaded_then.status.as_str(), loaded_now.status.as_str()),
        ("False", "True")
    );
    assert!(
        loaded_now.last_transition_time.0 > loaded_then.last_transition_time.0,
        "ModelLoaded flipped: new time"
    );

    tokio::time::sleep(Duration::from_millis(1100)).await;
    play_kubelet(&deployments, "gte", 2).await;
    let all = status_where(&services, "Ready True", |s| {
        nlu_crds::conditions::is_true(&s.conditions, "Ready")
    })
    .await;
    assert!(condition(&all, "Ready").last_transition_time.0 > ready_then.last_transition_time.0);
    assert_eq!(
        condition(&all, "ModelLoaded").last_transition_time,
        loaded_now.last_transition_time
    );

    // Every write of the controller to the NluService went through /status, as server-side apply.
    let main = format!("/apis/nlu.dev/v1alpha1/namespaces/{ns}/nluservices/gte");
    assert!(
        op.writes_to(&main).is_empty(),
        "writes to the main resource: {:?}",
        op.writes_to(&main)
    );
    let status_path = format!("{main}/status");
    let status_writes = op.writes_to(&status_path);
    assert!(status_writes.len() >= 3, "{status_writes:?}");
    assert!(
        status_writes.iter().all(|w| w.real
            && w.status == 200
            && w.method == Method::PATCH
            && w.content_type == "application/apply-patch+yaml"),
        "{status_writes:?}"
    );

    // Nothing changed: a reconcile (caused by a metadata-only touch) re-applies the children but
    // writes no status; the server's resourceVersion stays where the touch left it.
    let writes_before = status_writes.len();
    let applies_before = op.count(
        Method::PATCH,
        &format!("/apis/apps/v1/namespaces/{ns}/deployments/gte"),
    );
    let touch = json!({"metadata": {"annotations": {"example.com/touch": "1"}}});
    let touched = services
        .patch("gte", &PatchParams::default(), &Patch::Merge(&touch))
        .await
        .unwrap();
    eventually("a reconcile after the touch", 20, || async {
        (op.count(
            Method::PATCH,
            &format!("/apis/apps/v1/namespaces/{ns}/deployments/gte"),
        ) > applies_before)
            .then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        op.writes_to(&status_path).len(),
        writes_before,
        "a status write although nothing changed"
    );
    let now = services.get("gte").await.unwrap();
    assert_eq!(now.resource_version(), touched.resource_version());
    assert_eq!(now.status.as_ref(), Some(&all));

    // A spec change bumps generation; status and conditions follow it, the Deployment too.
    let more = json!({"spec": {"replicas": 3}});
    services
        .patch("gte", &PatchParams::default(), &Patch::Merge(&more))
        .await
        .unwrap();
    let next = status_where(&services, "observedGeneration 2", |s| {
        s.observed_generation == Some(2)
    })
    .await;
    assert!(
        next.conditions
            .iter()
            .all(|c| c.observed_generation == Some(2)),
        "{next:?}"
    );
    assert_eq!(condition(&next, "Ready").status, "False", "2 of 3 ready");
    assert_eq!(
        deployments.get("gte").await.unwrap().spec.unwrap().replicas,
        Some(3)
    );
}

/// No adoption, watch-driven: a Deployment named like the service that someone else made keeps
/// its content and gets no owner reference; the service reports `Degraded`/`NameConflict` with a
/// Warning Event; and deleting the NluService (the garbage collector running, as in a cluster)
/// removes its own children but not that Deployment.
#[tokio::test]
async fn a_deployment_someone_else_made_is_neither_adopted_nor_collected() {
    let Some(server) = nlu_testkit::api_server() else {
        return;
    };
    let ns = "nlus-no-adoption";
    let op = Running::nlu_service(server, ns).await;
    let services: Api<NluService> = Api::namespaced(op.client.clone(), ns);
    create_redis_secret(&op, ns).await;
    let (deployments, theirs) = create_theirs::<Deployment>(
        &op.client,
        ns,
        json!({
            "metadata": {"name": "gte", "labels": {"team": "search"}},
            "spec": {"replicas": 5, "selector": {"matchLabels": {"app": "theirs"}},
                     "template": {"metadata": {"labels": {"app": "theirs"}},
                                  "spec": {"containers": [{"name": "x", "image": "example.com/theirs:1"}]}}},
        }),
    )
    .await;
    services
        .create(
            &PostParams::default(),
            &sample("nluservice-embedding.yaml", ns, "gte"),
        )
        .await
        .unwrap();

    let status = status_where(&services, "Degraded NameConflict", |s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == "Degraded" && c.reason == "NameConflict")
    })
    .await;
    let degraded = condition(&status, "Degraded");
    assert_eq!(degraded.status, "True");
    assert!(
        degraded.message.contains("Deployment \"gte\""),
        "{}",
        degraded.message
    );
    assert_eq!(condition(&status, "Ready").reason, "Degraded");
    warning_event(&op.client, ns, "NameConflict").await;

    let deployment_path = format!("/apis/apps/v1/namespaces/{ns}/deployments/gte");
    let service_path = format!("/api/v1/namespaces/{ns}/services/gte");
    assert!(
        op.writes_to(&deployment_path).is_empty(),
        "the operator wrote to it: {:?}",
        op.writes_to(&deployment_path)
    );
    let after = deployments.get("gte").await.unwrap();
    assert_eq!(after.resource_version(), theirs.resource_version());
    assert!(after.owner_references().is_empty());
    assert_eq!(after.spec, theirs.spec);
    assert!(
        Api::<k8s_openapi::api::core::v1::Service>::namespaced(op.client.clone(), ns)
            .get_opt("gte")
            .await
            .unwrap()
            .is_some(),
        "the children whose names are free are applied"
    );

    services.delete("gte", &Default::default()).await.unwrap();
    // The garbage collector of the process cluster runs while the test waits.
    let collected = eventually("its own Service collected", 30, || async {
        op.writes_to(&service_path)
            .iter()
            .any(|w| w.method == Method::DELETE)
            .then_some(())
    });
    tokio::select! {
        () = nlu_testkit::collect_garbage(op.client.clone()) => unreachable!("the collector runs for ever"),
        () = collected => {}
    }
    let kept = deployments.get("gte").await.unwrap();
    assert_eq!(kept.resource_version(), theirs.resource_version());
    assert_eq!(kept.spec, theirs.spec);
}

/// The operator's policy, watch-driven: a service that names an image outside the allowed
/// repositories (here the default: the operator's own), an issuer or a host the flags do not
/// list is `Degraded` with the reason and a message naming the flag, and its running children
/// stay as they were; a new service asking for a refused image gets no children at all.
#[tokio::test]
async fn what_the_policy_refuses_is_degraded_and_applies_nothing() {
    let Some(server) = nlu_testkit::api_server() else {
        return;
    };
    let ns = "nlus-policy";
    let policy = Policy {
        allowed_ingress_classes: vec!["nginx".into()],
        allowed_issuers: vec!["letsencrypt-prod".into()],
        allowed_host_suffixes: vec!["example.com".into()],
        ..Policy::default()
    };
    let op = Running::nlu_service_with(server, ns, policy).await;
    let services: Api<NluService> = Api::namespaced(op.client.clone(), ns);
    let deployments: Api<Deployment> = Api::namespaced(op.client.clone(), ns);
    let ingresses: Api<Ingress> = Api::namespaced(op.client.clone(), ns);
    create_redis_secret(&op, ns).await;
    // The UniNLU sample: class nginx, ClusterIssuer letsencrypt-prod, host nlu.example.com.
    services
        .create(
            &PostParams::default(),
            &sample("nluservice-uninlu.yaml", ns, "gte"),
        )
        .await
        .unwrap();
    let allowed = status_where(&services, "the allowed service's status", |s| {
        s.observed_generation == Some(1)
    })
    .await;
    assert_eq!(
        condition(&allowed, "Degraded").status,
        "False",
        "{allowed:?}"
    );
    let deployment = deployments.get("gte").await.unwrap();
    let ingress = ingresses.get("gte").await.unwrap();
    let deployment_path = format!("/apis/apps/v1/namespaces/{ns}/deployments/gte");
    let ingress_path = format!("/apis/networking.k8s.io/v1/namespaces/{ns}/ingresses/gte");

    let refusals = [
        (
            json!({"image": "ghcr.io/nlu-dev/nlu-server-evil:0.1.0"}),
            "ImageNotAllowed",
            "image \"ghcr.io/nlu-dev/nlu-server-evil:0.1.0\" is not in --allowed-image-repositories (unset: the repository of --image, ghcr.io/nlu-dev/nlu-server)",
        ),
        (
            json!({"image": null, "ingress": {"tls": {"clusterIssuer": "selfsigned"}}}),
            "IssuerNotAllowed",
            "ClusterIssuer \"selfsigned\" (ingress.tls) is not in --allowed-issuers (letsencrypt-prod)",
        ),
        (
            json!({"ingress": {"host": "nlu.example.com.evil.io", "tls": {"clusterIssuer": "letsencrypt-prod"}}}),
            "HostNotAllowed",
            "ingress.host \"nlu.example.com.evil.io\" is not in --allowed-host-suffixes (example.com)",
        ),
    ];
    let child_writes = || {
        (
            op.writes_to(&deployment_path).len(),
            op.writes_to(&ingress_path).len(),
        )
    };
    for (generation, (spec, reason, message)) in (2..).zip(refusals) {
        services
            .patch(
                "gte",
                &PatchParams::default(),
                &Patch::Merge(&json!({"spec": spec})),
            )
            .await
            .unwrap();
        let refused = status_where(&services, reason, |s| {
            s.observed_generation == Some(generation)
                && s.conditions
                    .iter()
                    .any(|c| c.type_ == "Degraded" && c.reason == reason)
        })
        .await;
        let degraded = condition(&refused, "Degraded");
        assert_eq!(
            (degraded.status.as_str(), degraded.message.as_str()),
            ("True", message)
        );
        assert_eq!(condition(&refused, "Ready").reason, "Degraded");
        // Nothing applied: every reconcile from here on sees the refused spec (the status write
        // itself causes one), and the children keep what the allowed spec gave them.
        let writes_then = child_writes();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(
            child_writes(),
            writes_then,
            "{reason}: the operator wrote a child"
        );
        assert_eq!(
            deployments.get("gte").await.unwrap().resource_version(),
            deployment.resource_version()
        );
        assert_eq!(
            ingresses.get("gte").await.unwrap().resource_version(),
            ingress.resource_version()
        );
    }
    warning_event(&op.client, ns, "ImageNotAllowed").await;

    // A new service with a refused image from the start: no child is created.
    let mut evil: NluService = sample("nluservice-embedding.yaml", ns, "evil");
    evil.spec.image = Some("evil.io/x:1".into());
    services
        .create(&PostParams::default(), &evil)
        .await
        .unwrap();
    let refused = eventually("evil refused", 20, || async {
        services.get("evil").await.ok()?.status.filter(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == "Degraded" && c.reason == "ImageNotAllowed")
        })
    })
    .await;
    assert!(condition(&refused, "Degraded")
        .message
        .contains("--allowed-image-repositories"));
    assert!(deployments.get_opt("evil").await.unwrap().is_none());
    assert!(
        Api::<k8s_openapi::api::core::v1::Service>::namespaced(op.client.clone(), ns)
            .get_opt("evil")
            .await
            .unwrap()
            .is_none()
    );
}
