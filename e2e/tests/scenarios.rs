//! The end-to-end scenarios, one body for both backends (`e2e::cluster`): the process cluster
//! (`cargo test -p e2e`, in CI: the operator and the servers as their own processes, the
//! testkit's kubelet, Service and Ingress fronts, a real redis-server) and kind (`e2e/run.sh`:
//! the chart-installed operator, ingress-nginx with a cert-manager certificate). Real tokens,
//! real HTTPS through the ingress either way.

use std::time::{Duration, Instant};

use e2e::*;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Patch, PatchParams};
use nlu_crds::{NluService, Tenant};

const PREDICT: &str = "/api/predict";

#[tokio::test]
async fn uninlu_service_becomes_ready_with_url_and_replicas() {
    let cluster = ready_service().await.unwrap();
    let svc = cluster.api::<NluService>().get(SERVICE).await.unwrap();
    let status = svc.status.expect("status");
    assert!(
        status.ready_replicas.unwrap_or(0) >= MIN_REPLICAS,
        "{status:?}"
    );
    assert_eq!(status.observed_generation, svc.metadata.generation);
    assert_eq!(status.url, Some(format!("https://{SERVICE_HOST}")));
    assert!(
        condition_true(&status.conditions, "ModelLoaded"),
        "{status:?}"
    );
}

#[tokio::test]
async fn tenant_token_calls_predict_through_the_https_ingress() {
    let cluster = ready_service().await.unwrap();
    let token = tenant_with_token(&tenant("alpha", &[SERVICE], &["predict"], 0))
        .await
        .unwrap();
    let https = cluster
        .https(SERVICE_HOST, SERVICE_TLS_SECRET)
        .await
        .unwrap();
    let (request, expected) = predict_case().unwrap();

    // The tenant record reaches Redis shortly after the token Secret: allow a few seconds.
    let answer = wait_for(
        "a 200 from /api/predict",
        Duration::from_secs(30),
        || async {
            let answer = https.post(PREDICT, Some(&token), &request).await?;
            Ok((answer.status == 200).then_some(answer))
        },
    )
    .await
    .unwrap();
    let output = answer.body.get("output").expect("output in the answer");
    assert!(output.is_array(), "{}", answer.body);
    if let Some(expected) = expected {
        assert_eq!(
            output, &expected,
            "the served model must give the fixture's output"
        );
    }
}

#[tokio::test]
async fn request_without_a_token_is_401() {
    let cluster = ready_service().await.unwrap();
    let https = cluster
        .https(SERVICE_HOST, SERVICE_TLS_SECRET)
        .await
        .unwrap();
    let (request, _) = predict_case().unwrap();
    let answer = https.post(PREDICT, None, &request).await.unwrap();
    assert_eq!(answer.status, 401, "{}", answer.body);
    assert_eq!(answer.error_code(), Some("missing_token"));
    assert_eq!(
        answer
            .headers
            .get("www-authenticate")
            .map(|v| v.to_str().unwrap()),
        Some("Bearer")
    );
}

#[tokio::test]
async fn another_tenants_service_and_ungranted_operations_are_refused() {
    let cluster = ready_service().await.unwrap();
    let https = cluster
        .https(SERVICE_HOST, SERVICE_TLS_SECRET)
        .await
        .unwrap();
    let (request, _) = predict_case().unwrap();

    // A tenant granted a different service: its token's audience does not name this one (401
    // `invalid_token`, wrong audience, per the access contract).
    let other = tenant_with_token(&tenant("beta", &["someone-elses-service"], &["predict"], 0))
        .await
        .unwrap();
    let answer = https.post(PREDICT, Some(&other), &request).await.unwrap();
    assert_eq!(answer.status, 401, "{}", answer.body);
    assert_eq!(answer.error_code(), Some("invalid_token"));

    // A tenant of this service without the `predict` operation: 403.
    let embed_only = tenant_with_token(&tenant("gamma", &[SERVICE], &["embed"], 0))
        .await
        .unwrap();
    let answer = https
        .post(PREDICT, Some(&embed_only), &request)
        .await
        .unwrap();
    assert_eq!(answer.status, 403, "{}", answer.body);
    assert_eq!(answer.error_code(), Some("scope_not_granted"));
}

