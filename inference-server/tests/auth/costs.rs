//! Token quotas charge what the model runs, before it runs: request and token quotas are exact
//! under 64 concurrent requests (per day and per minute; the same check runs on TLS Redis and on
//! a Redis Cluster in their own files), one tenant's exhaustion leaves another served, work that
//! could never fit is refused with 413, and UniNLU is charged exactly the token positions its batches
//! ran, while a maximal UniNLU request is refused before any model work.

use futures::future::join_all;
use nlu_crds::access::redis_client::RedisConnection;
use nlu_crds::access::{RedisKeys, TenantRecord};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::harness::*;

/// A real server on a tiny fixture model (a name of `../shared/fixtures`, or a folder path)
/// with `--auth jwt`; returns its base URL once ready.
pub async fn serve(
    model: &str,
    task: &str,
    redis: &str,
    keys: &Keys,
    prefix: &str,
    extra: &[&str],
) -> String {
    let model = if model.contains('/') {
        model.to_owned()
    } else {
        tiny_model(model)
    };
    let args: Vec<String> = ["--model", &model, "--task", task]
        .into_iter()
        .chain(extra.iter().copied())
        .map(String::from)
        .chain(jwt_flags(redis, keys, prefix))
        .collect();
    let base = format!("http://127.0.0.1:{}", real_server(&args).await);
    let client = reqwest::Client::new();
    eventually(120, "ready", || async {
        client
            .get(format!("{base}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status() == StatusCode::OK)
    })
    .await;
    base
}

pub async fn post(base: &str, path: &str, token: &str, body: &Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{base}{path}"))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .unwrap()
}

pub fn header(r: &reqwest::Response, name: &str) -> u64 {
    r.headers()[name].to_str().unwrap().parse().unwrap()
}

/// `field` of the tenant's usage hash for today.
pub async fn used(conn: &mut RedisConnection, prefix: &str, tenant: &str, field: &str) -> u64 {
    let key =
        RedisKeys::new(prefix).usage(&tenant.parse().unwrap(), chrono::Utc::now().date_naive());
    let value: Option<u64> = redis::cmd("HGET")
        .arg(key)
        .arg(field)
        .query_async(conn)
        .await
        .unwrap();
    value.unwrap_or(0)
}

const TEXT: &str = "The quick brown fox jumps over the lazy dog near the river bank.";

/// Sends 64 identical embeddings requests of `tenant` at once, with 16 of an unlimited tenant
/// among them; returns the limited tenant's responses (the others must all be served).
async fn burst(base: &str, keys: &Keys, tenant: &str, other: &str) -> Vec<reqwest::Response> {
    let body = json!({"input": TEXT});
    let (token, other_token) = (keys.token(tenant), keys.token(other));
    let limited = join_all((0..64).map(|_| post(base, "/v1/embeddings", &token, &body)));
    let others = join_all((0..16).map(|_| post(base, "/v1/embeddings", &other_token, &body)));
    let (limited, others) = tokio::join!(limited, others);
    for r in &others {
        assert_eq!(
            r.status(),
            StatusCode::OK,
            "the other tenant is served throughout"
        );
    }
    limited
}

/// One request's cost, as OpenAI's `usage` reports the tokens the model ran.
async fn cost_of_text(base: &str, keys: &Keys, tenant: &str) -> u64 {
    let r = post(
        base,
        "/v1/embeddings",
        &keys.token(tenant),
        &json!({"input": TEXT}),
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    let cost = header(&r, "x-request-cost");
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body["usage"]["total_tokens"], cost,
        "the cost is the tokens the model ran"
    );
    cost
}

/// 64 concurrent requests of one tenant against each kind of limit (requests per day, tokens per
/// minute, tokens per day), with 16 of an unlimited tenant among them: exactly the requests that
/// fit are served, each sees its own charge, and the counters hold exactly what was admitted.
/// Run against every kind of Redis the server supports.
pub async fn quotas_are_exact_under_64_concurrent_requests(redis: &RedisTarget) {
    let keys = Keys::new();
    let prefix = unique_prefix();
    let other = "team-a/open";
    let mut conn = redis.conn();
    write_record(&mut conn, &prefix, other, &open_record()).await;
    let flags = redis.flags();
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let base = serve("gte-tiny", "embedding", &redis.url, &keys, &prefix, &flags).await;
    let cost = cost_of_text(&base, &keys, other).await;
    assert!(cost > 5, "the text has tokens: {cost}");
    // Room for 20 requests and most of another one, which must not squeeze in.
    let token_limit = 20 * cost + cost / 2;
    /// One kind of limit: the tenant that has it, the header suffix that reports it, what one
    /// request charges against it, the refusal's code, and the requests counted in the end (the
    /// script counts a request before it charges its tokens, so a refusal for tokens still
    /// counts as a request).
    struct Case {
        tenant: &'static str,
        field: fn(&mut TenantRecord) -> &mut u64,
        limit: u64,
        unit: &'static str,
        charge: u64,
        refusal: &'static str,
        requests: u64,
    }
    let cases = [
        Case {
            tenant: "team-a/requests",
            field: |r| &mut r.requests_per_day,
            limit: 20,
            unit: "",
            charge: 1,
            refusal: "quota_exceeded",
            requests: 20,
        },
        Case {
            tenant: "team-a/minute",
            field: |r| &mut r.tokens_per_minute,
            limit: token_limit,
            unit: "-tokens",
            charge: cost,
            refusal: "token_rate_limited",
            requests: 64,
        },
        Case {
            tenant: "team-a/day",
            field: |r| &mut r.tokens_per_day,
            limit: token_limit,
            unit: "-tokens",
            charge: cost,
            refusal: "token_quota_exceeded",
            requests: 64,
        },
    ];
    for Case {
        tenant,
        field,
        limit,
        unit,
        charge,
        refusal,
        requests,
    } in cases
    {
        let mut record = open_record();
        *field(&mut record) = limit;
        write_record(&mut conn, &prefix, tenant, &record).await;
        let responses = burst(&base, &keys, tenant, other).await;
        let (ok, refused): (Vec<_>, Vec<_>) = responses
            .into_iter()
            .partition(|r| r.status() == StatusCode::OK);
        assert_eq!((ok.len(), refused.len()), (20, 44), "{tenant}");
        let mut remaining: Vec<u64> = ok
            .iter()
            .map(|r| {
                assert_eq!(header(r, &format!("x-ratelimit-limit{unit}")), limit);
                header(r, &format!("x-ratelimit-remaining{unit}"))
            })
            .collect();
        remaining.sort_unstable();
        let expected: Vec<u64> = (1..=20).rev().map(|n| limit - n * charge).collect();
        assert_eq!(
            remaining, expected,
            "{tenant}: every admitted request saw its own charge"
        );
        for r in refused {
            assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
            assert_eq!(
                header(&r, &format!("x-ratelimit-remaining{unit}")),
                limit - 20 * charge
            );
            let retry = header(&r, "retry-after");
            assert!((1..=86_400).contains(&retry), "{retry}");
            assert_eq!(error_code(r).await, refusal);
        }
        assert_eq!(
            used(&mut conn, &prefix, tenant, "tokens").await,
            20 * cost,
            "{tenant}"
        );
        assert_eq!(
            used(&mut conn, &prefix, tenant, "requests").await,
            requests,
            "{tenant}"
        );
    }
}

#[tokio::test]
async fn quotas_are_exact_under_64_concurrent_requests_on_one_redis() {
    quotas_are_exact_under_64_concurrent_requests(&RedisTarget::new(shared_redis().url())).await;
}

#[tokio::test]
async fn work_that_can_never_fit_gets_413_and_costs_nothing() {
    let redis = shared_redis();
    let keys = Keys::new();
    let prefix = unique_prefix();
    let (tight, open) = ("team-a/tight", "team-a/open");
    put_record(&redis.url(), &prefix, open, &open_record()).await;
    let base = serve("gte-tiny", "embedding", &redis.url(), &keys, &prefix, &[]).await;
    let cost = cost_of_text(&base, &keys, open).await;
    let record = TenantRecord {
        tokens_per_minute: cost - 1,
        ..open_record()
    };
    put_record(&redis.url(), &prefix, tight, &record).await;
    let r = post(
        &base,
        "/v1/embeddings",
        &keys.token(tight),
        &json!({"input": TEXT}),
    )
    .await;
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(error_code(r).await, "request_too_costly");
    assert_eq!(
        used(&mut redis_conn(&redis.url()), &prefix, tight, "tokens").await,
        0
    );

    // The server's own ceiling applies before the tenant is charged.
    let ceiling = (cost - 1).to_string();
    let strict = serve(
        "gte-tiny",
        "embedding",
        &redis.url(),
        &keys,
        &prefix,
        &["--max-request-cost", &ceiling],
    )
    .await;
    let r = post(
        &strict,
        "/embed",
        &keys.token(open),
        &json!({"inputs": TEXT}),
    )
    .await;
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "request_too_costly");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("at least {cost}")) && message.contains(&ceiling),
        "{message}"
    );
}

