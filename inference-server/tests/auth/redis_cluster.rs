//! Redis Cluster (`redis+cluster://`): three masters with a replica each, real `redis-server`
//! processes. Quotas stay exact under 64 concurrent requests with tenants spread over the
//! masters; when the master holding a tenant's slot dies, its replica takes over and the server
//! serves the tenant again within seconds, counting on from what the replica held.

use std::time::{Duration, Instant};

use futures::future::join_all;
use nlu_crds::access::{RedisKeys, TenantRecord};
use nlu_testkit::RedisCluster;
use reqwest::StatusCode;
use serde_json::json;

use crate::costs::{header, post, quotas_are_exact_under_64_concurrent_requests, serve, used};
use crate::harness::*;

fn cluster() -> RedisCluster {
    RedisCluster::start()
        .expect("the auth tests need redis-server and redis-cli (apt-get install -y redis-server)")
}

#[tokio::test]
async fn quotas_are_exact_under_64_concurrent_requests_on_a_cluster() {
    let cluster = cluster();
    quotas_are_exact_under_64_concurrent_requests(&RedisTarget::new(cluster.url())).await;
}

#[tokio::test]
async fn when_the_tenants_master_dies_its_replica_serves_and_counting_goes_on() {
    let mut cluster = cluster();
    let redis = RedisTarget::new(cluster.url());
    let keys = Keys::new();
    let prefix = unique_prefix();
    let tenant = "team-a/failover";
    let record = TenantRecord {
        requests_per_day: 30,
        ..open_record()
    };
    let mut conn = redis.conn();
    write_record(&mut conn, &prefix, tenant, &record).await;
    let base = serve("gte-tiny", "embedding", &redis.url, &keys, &prefix, &[]).await;
    let token = keys.token(tenant);
    let body = json!({"input": "hello"});
    let call = || post(&base, "/v1/embeddings", &token, &body);
    for _ in 0..10 {
        assert_eq!(call().await.status(), StatusCode::OK);
    }

    // Every key of the tenant is in the slot of its record (hash tag).
    let record_key = RedisKeys::new(&prefix).tenant(&tenant.parse().unwrap());
    cluster.kill_master_of(&record_key);
    let promoted = Instant::now();
    let first = loop {
        let r = call().await;
        if r.status() == StatusCode::OK {
            break r;
        }
        // Fail-closed while the client finds the new master; never served uncounted.
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(error_code(r).await, "quota_backend_unavailable");
        assert!(
            promoted.elapsed() < Duration::from_secs(5),
            "not served again within 5 s of the failover"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // The replica held the record and the 10 requests counted before: this was the 11th.
    assert_eq!(header(&first, "x-ratelimit-remaining"), 19);
    // Readiness (a PING to every master) no longer waits for the dead one.
    eventually(5, "ready again after the failover", || async {
        reqwest::get(format!("{base}/readyz"))
            .await
            .is_ok_and(|r| r.status() == StatusCode::OK)
    })
    .await;

    // Counting goes on, exactly: 19 more fit.
    let responses = join_all((0..64).map(|_| call())).await;
    let served = responses
        .iter()
        .filter(|r| r.status() == StatusCode::OK)
        .count();
    assert_eq!(served, 19);
    for r in responses
        .into_iter()
        .filter(|r| r.status() != StatusCode::OK)
    {
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(error_code(r).await, "quota_exceeded");
    }
    assert_eq!(used(&mut conn, &prefix, tenant, "requests").await, 30);
}
