//! Quotas and rate limits are exact under concurrency and reported in headers and metrics.

use futures::future::join_all;
use nlu_crds::access::{RedisKeys, TenantRecord};
use reqwest::StatusCode;

use crate::harness::*;

#[tokio::test]
async fn daily_quota_is_exact_under_200_concurrent_requests() {
    let redis = shared_redis();
    let keys = Keys::new();
    let prefix = unique_prefix();
    let tenant = "team-a/busy";
    put_record(
        &redis.url(),
        &prefix,
        tenant,
        &TenantRecord {
            requests_per_day: 50,
            ..open_record()
        },
    )
    .await;
    let server = TestServer::start(&auth_args(&redis.url(), &keys.jwks_path(), &prefix, &[])).await;
    let token = keys.token(tenant);

    let responses = join_all((0..200).map(|_| server.call("/v1/embeddings", Some(&token)))).await;
    let ok = responses
        .iter()
        .filter(|r| r.status() == StatusCode::OK)
        .count();
    let limited: Vec<_> = responses
        .iter()
        .filter(|r| r.status() == StatusCode::TOO_MANY_REQUESTS)
        .collect();
    assert_eq!((ok, limited.len()), (50, 150));
    for r in &limited {
        assert_eq!(r.headers()["x-ratelimit-limit"], "50");
        assert_eq!(r.headers()["x-ratelimit-remaining"], "0");
        let retry: u64 = r.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(
            retry.to_string(),
            r.headers()["x-ratelimit-reset"].to_str().unwrap()
        );
        assert!((1..=86_400).contains(&retry));
    }
    let remaining: Vec<u64> = responses
        .iter()
        .filter(|r| r.status() == StatusCode::OK)
        .map(|r| {
            r.headers()["x-ratelimit-remaining"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    let mut sorted = remaining.clone();
    sorted.sort_unstable();
    assert_eq!(
        sorted,
        (0..50).collect::<Vec<_>>(),
        "every admitted request saw its own count"
    );

    // The counter the operator reads holds exactly the admitted requests.
    let mut conn = redis_conn(&redis.url());
    let usage_key =
        RedisKeys::new(&prefix).usage(&tenant.parse().unwrap(), chrono::Utc::now().date_naive());
    let used: u64 = redis::cmd("HGET")
        .arg(&usage_key)
        .arg("requests")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(used, 50);
    let ttl: i64 = redis::cmd("TTL")
        .arg(&usage_key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(ttl > 0, "usage counters expire");

    let metrics = server.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains(
            r#"nlu_auth_decisions_total{tenant="team-a/busy",outcome="quota_exceeded"} 150"#
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"nlu_auth_decisions_total{tenant="team-a/busy",outcome="allowed"} 50"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn per_minute_limit_lets_5_of_8_instant_requests_through() {
    let redis = shared_redis();
    let keys = Keys::new();
    let prefix = unique_prefix();
    let tenant = "team-a/bursty";
    put_record(
        &redis.url(),
        &prefix,
        tenant,
        &TenantRecord {
            requests_per_minute: 5,
            ..open_record()
        },
    )
    .await;
    let server = TestServer::start(&auth_args(&redis.url(), &keys.jwks_path(), &prefix, &[])).await;
    let token = keys.token(tenant);

    let responses = join_all((0..8).map(|_| server.call("/api/predict", Some(&token)))).await;
    let ok = responses
        .iter()
        .filter(|r| r.status() == StatusCode::OK)
        .count();
    assert_eq!(ok, 5);
    for r in responses.iter().filter(|r| r.status() != StatusCode::OK) {
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.headers()["x-ratelimit-limit"], "5");
        let retry: u64 = r.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            (55..=60).contains(&retry),
            "the oldest request frees a slot a minute after it came: {retry}"
        );
    }
    // Still limited a moment later: the window slides, it does not reset on a minute edge.
    let later = server.call("/api/predict", Some(&token)).await;
    assert_eq!(later.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(error_code(later).await, "rate_limited");
}

#[tokio::test]
async fn tenant_metric_labels_are_capped() {
    let redis = shared_redis();
    let keys = Keys::new();
    let prefix = unique_prefix();
    for t in ["team-a/first", "team-a/second"] {
        put_record(&redis.url(), &prefix, t, &open_record()).await;
    }
    let args = auth_args(
        &redis.url(),
        &keys.jwks_path(),
        &prefix,
        &["--metrics-max-tenants", "1"],
    );
    let server = TestServer::start(&args).await;
    for t in ["team-a/first", "team-a/second", "team-a/second"] {
        assert_eq!(
            server.call("/embed", Some(&keys.token(t))).await.status(),
            StatusCode::OK
        );
    }
    let metrics = server.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains(r#"nlu_auth_decisions_total{tenant="team-a/first",outcome="allowed"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"nlu_auth_decisions_total{tenant="other",outcome="allowed"} 2"#),
        "{metrics}"
    );
    assert!(!metrics.contains("team-a/second"), "{metrics}");
}