/// Sum of the `nlu_batch_tokens` histogram: the token positions the model thread ran.
async fn batch_tokens(base: &str) -> u64 {
    let text = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("nlu_batch_tokens_sum "))
        .map_or(0.0, |v| v.parse::<f64>().unwrap()) as u64
}

#[tokio::test]
async fn rerank_is_charged_what_its_batches_ran() {
    let redis = shared_redis();
    let keys = Keys::new();
    let prefix = unique_prefix();
    let tenant = "team-a/rerank";
    put_record(&redis.url(), &prefix, tenant, &open_record()).await;
    let model = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/rerank/bert-reranker-tiny"
    );
    let base = serve(model, "rerank", &redis.url(), &keys, &prefix, &[]).await;

    let before = batch_tokens(&base).await;
    let body = json!({"query": "北京的天气", "documents": ["今天北京的天气很好。", TEXT]});
    let r = post(&base, "/v1/rerank", &keys.token(tenant), &body).await;
    assert_eq!(r.status(), StatusCode::OK);
    let cost = header(&r, "x-request-cost");
    let ran = batch_tokens(&base).await - before;
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["usage"]["total_tokens"], cost);
    assert!(cost > 20, "two pairs: {cost}");
    assert_eq!(
        cost, ran,
        "charged exactly the token positions the batches ran"
    );
    assert_eq!(
        used(&mut redis_conn(&redis.url()), &prefix, tenant, "tokens").await,
        cost
    );
}

