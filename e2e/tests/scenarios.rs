//! The end-to-end scenarios, one body for both backends (`e2e::cluster`): the process cluster
//! (`cargo test -p e2e`, in CI: the operator and the servers as their own processes, the
//! testkit's kubelet, Service and Ingress fronts, a real redis-server) and kind (`e2e/run.sh`:
//! the chart-installed operator, ingress-nginx with a cert-manager certificate). Real tokens,
//! real HTTPS through the ingress either way.

use std::time::{Duration, Instant};

use e2e::*;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{Pod, Secret, Service};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Patch, PatchParams};
use nlu_crds::{NluService, Tenant};

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
    let (_, expected) = predict_case().unwrap();

    // The tenant record reaches Redis shortly after the token Secret: allow a few seconds.
    let answer = answers(&https, Some(&token), 200, 30).await;
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
async fn tenant_token_calls_embeddings_through_the_https_ingress() {
    let cluster = cluster().await;
    let (name, host, tls) = ("embed", "embed.nlu-e2e.test", "embed-tls");
    cluster
        .apply(&embedding_service(name, host, tls))
        .await
        .unwrap();
    let token = tenant_with_token(&tenant("omicron", &[name], &["embed"], 0))
        .await
        .unwrap();
    let https = cluster.https(host, tls).await.unwrap();
    let (text, expected) = embedding_case();
    let request = serde_json::json!({"input": [text], "model": "gte"});
    let answer = wait_for(
        "a 200 from /v1/embeddings",
        Duration::from_secs(180),
        || async {
            let answer = https.post("/v1/embeddings", Some(&token), &request).await?;
            Ok((answer.status == 200).then_some(answer))
        },
    )
    .await
    .unwrap();
    let embedding: Vec<f64> = serde_json::from_value(answer.body["data"][0]["embedding"].clone())
        .unwrap_or_else(|e| panic!("no embedding in {}: {e}", answer.body));
    assert_eq!(embedding.len(), expected.len(), "{}", answer.body);
    for (i, (got, want)) in embedding.iter().zip(&expected).enumerate() {
        assert!(
            (got - want).abs() < 1e-3,
            "dimension {i}: {got} served, {want} in the fixture"
        );
    }
    // An embedding service's Ingress publishes no UniNLU route (scopes are refused in
    // `another_tenants_service_and_ungranted_operations_are_refused`).
    let (predict, _) = predict_case().unwrap();
    let refused = https.post(PREDICT, Some(&token), &predict).await.unwrap();
    assert_eq!(refused.status, 404, "{}", refused.body);
    cluster.delete::<NluService>(name).await.unwrap();
}

