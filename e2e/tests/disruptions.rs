//! Scenarios that stop or change what every scenario of a test binary shares: Redis, the
//! operator, its signing key. They live in their own test binary (so their own cluster on the
//! process backend) and take [`one_at_a_time`], so none of them pulls a shared part from under
//! another scenario. Same bodies on both backends, as in `scenarios.rs`.

use std::time::Duration;

use e2e::*;
use nlu_crds::serve::FailurePolicy;
use nlu_crds::NluService;

#[tokio::test]
async fn an_operator_restart_loses_nothing() {
    let _one = one_at_a_time().await;
    let (cluster, https, kept) = served_tenant("lambda").await.unwrap();
    cluster.remove_tenant("mu").await.unwrap();

    cluster.stop_operator().await.unwrap();
    // Written while no operator runs: the next one must pick it up.
    cluster
        .apply(&tenant("mu", &[SERVICE], &["predict"], 0))
        .await
        .unwrap();
    cluster.start_operator().await.unwrap();

    let token = cluster.tenant_token("mu").await.unwrap();
    answers(&https, Some(&token), 200, 30).await;
    // What the first operator set up still holds.
    answers(&https, Some(&kept), 200, 5).await;
    let svc = cluster.api::<NluService>().get(SERVICE).await.unwrap();
    assert!(condition_true(&svc.status.unwrap().conditions, "Ready"));
}

#[tokio::test]
async fn a_standby_operator_takes_over_when_the_leader_stops() {
    let _one = one_at_a_time().await;
    let (cluster, https, kept) = served_tenant("pi").await.unwrap();
    cluster.remove_tenant("rho").await.unwrap();

    let leader = cluster.lease_holder().await.unwrap();
    cluster.add_standby_operator().await.unwrap();
    cluster.stop_operator_replica(&leader).await.unwrap();
    let next = wait_for("a new leader", Duration::from_secs(60), || async {
        let holder = cluster.lease_holder().await?;
        Ok((holder != leader).then_some(holder))
    })
    .await
    .unwrap();
    println!("the lead went from {leader} to {next}");

    // The new leader reconciles what is written after the hand-over...
    cluster
        .apply(&tenant("rho", &[SERVICE], &["predict"], 0))
        .await
        .unwrap();
    let token = cluster.tenant_token("rho").await.unwrap();
    answers(&https, Some(&token), 200, 30).await;
    // ...and what the old one set up still holds.
    answers(&https, Some(&kept), 200, 5).await;
    cluster.one_operator().await.unwrap();
}

#[tokio::test]
async fn a_redis_outage_under_fail_closed_refuses_then_recovers() {
    let _one = one_at_a_time().await;
    let (cluster, https, token) = served_tenant("sigma").await.unwrap();

    cluster.stop_redis().await.unwrap();
    // Quotas cannot be checked: refused (the server's 503, or the Ingress's once the pods
    // report unready), never served.
    let (request, _) = predict_case().unwrap();
    answers(&https, Some(&token), 503, 30).await;
    for _ in 0..3 {
        let answer = https.post(PREDICT, Some(&token), &request).await.unwrap();
        assert_eq!(answer.status, 503, "served without quotas: {}", answer.body);
    }

    // Redis comes back empty; the operator writes the tenant records again.
    cluster.start_redis().await.unwrap();
    answers(&https, Some(&token), 200, 120).await;
}

#[tokio::test]
async fn a_redis_outage_under_fail_open_keeps_serving() {
    let _one = one_at_a_time().await;
    let cluster = cluster().await;
    let (name, host, tls) = ("open", "open.nlu-e2e.test", "open-tls");
    let mut svc = uninlu_service(name, host, tls);
    svc.spec.auth.as_mut().unwrap().failure_policy = Some(FailurePolicy::FailOpen);
    cluster.apply(&svc).await.unwrap();
    let token = tenant_with_token(&tenant("tau", &[name], &["predict"], 0))
        .await
        .unwrap();
    let https = cluster.https(host, tls).await.unwrap();
    answers(&https, Some(&token), 200, 180).await;

    cluster.stop_redis().await.unwrap();
    // Tokens that verify are served, limited only by each process's local limiter.
    let (request, _) = predict_case().unwrap();
    for _ in 0..5 {
        let answer = https.post(PREDICT, Some(&token), &request).await.unwrap();
        assert_eq!(
            answer.status, 200,
            "refused while failing open: {}",
            answer.body
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    cluster.start_redis().await.unwrap();
    answers(&https, Some(&token), 200, 120).await;
    cluster.delete::<NluService>(name).await.unwrap();
}

/// A leaked key: `rotate-key --revoke-old` refuses the old tokens as soon as the servers see the
/// new key set, and every tenant gets a token of the new key without anyone touching it.
#[tokio::test]
async fn revoking_the_old_signing_keys_refuses_old_tokens_and_reissues_every_token() {
    let _one = one_at_a_time().await;
    let (cluster, https, old) = served_tenant("chi").await.unwrap();
    let old_kid = cluster.token_kid("chi").await.unwrap();

    cluster.rotate_signing_key(true).await.unwrap();
    old_token_refused_then_renewed(&cluster, &https, "chi", &old, &old_kid).await;
}

#[tokio::test]
async fn a_signing_key_rotation_keeps_old_tokens_until_their_key_retires() {
    let _one = one_at_a_time().await;
    let (cluster, https, old) = served_tenant("upsilon").await.unwrap();
    let old_kid = cluster.token_kid("upsilon").await.unwrap();

    cluster.rotate_signing_key(false).await.unwrap();
    // A tenant made now gets a token of the new key, which the servers accept once the new
    // key set reaches them (ConfigMap volume, then the server's reload).
    let new = tenant_with_token(&tenant("phi", &[SERVICE], &["predict"], 0))
        .await
        .unwrap();
    assert_ne!(cluster.token_kid("phi").await.unwrap(), old_kid);
    answers(&https, Some(&new), 200, 60).await;
    // The old key stays published: its tokens keep working through the grace period.
    answers(&https, Some(&old), 200, 5).await;

    cluster.let_retired_keys_expire().await.unwrap();
    old_token_refused_then_renewed(&cluster, &https, "upsilon", &old, &old_kid).await;
    // The new tokens still work.
    answers(&https, Some(&new), 200, 5).await;
}

/// Once the key of `old` is no longer published: `old` is refused as an invalid token, the
/// tenant gets a token of the current key, and that one is served.
async fn old_token_refused_then_renewed(
    cluster: &Cluster,
    https: &Https,
    tenant: &str,
    old: &str,
    old_kid: &str,
) {
    let refused = answers(https, Some(old), 401, 90).await;
    assert_eq!(
        refused.error_code(),
        Some("invalid_token"),
        "{}",
        refused.body
    );
    let renewed = wait_for(
        "a token of the new key",
        Duration::from_secs(90),
        || async {
            let token = cluster.tenant_token(tenant).await?;
            Ok((token != old).then_some(token))
        },
    )
    .await
    .unwrap();
    assert_ne!(cluster.token_kid(tenant).await.unwrap(), old_kid);
    answers(https, Some(&renewed), 200, 60).await;
}