#[tokio::test]
async fn uninlu_is_charged_what_its_batches_ran_and_a_maximal_request_is_refused_up_front() {
    let redis = shared_redis();
    let keys = Keys::new();
    let prefix = unique_prefix();
    let tenant = "team-a/nlu";
    put_record(&redis.url(), &prefix, tenant, &open_record()).await;
    let base = serve("uninlu-tiny", "uninlu", &redis.url(), &keys, &prefix, &[]).await;
    let token = keys.token(tenant);

    let before = batch_tokens(&base).await;
    let body = json!({
        "text": "1944年毕业于北大的名古屋铁道会长谷口清太郎等人在日本积极筹资。",
        "schema": {"人物": null, "地理位置": null, "组织机构": null}
    });
    let r = post(&base, "/api/predict", &token, &body).await;
    assert_eq!(r.status(), StatusCode::OK);
    let cost = header(&r, "x-request-cost");
    let ran = batch_tokens(&base).await - before;
    assert!(cost > 0);
    assert_eq!(
        cost, ran,
        "charged exactly the token positions the batches ran"
    );
    assert_eq!(
        used(&mut redis_conn(&redis.url()), &prefix, tenant, "tokens").await,
        cost
    );

    // 15 windows of text and 64 keys: hundreds of thousands of token positions.
    let schema: serde_json::Map<String, Value> =
        (0..64).map(|i| (format!("类型{i}"), Value::Null)).collect();
    let maximal = json!({"text": "中".repeat(5000), "schema": schema});
    let r = post(&base, "/api/predict", &token, &maximal).await;
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(error_code(r).await, "request_too_costly");
    assert_eq!(
        batch_tokens(&base).await - before,
        ran,
        "no model work ran for it"
    );
    assert_eq!(
        used(&mut redis_conn(&redis.url()), &prefix, tenant, "tokens").await,
        cost,
        "nor was it charged"
    );
}
