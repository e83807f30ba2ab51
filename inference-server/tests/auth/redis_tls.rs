//! `rediss://`: the quota store talks TLS to a TLS-only `redis-server`, trusting the CA given by
//! `--redis-ca-file`; without it the server's certificate is checked against the system's roots
//! and refused (the server stays unready under fail-closed).

use nlu_crds::access::TenantRecord;
use nlu_server::auth::Auth;
use nlu_testkit::RedisServer;
use prometheus_client::registry::Registry;
use reqwest::StatusCode;
use std::time::Duration;

use crate::harness::*;

fn tls_redis() -> (RedisServer, RedisTarget) {
    let redis = RedisServer::start_tls().expect("the auth tests need redis-server");
    let target = RedisTarget::tls(&redis);
    (redis, target)
}

#[tokio::test]
async fn quotas_are_checked_over_tls_with_the_given_ca() {
    let (redis, target) = tls_redis();
    assert!(redis.url().starts_with("rediss://"));
    let keys = Keys::new();
    let prefix = unique_prefix();
    let tenant = "team-a/secure";
    let record = TenantRecord {
        requests_per_minute: 100,
        ..open_record()
    };
    write_record(&mut target.conn(), &prefix, tenant, &record).await;
    let flags = target.flags();
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let server =
        TestServer::start(&auth_args(&target.url, &keys.jwks_path(), &prefix, &flags)).await;
    eventually(5, "ready over TLS", || async {
        server.get("/readyz").await.status() == StatusCode::OK
    })
    .await;
    let response = server.call("/embed", Some(&keys.token(tenant))).await;
    assert_eq!(response.status(), StatusCode::OK);
    // The script read the record's limit over TLS.
    assert_eq!(response.headers()["x-ratelimit-limit"], "100");
}

#[tokio::test]
async fn an_untrusted_redis_certificate_is_refused() {
    let (redis, target) = tls_redis();
    let keys = Keys::new();
    let prefix = unique_prefix();
    let tenant = "team-a/secure";
    write_record(&mut target.conn(), &prefix, tenant, &open_record()).await;
    // No --redis-ca-file: the test CA is in no system store.
    let server = TestServer::start(&auth_args(&redis.url(), &keys.jwks_path(), &prefix, &[])).await;
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert_eq!(
        server.get("/readyz").await.status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    let response = server.call("/embed", Some(&keys.token(tenant))).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn quotas_are_exact_under_64_concurrent_requests_over_tls() {
    let (_redis, target) = tls_redis();
    crate::costs::quotas_are_exact_under_64_concurrent_requests(&target).await;
}

#[tokio::test]
async fn a_ca_file_without_a_tls_url_is_a_start_error() {
    let keys = Keys::new();
    let ca = tempfile::NamedTempFile::new().unwrap();
    let args = auth_args(
        "redis://127.0.0.1:1/",
        &keys.jwks_path(),
        "p:",
        &["--redis-ca-file", ca.path().to_str().unwrap()],
    );
    let error = Auth::from_args(&args, Duration::from_secs(60), &mut Registry::default())
        .err()
        .expect("refused");
    assert!(error.to_string().contains("rediss://"), "{error}");
}

#[tokio::test]
async fn an_unreadable_ca_file_is_a_start_error() {
    let keys = Keys::new();
    let args = auth_args(
        "rediss://127.0.0.1:1/",
        &keys.jwks_path(),
        "p:",
        &["--redis-ca-file", "/nonexistent/ca.pem"],
    );
    let error = Auth::from_args(&args, Duration::from_secs(60), &mut Registry::default())
        .err()
        .expect("refused");
    assert!(
        error.to_string().contains("cannot read --redis-ca-file"),
        "{error}"
    );
}
