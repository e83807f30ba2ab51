//! `maxConcurrentRequests` and `--request-timeout` over real HTTP with a real Redis: requests
//! held open (headers sent, body still coming: the quota check has run, the handler waits) take
//! the tenant's places; one more is refused at once with 429 while another tenant is served;
//! a place is freed when its client goes away or its request times out (504), so the tenant is
//! served again and Redis holds no place.

use std::time::{Duration, Instant};

use nlu_crds::access::{RedisKeys, TenantRecord};
use reqwest::StatusCode;
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::costs::{post, serve};
use crate::harness::*;

/// A request whose headers are sent and whose body never comes: it holds its place until the
/// socket is dropped.
async fn held_open(base: &str, token: &str) -> TcpStream {
    let mut socket = TcpStream::connect(base.trim_start_matches("http://"))
        .await
        .unwrap();
    let head = format!(
        "POST /embed HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token}\r\n\
         content-type: application/json\r\ncontent-length: 100\r\n\r\n{{"
    );
    socket.write_all(head.as_bytes()).await.unwrap();
    socket
}

/// Places the tenant holds in Redis.
async fn places(redis: &str, prefix: &str, tenant: &str) -> u64 {
    redis::cmd("ZCARD")
        .arg(RedisKeys::new(prefix).in_flight(&tenant.parse().unwrap()))
        .query_async(&mut redis_conn(redis))
        .await
        .unwrap()
}

async fn eventually_no_places(redis: &str, prefix: &str, tenant: &str) {
    eventually(10, "every place freed", || async {
        places(redis, prefix, tenant).await == 0
    })
    .await;
}

#[tokio::test]
async fn a_tenant_at_its_concurrency_limit_is_refused_until_a_request_ends() {
    let redis = shared_redis().url();
    let keys = Keys::new();
    let prefix = unique_prefix();
    let (limited, other) = ("team-a/two-at-once", "team-a/open");
    let record = TenantRecord {
        max_concurrent_requests: 2,
        ..open_record()
    };
    put_record(&redis, &prefix, limited, &record).await;
    put_record(&redis, &prefix, other, &open_record()).await;
    let base = serve("gte-tiny", "embedding", &redis, &keys, &prefix, &[]).await;
    let body = json!({"inputs": "hello"});
    let token = keys.token(limited);

    let first = held_open(&base, &token).await;
    let _second = held_open(&base, &token).await;
    eventually(10, "two places held", || async {
        places(&redis, &prefix, limited).await == 2
    })
    .await;
    let refused = post(&base, "/embed", &token, &body).await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(refused.headers()["retry-after"], "1");
    assert_eq!(error_code(refused).await, "too_many_in_flight");
    let served = post(&base, "/embed", &keys.token(other), &body).await;
    assert_eq!(served.status(), StatusCode::OK, "other tenants are served");

    // The client of one held request goes away: its place is freed.
    drop(first);
    eventually(10, "one place freed", || async {
        places(&redis, &prefix, limited).await == 1
    })
    .await;
    let served = post(&base, "/embed", &token, &body).await;
    assert_eq!(served.status(), StatusCode::OK);
    assert_eq!(
        places(&redis, &prefix, limited).await,
        1,
        "its place is freed"
    );
}

#[tokio::test]
async fn a_request_past_its_timeout_gets_504_and_frees_its_place() {
    let redis = shared_redis().url();
    let keys = Keys::new();
    let prefix = unique_prefix();
    let tenant = "team-a/one-at-once";
    let record = TenantRecord {
        max_concurrent_requests: 1,
        ..open_record()
    };
    put_record(&redis, &prefix, tenant, &record).await;
    let base = serve(
        "gte-tiny",
        "embedding",
        &redis,
        &keys,
        &prefix,
        &["--request-timeout", "1s"],
    )
    .await;
    let token = keys.token(tenant);
    let started = Instant::now();
    let mut socket = held_open(&base, &token).await;
    // Read until the server closes or 10 s pass; what arrived is kept either way.
    let mut answer = Vec::new();
    let reading = tokio::io::AsyncReadExt::read_to_end(&mut socket, &mut answer);
    let _ = tokio::time::timeout(Duration::from_secs(10), reading).await;
    let waited = started.elapsed();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 504"), "{answer}");
    assert!(answer.contains("request_timeout"), "{answer}");
    assert!(waited >= Duration::from_millis(900), "{waited:?}");
    eventually_no_places(&redis, &prefix, tenant).await;
    let served = post(&base, "/embed", &token, &json!({"inputs": "hello"})).await;
    assert_eq!(served.status(), StatusCode::OK);
    eventually_no_places(&redis, &prefix, tenant).await;
}
