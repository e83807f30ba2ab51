//! Redis going away and coming back: fail-closed refuses and turns unready, fail-open serves
//! within its local limit; both recover without a restart. Each test owns its Redis (it kills it).

use nlu_crds::access::TenantRecord;
use reqwest::StatusCode;

use crate::harness::*;

#[tokio::test]
async fn fail_closed_refuses_and_turns_unready_until_redis_returns() {
    let mut redis = redis();
    let keys = Keys::new();
    let prefix = unique_prefix();
    let tenant = "team-a/steady";
    put_record(&redis.url(), &prefix, tenant, &open_record()).await;
    let server = TestServer::start(&auth_args(
        &redis.url(),
        &keys.jwks_path(),
        &prefix,
        &["--redis-timeout-millis", "300"],
    ))
    .await;
    let token = keys.token(tenant);
    eventually(5, "ready", || async {
        server.get("/readyz").await.status() == StatusCode::OK
    })
    .await;
    assert_eq!(
        server.call("/embed", Some(&token)).await.status(),
        StatusCode::OK
    );

    redis.stop();
    let response = server.call("/embed", Some(&token)).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(response.headers().contains_key("retry-after"));
    assert_eq!(error_code(response).await, "quota_backend_unavailable");
    eventually(5, "readiness drops", || async {
        server.get("/readyz").await.status() == StatusCode::SERVICE_UNAVAILABLE
    })
    .await;
    let metrics = server.get("/metrics").await.text().await.unwrap();
    assert_eq!(metric_value(&metrics, "nlu_quota_backend_up"), 0);
    assert!(metric_value(&metrics, "nlu_quota_backend_errors_total") >= 1);

    redis.restart();
    // A fresh Redis without persistence: the operator would write the record again.
    put_record(&redis.url(), &prefix, tenant, &open_record()).await;
    eventually(10, "service resumes", || async {
        server.call("/embed", Some(&token)).await.status() == StatusCode::OK
    })
    .await;
    eventually(5, "ready again", || async {
        server.get("/readyz").await.status() == StatusCode::OK
    })
    .await;
}

#[tokio::test]
async fn fail_open_serves_within_the_local_limit_while_redis_is_down() {
    let mut redis = redis();
    let keys = Keys::new();
    let prefix = unique_prefix();
    let tenant = "team-a/lenient";
    // Written again after the restart: the restarted Redis is empty.
    let record = TenantRecord {
        requests_per_minute: 1000,
        ..open_record()
    };
    put_record(&redis.url(), &prefix, tenant, &record).await;
    let args = auth_args(
        &redis.url(),
        &keys.jwks_path(),
        &prefix,
        &[
            "--redis-failure-policy",
            "fail-open",
            "--fail-open-requests-per-minute",
            "3",
            "--redis-timeout-millis",
            "300",
        ],
    );
    let server = TestServer::start(&args).await;
    let token = keys.token(tenant);
    assert_eq!(
        server.call("/embed", Some(&token)).await.status(),
        StatusCode::OK
    );

    redis.stop();
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(server.call("/embed", Some(&token)).await.status());
    }
    assert_eq!(statuses[..3], [StatusCode::OK; 3]);
    assert_eq!(statuses[3..], [StatusCode::TOO_MANY_REQUESTS; 2]);
    assert_eq!(
        server.get("/readyz").await.status(),
        StatusCode::OK,
        "fail-open stays ready"
    );
    // Signatures are still checked while Redis is down.
    assert_eq!(
        server.call("/embed", Some("garbage")).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let metrics = server.get("/metrics").await.text().await.unwrap();
    assert_eq!(metric_value(&metrics, "nlu_quota_backend_errors_total"), 5);

    redis.restart();
    put_record(&redis.url(), &prefix, tenant, &record).await;
    eventually(10, "Redis limits apply again", || async {
        let r = server.call("/embed", Some(&token)).await;
        r.status() == StatusCode::OK
            && r.headers()
                .get("x-ratelimit-limit")
                .is_some_and(|v| v == "1000")
    })
    .await;
}