#[tokio::test]
async fn quota_exceeded_is_429_with_retry_after() {
    let cluster = ready_service().await.unwrap();
    let https = cluster
        .https(SERVICE_HOST, SERVICE_TLS_SECRET)
        .await
        .unwrap();
    let (request, _) = predict_case().unwrap();
    let limit = 3;
    let token = tenant_with_token(&tenant("delta", &[SERVICE], &["predict"], limit))
        .await
        .unwrap();

    let first = wait_for(
        "the first call admitted",
        Duration::from_secs(30),
        || async {
            let answer = https.post(PREDICT, Some(&token), &request).await?;
            Ok((answer.status == 200).then_some(answer))
        },
    )
    .await
    .unwrap();
    assert_eq!(
        first
            .headers
            .get("x-ratelimit-limit")
            .map(|v| v.to_str().unwrap()),
        Some(limit.to_string().as_str())
    );
    for _ in 1..limit {
        let answer = https.post(PREDICT, Some(&token), &request).await.unwrap();
        assert_eq!(answer.status, 200, "{}", answer.body);
    }
    let refused = https.post(PREDICT, Some(&token), &request).await.unwrap();
    assert_eq!(refused.status, 429, "{}", refused.body);
    assert_eq!(refused.error_code(), Some("rate_limited"));
    let retry_after: u64 = refused.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry_after), "Retry-After {retry_after}");
    assert_eq!(
        refused
            .headers
            .get("x-ratelimit-remaining")
            .map(|v| v.to_str().unwrap()),
        Some("0")
    );
}

#[tokio::test]
async fn suspending_a_tenant_blocks_it_within_seconds() {
    let cluster = ready_service().await.unwrap();
    let https = cluster
        .https(SERVICE_HOST, SERVICE_TLS_SECRET)
        .await
        .unwrap();
    let (request, _) = predict_case().unwrap();
    let token = tenant_with_token(&tenant("epsilon", &[SERVICE], &["predict"], 0))
        .await
        .unwrap();
    wait_for("the tenant admitted", Duration::from_secs(30), || async {
        Ok((https.post(PREDICT, Some(&token), &request).await?.status == 200).then_some(()))
    })
    .await
    .unwrap();

    let suspended_at = Instant::now();
    let patch = serde_json::json!({"spec": {"suspended": true}});
    cluster
        .api::<Tenant>()
        .patch("epsilon", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let answer = wait_for("403 tenant_suspended", Duration::from_secs(10), || async {
        let answer = https.post(PREDICT, Some(&token), &request).await?;
        Ok((answer.status == 403).then_some(answer))
    })
    .await
    .unwrap();
    assert_eq!(answer.error_code(), Some("tenant_suspended"));
    println!("suspension took effect after {:?}", suspended_at.elapsed());

    let patch = serde_json::json!({"spec": {"suspended": false}});
    cluster
        .api::<Tenant>()
        .patch("epsilon", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    wait_for(
        "the tenant admitted again",
        Duration::from_secs(10),
        || async {
            Ok((https.post(PREDICT, Some(&token), &request).await?.status == 200).then_some(()))
        },
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn hpa_owns_scaling_within_the_spec_bounds() {
    let cluster = ready_service().await.unwrap();
    let hpa = cluster
        .api::<HorizontalPodAutoscaler>()
        .get(SERVICE)
        .await
        .unwrap();
    let spec = hpa.spec.expect("HPA spec");
    assert_eq!(spec.min_replicas, Some(MIN_REPLICAS));
    assert_eq!(spec.max_replicas, MAX_REPLICAS);
    assert_eq!(spec.scale_target_ref.kind, "Deployment");
    assert_eq!(spec.scale_target_ref.name, SERVICE);
    // One replica at the minimum: no PodDisruptionBudget (it would block node drains).
    assert!(cluster
        .api::<PodDisruptionBudget>()
        .get_opt(SERVICE)
        .await
        .unwrap()
        .is_none());
}

#[tokio::test]
async fn deleting_an_nluservice_removes_its_children() {
    let cluster = cluster().await;
    let name = "doomed";
    cluster
        .apply(&uninlu_service(name, "doomed.nlu-e2e.test", "doomed-tls"))
        .await
        .unwrap();
    wait_for(
        "the children of NluService doomed",
        Duration::from_secs(120),
        || async {
            let present = children_present(&cluster, name).await?;
            Ok(present.iter().all(|&p| p).then_some(()))
        },
    )
    .await
    .unwrap();

    cluster.delete::<NluService>(name).await.unwrap();
    wait_for(
        "every child of NluService doomed deleted",
        Duration::from_secs(120),
        || async {
            let gone = cluster.api::<NluService>().get_opt(name).await?.is_none()
                && !children_present(&cluster, name).await?.contains(&true);
            Ok(gone.then_some(()))
        },
    )
    .await
    .unwrap();
}

/// Whether each child kind an NluService with Ingress and autoscaling owns exists: Deployment,
/// Service, Ingress, HPA, NetworkPolicy.
async fn children_present(cluster: &Cluster, name: &str) -> kube::Result<[bool; 5]> {
    Ok([
        cluster.api::<Deployment>().get_opt(name).await?.is_some(),
        cluster.api::<Service>().get_opt(name).await?.is_some(),
        cluster.api::<Ingress>().get_opt(name).await?.is_some(),
        cluster
            .api::<HorizontalPodAutoscaler>()
            .get_opt(name)
            .await?
            .is_some(),
        cluster
            .api::<NetworkPolicy>()
            .get_opt(name)
            .await?
            .is_some(),
    ])
}