/// The GTE fixture's first text and its normalized CLS embedding (PyTorch's).
fn embedding_case() -> (String, Vec<f64>) {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/fixtures/gte-tiny/expected.json"
    );
    let fixture: serde_json::Value =
        serde_json::from_slice(&std::fs::read(path).expect("the GTE fixture")).unwrap();
    let case = &fixture["cases"][0];
    let text = case["text"].as_str().expect("a text").to_owned();
    let expected = serde_json::from_value(case["cls_normalized"].clone()).expect("floats");
    (text, expected)
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
async fn only_model_routes_are_published_through_the_ingress() {
    let cluster = ready_service().await.unwrap();
    let https = cluster
        .https(SERVICE_HOST, SERVICE_TLS_SECRET)
        .await
        .unwrap();
    // Tenant ids and traffic live on the server's private metrics port only; probes, the model
    // info and (behind an Ingress, by default) the playground stay inside the cluster. The server
    // answers with its JSON error body; the Ingress's 404 is not one.
    for path in [
        "/metrics",
        "/healthz",
        "/readyz",
        "/info",
        "/",
        "/v1/embeddings",
    ] {
        let answer = https
            .post(path, None, &serde_json::json!({}))
            .await
            .unwrap();
        assert_eq!(answer.status, 404, "{path}: {}", answer.body);
        assert!(
            !answer.body.to_string().contains("\"error\""),
            "{path} reached the server: {}",
            answer.body
        );
    }
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

    let first = answers(&https, Some(&token), 200, 30).await;
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
    let (cluster, https, token) = served_tenant("epsilon").await.unwrap();

    let suspended_at = Instant::now();
    let patch = serde_json::json!({"spec": {"suspended": true}});
    cluster
        .api::<Tenant>()
        .patch("epsilon", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let answer = answers(&https, Some(&token), 403, 10).await;
    assert_eq!(answer.error_code(), Some("tenant_suspended"));
    println!("suspension took effect after {:?}", suspended_at.elapsed());

    let patch = serde_json::json!({"spec": {"suspended": false}});
    cluster
        .api::<Tenant>()
        .patch("epsilon", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    answers(&https, Some(&token), 200, 10).await;
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

    let pods =
        kube::api::ListParams::default().labels(&format!("app.kubernetes.io/instance={name}"));
    wait_for(
        "a pod of NluService doomed",
        Duration::from_secs(120),
        || async { Ok((!cluster.api::<Pod>().list(&pods).await?.items.is_empty()).then_some(())) },
    )
    .await
    .unwrap();

    cluster.delete::<NluService>(name).await.unwrap();
    wait_for(
        "every child and pod of NluService doomed deleted",
        Duration::from_secs(120),
        || async {
            let gone = cluster.api::<NluService>().get_opt(name).await?.is_none()
                && !children_present(&cluster, name).await?.contains(&true)
                && cluster.api::<Pod>().list(&pods).await?.items.is_empty();
            Ok(gone.then_some(()))
        },
    )
    .await
    .unwrap();
}

/// The operator's policy in the running system: an NluService that names an image outside the
/// allowed repositories (by default the operator's own server image's) is Degraded, naming the
/// flag, and nothing of it runs.
#[tokio::test]
async fn an_image_outside_the_allowed_repositories_is_degraded_and_never_runs() {
    let cluster = cluster().await;
    let name = "foreign-image";
    let mut svc = uninlu_service(name, "foreign.nlu-e2e.test", "foreign-tls");
    svc.spec.image = Some("evil.example/miner:1".into());
    cluster.apply(&svc).await.unwrap();
    let degraded = wait_for(
        "NluService foreign-image Degraded",
        Duration::from_secs(60),
        || async {
            let svc = cluster.api::<NluService>().get(name).await?;
            let conditions = svc.status.map(|s| s.conditions).unwrap_or_default();
            Ok(conditions
                .into_iter()
                .find(|c| c.type_ == "Degraded" && c.status == "True"))
        },
    )
    .await
    .unwrap();
    assert_eq!(degraded.reason, "ImageNotAllowed");
    assert!(
        degraded.message.contains("--allowed-image-repositories"),
        "{}",
        degraded.message
    );
    assert_eq!(children_present(&cluster, name).await.unwrap(), [false; 5]);
    cluster.delete::<NluService>(name).await.unwrap();
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

#[tokio::test]
async fn usage_shows_in_the_tenant_status() {
    let (cluster, https, token) = served_tenant("zeta").await.unwrap();
    answers(&https, Some(&token), 200, 5).await;
    // The operator refreshes usage at most once a minute.
    let usage = wait_for("usage in the status", Duration::from_secs(90), || async {
        let status = cluster.api::<Tenant>().get("zeta").await?.status;
        Ok(status.and_then(|s| s.usage).filter(|u| u.requests >= 2))
    })
    .await
    .unwrap();
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    assert_eq!(usage.date, today, "{usage:?}");
}

#[tokio::test]
async fn raising_the_generation_revokes_every_older_token() {
    let (cluster, https, old) = served_tenant("eta").await.unwrap();

    let patch = serde_json::json!({"spec": {"token": {"generation": 2}}});
    cluster
        .api::<Tenant>()
        .patch("eta", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let refused = answers(&https, Some(&old), 401, 30).await;
    assert_eq!(
        refused.error_code(),
        Some("invalid_token"),
        "{}",
        refused.body
    );
    let new = wait_for("a new token", Duration::from_secs(30), || async {
        let token = cluster.tenant_token("eta").await?;
        Ok((token != old).then_some(token))
    })
    .await
    .unwrap();
    answers(&https, Some(&new), 200, 30).await;
}

#[tokio::test]
async fn deleting_a_tenant_removes_its_secret_and_its_access() {
    let (cluster, https, token) = served_tenant("theta").await.unwrap();

    cluster.delete::<Tenant>("theta").await.unwrap();
    wait_for(
        "Tenant theta and its Secret gone",
        Duration::from_secs(60),
        || async {
            let tenant = cluster.api::<Tenant>().get_opt("theta").await?;
            let secret = cluster.api::<Secret>().get_opt("theta-token").await?;
            Ok((tenant.is_none() && secret.is_none()).then_some(()))
        },
    )
    .await
    .unwrap();
    // The token still verifies; only its Redis record could refuse it.
    let refused = answers(&https, Some(&token), 403, 10).await;
    assert_eq!(
        refused.error_code(),
        Some("unknown_tenant"),
        "{}",
        refused.body
    );
}

#[tokio::test]
async fn a_spec_change_rolls_the_pods_without_a_failed_request() {
    let cluster = cluster().await;
    let (name, host, tls) = ("rolling", "rolling.nlu-e2e.test", "rolling-tls");
    cluster
        .apply(&uninlu_service(name, host, tls))
        .await
        .unwrap();
    let token = tenant_with_token(&tenant("iota", &[name], &["predict"], 0))
        .await
        .unwrap();
    let https = cluster.https(host, tls).await.unwrap();
    answers(&https, Some(&token), 200, 180).await;
    let deployment = cluster.api::<Deployment>().get(name).await.unwrap();
    let before = deployment.metadata.generation.unwrap();

    // A client that retries 503 (no ready pod) as clients of a rolling service do.
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let client = {
        let (https, token, done) = (https.clone(), token.clone(), done.clone());
        tokio::spawn(async move {
            let (request, _) = predict_case().unwrap();
            let mut answered = 0;
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                let answer = https.post(PREDICT, Some(&token), &request).await;
                match answer {
                    Ok(a) if a.status == 200 => answered += 1,
                    Ok(a) if a.status == 503 => {
                        tokio::time::sleep(Duration::from_millis(100)).await
                    }
                    Ok(a) => panic!("a failed request during the roll: {} {}", a.status, a.body),
                    Err(e) => panic!("a failed request during the roll: {e}"),
                }
            }
            answered
        })
    };
    let patch = serde_json::json!({"spec": {"batching": {"maxQueueTokens": 100000}}});
    cluster
        .api::<NluService>()
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    wait_for("the roll complete", Duration::from_secs(180), || async {
        let d = cluster.api::<Deployment>().get(name).await?;
        let status = d.status.unwrap_or_default();
        let rolled = d.metadata.generation > Some(before)
            && status.observed_generation == d.metadata.generation
            && status.updated_replicas == Some(MIN_REPLICAS)
            && status.ready_replicas == Some(MIN_REPLICAS)
            && status.replicas == Some(MIN_REPLICAS);
        Ok(rolled.then_some(()))
    })
    .await
    .unwrap();
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let answered = client.await.expect("no failed request");
    assert!(answered > 0, "the client was answered during the roll");
    cluster.delete::<NluService>(name).await.unwrap();
}

#[tokio::test]
async fn a_service_published_under_an_ingress_path_answers_there() {
    let cluster = cluster().await;
    let (name, host, tls) = ("prefixed", "prefixed.nlu-e2e.test", "prefixed-tls");
    let mut svc = uninlu_service(name, host, tls);
    svc.spec.ingress.as_mut().unwrap().path = Some("/uninlu".into());
    cluster.apply(&svc).await.unwrap();
    let token = tenant_with_token(&tenant("kappa", &[name], &["predict"], 0))
        .await
        .unwrap();
    let https = cluster.https(host, tls).await.unwrap();
    // The status URL names the path, and the server answers under it.
    let url = wait_for("the status URL", Duration::from_secs(180), || async {
        let status = cluster.api::<NluService>().get(name).await?.status;
        Ok(status.and_then(|s| s.url))
    })
    .await
    .unwrap();
    assert_eq!(url, format!("https://{host}/uninlu"));
    answers_at(&https, "/uninlu/api/predict", Some(&token), 200, 180).await;
    cluster.delete::<NluService>(name).await.unwrap();
}

/// Tokens of a tenant's own identity provider (issue: federated tokens): one for the mapped
/// client is served under that Tenant's quota; one for an unmapped client, of another issuer,
/// for another audience, HS256-signed, or signed with a key the issuer rotated out is 401.
/// The issuer is the testkit's loopback stand-in (discovery, JWK Set, rotation) in this test
/// process, which a kind cluster's operator cannot reach: process cluster only.
#[tokio::test]
async fn identity_provider_tokens_are_served_under_the_mapped_tenant() {
    if backend_kind() == BackendKind::Kind {
        eprintln!("skipped on kind: the loopback issuer is not reachable from the cluster");
        return;
    }
    let cluster = ready_service().await.unwrap();
    let https = cluster
        .https(SERVICE_HOST, SERVICE_TLS_SECRET)
        .await
        .unwrap();
    let (idp, stranger) = (
        nlu_testkit::OidcIssuer::start().await.unwrap(),
        nlu_testkit::OidcIssuer::start().await.unwrap(),
    );
    let mut federated = tenant("iota", &[SERVICE], &["predict"], 0);
    federated.spec.quota.as_mut().unwrap().requests_per_day = Some(100);
    federated.spec.identity = Some(
        serde_json::from_value(serde_json::json!({
            "issuer": idp.issuer(),
            "audience": "nlu-api",
            "claims": [{"claim": "azp", "equals": "billing-app"}],
        }))
        .unwrap(),
    );
    tenant_with_token(&federated).await.unwrap();
    wait_for("IdentityProviderReady", Duration::from_secs(30), || async {
        let status = cluster.api::<Tenant>().get("iota").await?.status;
        Ok(status
            .filter(|s| condition_true(&s.conditions, "IdentityProviderReady"))
            .map(|_| ()))
    })
    .await
    .unwrap();
    let claims = |azp: &str, aud: &str| serde_json::json!({"sub": "user-7", "aud": aud, "azp": azp, "jti": "idp-1"});

    let good = idp.mint(claims("billing-app", "nlu-api"));
    let first = answers(&https, Some(&good), 200, 60).await;
    let second = answers(&https, Some(&good), 200, 5).await;
    let header = |a: &e2e::Answer, name: &str| a.headers[name].to_str().unwrap().to_owned();
    assert_eq!(
        header(&first, "x-ratelimit-limit"),
        "100",
        "the Tenant's quota"
    );
    let remaining = |a: &e2e::Answer| header(a, "x-ratelimit-remaining").parse::<u64>().unwrap();
    assert_eq!(
        remaining(&first) - 1,
        remaining(&second),
        "counted for the Tenant"
    );

    let hs256 = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &serde_json::json!({"iss": idp.issuer(), "aud": "nlu-api", "azp": "billing-app",
                            "exp": chrono::Utc::now().timestamp() + 300}),
        &jsonwebtoken::EncodingKey::from_secret(b"shared secret"),
    )
    .unwrap();
    let (request, _) = predict_case().unwrap();
    for (case, token) in [
        (
            "an unmapped client",
            idp.mint(claims("other-app", "nlu-api")),
        ),
        (
            "another issuer",
            stranger.mint(claims("billing-app", "nlu-api")),
        ),
        (
            "a wrong audience",
            idp.mint(claims("billing-app", "other-api")),
        ),
        ("an HS256 token", hs256),
    ] {
        let answer = https.post(PREDICT, Some(&token), &request).await.unwrap();
        assert_eq!(answer.status, 401, "{case}: {}", answer.body);
        assert_eq!(answer.error_code(), Some("invalid_token"), "{case}");
    }

    idp.rotate();
    let refused = answers(&https, Some(&good), 401, 30).await;
    assert_eq!(refused.error_code(), Some("invalid_token"));
    answers(
        &https,
        Some(&idp.mint(claims("billing-app", "nlu-api"))),
        200,
        30,
    )
    .await;
}
