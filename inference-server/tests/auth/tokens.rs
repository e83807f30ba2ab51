//! Token and tenant checks: 401 for every bad token, 403 for tenants not allowed, rotation.

use base64::Engine;
use nlu_crds::access::{Claims, RedisKeys, Scope, SigningKey, TenantRecord};
use reqwest::StatusCode;

use crate::harness::*;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

async fn setup(tenant: &str, record: Option<TenantRecord>) -> (Keys, TestServer) {
    let redis = shared_redis();
    let keys = Keys::new();
    let prefix = unique_prefix();
    if let Some(record) = record {
        put_record(&redis.url(), &prefix, tenant, &record).await;
    }
    let server = TestServer::start(&auth_args(&redis.url(), &keys.jwks_path(), &prefix, &[])).await;
    (keys, server)
}

fn unsigned(header: serde_json::Value, claims: &Claims) -> String {
    format!(
        "{}.{}",
        B64.encode(header.to_string()),
        B64.encode(serde_json::to_vec(claims).unwrap())
    )
}

#[tokio::test]
async fn a_valid_token_passes_and_the_handler_sees_the_tenant() {
    let (keys, server) = setup(
        "team-a/ok",
        Some(TenantRecord {
            requests_per_day: 10,
            ..open_record()
        }),
    )
    .await;
    let response = server
        .call("/v1/embeddings", Some(&keys.token("team-a/ok")))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let header = |name: &str| response.headers()[name].to_str().unwrap().to_string();
    assert_eq!(
        (header("x-ratelimit-limit"), header("x-ratelimit-remaining")),
        ("10".into(), "9".into())
    );
    assert!(header("x-ratelimit-reset").parse::<u64>().unwrap() <= 86_400);
    assert_eq!(response.text().await.unwrap(), "team-a/ok");
}

#[tokio::test]
async fn bad_tokens_get_401() {
    let tenant = "team-a/bob";
    let (keys, server) = setup(
        tenant,
        Some(TenantRecord {
            gen: 2,
            ..open_record()
        }),
    )
    .await;
    let now = chrono::Utc::now().timestamp();
    let claims = Claims {
        gen: 2,
        ..Keys::claims(tenant)
    };
    let mint = |c: &Claims| keys.key.mint(c).unwrap();
    let good = mint(&claims);
    assert_eq!(
        server.call("/embed", Some(&good)).await.status(),
        StatusCode::OK,
        "control"
    );

    let stranger = SigningKey::generate();
    let forged = {
        let (signed_part, _) = good.rsplit_once('.').unwrap();
        let foreign = stranger.mint(&claims).unwrap();
        format!("{signed_part}.{}", foreign.rsplit_once('.').unwrap().1)
    };
    let hs256_with_public_key = {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        header.kid = Some(keys.key.kid().to_string());
        let secret = jsonwebtoken::EncodingKey::from_secret(keys.key.verifying_key().as_bytes());
        jsonwebtoken::encode(&header, &claims, &secret).unwrap()
    };
    let alg_none = format!(
        "{}.",
        unsigned(
            serde_json::json!({"alg": "none", "kid": keys.key.kid()}),
            &claims
        )
    );
    let with_crit = {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
        header.kid = Some(keys.key.kid().to_string());
        header.crit = Some(vec!["exp".into()]);
        let pem = keys.key.to_pkcs8_pem();
        let key = jsonwebtoken::EncodingKey::from_ed_pem(pem.as_bytes()).unwrap();
        jsonwebtoken::encode(&header, &claims, &key).unwrap()
    };
    let cases = [
        ("forged signature", forged),
        (
            "issued in the future",
            mint(&Claims {
                iat: now + 120,
                ..claims.clone()
            }),
        ),
        (
            "longer than --max-token-lifetime (default 8760h)",
            mint(&Claims {
                exp: claims.iat + 8760 * 3600 + 1,
                ..claims.clone()
            }),
        ),
        ("an unknown crit header", with_crit),
        (
            "larger than 8 KiB",
            mint(&Claims {
                jti: "x".repeat(9000),
                ..claims.clone()
            }),
        ),
        ("unknown key", stranger.mint(&claims).unwrap()),
        (
            "expired",
            mint(&Claims {
                exp: now - 120,
                ..claims.clone()
            }),
        ),
        (
            "not yet valid",
            mint(&Claims {
                nbf: now + 120,
                ..claims.clone()
            }),
        ),
        (
            "wrong issuer",
            mint(&Claims {
                iss: "someone-else".into(),
                ..claims.clone()
            }),
        ),
        (
            "wrong audience",
            mint(&Claims {
                aud: vec!["team-a/uninlu".into()],
                ..claims.clone()
            }),
        ),
        (
            "revoked gen",
            mint(&Claims {
                gen: 1,
                ..claims.clone()
            }),
        ),
        (
            // A Tenant of the same name deleted and created again: its record has a new uid.
            "another incarnation of the tenant",
            mint(&Claims {
                tid: "uid-of-the-deleted-tenant".into(),
                ..claims.clone()
            }),
        ),
        ("alg none", alg_none),
        ("HS256 with the public key as secret", hs256_with_public_key),
        ("truncated", good[..good.len() - 10].to_string()),
        ("garbage", "not-a-jwt".to_string()),
    ];
    for (what, token) in cases {
        let response = server.call("/embed", Some(&token)).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{what}");
        assert!(
            response.headers().contains_key("www-authenticate"),
            "{what}"
        );
        assert_eq!(error_code(response).await, "invalid_token", "{what}");
    }
}

#[tokio::test]
async fn missing_header_gets_401_with_a_bearer_challenge() {
    let (_keys, server) = setup("team-a/nobody", None).await;
    let response = server.call("/api/predict", None).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(response.headers()["www-authenticate"], "Bearer");
    assert_eq!(error_code(response).await, "missing_token");
    let basic = server
        .client
        .post(format!("{}/api/predict", server.base))
        .basic_auth("u", Some("p"))
        .send()
        .await
        .unwrap();
    assert_eq!(basic.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn tenants_not_allowed_get_403() {
    let redis = shared_redis();
    let keys = Keys::new();
    let prefix = unique_prefix();
    let records = [
        (
            "team-a/suspended",
            TenantRecord {
                enabled: false,
                ..open_record()
            },
        ),
        (
            "team-a/predict-only",
            TenantRecord {
                scopes: vec![Scope::Predict],
                ..open_record()
            },
        ),
        (
            "team-a/other-service",
            TenantRecord {
                services: vec!["uninlu".into()],
                ..open_record()
            },
        ),
        (
            "team-a/this-service",
            TenantRecord {
                services: vec!["uninlu".into(), "gte".into()],
                ..open_record()
            },
        ),
    ];
    for (tenant, record) in &records {
        put_record(&redis.url(), &prefix, tenant, record).await;
    }
    let server = TestServer::start(&auth_args(&redis.url(), &keys.jwks_path(), &prefix, &[])).await;
    let embed_only = |tenant: &str| {
        let req = nlu_crds::access::TokenRequest {
            scopes: vec![Scope::Embed],
            ..Keys::request(tenant)
        };
        req.mint(&keys.key).unwrap().0
    };

    let cases = [
        (
            "team-a/suspended",
            keys.token("team-a/suspended"),
            "/embed",
            "tenant_suspended",
        ),
        (
            "missing record",
            keys.token("team-a/ghost"),
            "/embed",
            "unknown_tenant",
        ),
        (
            "record narrows scope",
            keys.token("team-a/predict-only"),
            "/embed",
            "scope_not_granted",
        ),
        (
            "token narrows scope",
            embed_only("team-a/this-service"),
            "/api/predict",
            "scope_not_granted",
        ),
        (
            "token without rerank",
            embed_only("team-a/this-service"),
            "/rerank",
            "scope_not_granted",
        ),
        (
            "record without rerank",
            keys.token("team-a/predict-only"),
            "/v1/rerank",
            "scope_not_granted",
        ),
        (
            "service not granted",
            keys.token("team-a/other-service"),
            "/similarity",
            "service_not_granted",
        ),
        (
            "other namespace",
            keys.token("team-b/this-service"),
            "/embed",
            "service_not_granted",
        ),
    ];
    for (what, token, path, code) in cases {
        let response = server.call(path, Some(&token)).await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{what}");
        assert_eq!(error_code(response).await, code, "{what}");
    }
    let allowed = server
        .call("/similarity", Some(&keys.token("team-a/this-service")))
        .await;
    assert_eq!(allowed.status(), StatusCode::OK, "listed service");
}

#[tokio::test]
async fn a_new_key_is_picked_up_without_restart_and_the_old_one_keeps_working() {
    let tenant = "team-a/rotating";
    let (keys, server) = setup(tenant, Some(open_record())).await;
    let old_token = keys.token(tenant);
    let new_key = SigningKey::generate();
    let new_token = Keys::request(tenant).mint(&new_key).unwrap().0;
    assert_eq!(
        server.call("/embed", Some(&new_token)).await.status(),
        StatusCode::UNAUTHORIZED
    );

    keys.publish(&[&keys.key, &new_key]);
    eventually(10, "the new key is accepted", || async {
        server.call("/embed", Some(&new_token)).await.status() == StatusCode::OK
    })
    .await;
    assert_eq!(
        server.call("/embed", Some(&old_token)).await.status(),
        StatusCode::OK,
        "both keys in the set"
    );

    keys.publish(&[&new_key]);
    eventually(10, "the retired key is refused", || async {
        server.call("/embed", Some(&old_token)).await.status() == StatusCode::UNAUTHORIZED
    })
    .await;
}

#[tokio::test]
async fn damaged_records_are_refused_for_their_tenant_only() {
    let redis = shared_redis();
    let keys = Keys::new();
    let prefix = unique_prefix();
    put_record(&redis.url(), &prefix, "team-a/fine", &open_record()).await;
    let args = auth_args(&redis.url(), &keys.jwks_path(), &prefix, &[]);
    let server = TestServer::start(&args).await;
    let full: Vec<(&str, String)> = open_record().to_fields();
    // Each case: the full record with one field removed or replaced by a non-number. The
    // usage retention and the identity fingerprint are optional (records of older operators
    // lack them), so only the retention's values are.
    let optional = "usage_retention_days";
    let mut cases: Vec<(String, Vec<(&str, String)>)> = Vec::new();
    let required = |n: &str| n != optional && n != "identity";
    for (i, (name, _)) in full.iter().enumerate().filter(|(_, (n, _))| required(n)) {
        let mut missing = full.clone();
        missing.remove(i);
        cases.push((format!("without {name}"), missing));
    }
    for (name, bad) in [
        ("enabled", "yes"),
        ("requests_per_day", "ten"),
        ("requests_per_minute", "-1"),
        ("requests_per_minute", "1e3"),
        ("tokens_per_day", "many"),
        ("tokens_per_minute", "0x10"),
        ("max_concurrent_requests", "1.5"),
        ("max_concurrent_requests", ""),
        ("gen", "2.5"),
        ("gen", "123456789012345678901"),
        (optional, "0"),
        (optional, "367"),
        (optional, "35d"),
    ] {
        let mut damaged = full.clone();
        damaged.iter_mut().find(|(n, _)| *n == name).unwrap().1 = bad.to_owned();
        cases.push((format!("{name} = {bad}"), damaged));
    }
    let key = |tenant: &str| RedisKeys::new(&prefix).tenant(&tenant.parse().unwrap());
    let mut conn = redis_conn(&redis.url());
    for (i, (what, fields)) in cases.iter().enumerate() {
        let tenant = format!("team-a/damaged-{i}");
        let _: () = redis::cmd("HSET")
            .arg(key(&tenant))
            .arg(fields)
            .query_async(&mut conn)
            .await
            .unwrap();
        let response = server.call("/embed", Some(&keys.token(&tenant))).await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{what}");
        assert_eq!(
            error_code(response).await,
            "invalid_tenant_record",
            "{what}"
        );
    }
    // Everybody else is served and the server stays ready; a record without the retention
    // too (the default applies).
    let fine = server
        .call("/embed", Some(&keys.token("team-a/fine")))
        .await;
    assert_eq!(fine.status(), StatusCode::OK);
    let older: Vec<(&str, String)> = full
        .iter()
        .filter(|(n, _)| *n != optional)
        .cloned()
        .collect();
    let _: () = redis::cmd("HSET")
        .arg(key("team-a/older"))
        .arg(older)
        .query_async(&mut conn)
        .await
        .unwrap();
    let older = server
        .call("/embed", Some(&keys.token("team-a/older")))
        .await;
    assert_eq!(
        older.status(),
        StatusCode::OK,
        "a record without the retention"
    );
    assert_eq!(server.get("/readyz").await.status(), StatusCode::OK);
    let metrics = server.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains(r#"outcome="invalid_tenant_record""#),
        "refusals counted: {metrics}"
    );
}

#[tokio::test]
async fn generations_beyond_2_pow_53_still_revoke() {
    // 2^53 + 1 is 2^53 as a double: compared as numbers, gen 2^53 would pass.
    let record_gen = (1u64 << 53) + 1;
    let tenant = "team-a/big-gen";
    let (keys, server) = setup(
        tenant,
        Some(TenantRecord {
            gen: record_gen,
            ..open_record()
        }),
    )
    .await;
    let token = |gen: u64| {
        keys.key
            .mint(&Claims {
                gen,
                ..Keys::claims(tenant)
            })
            .unwrap()
    };
    let older = server.call("/embed", Some(&token(record_gen - 1))).await;
    assert_eq!(older.status(), StatusCode::UNAUTHORIZED);
    for current in [record_gen, u64::MAX] {
        let response = server.call("/embed", Some(&token(current))).await;
        assert_eq!(response.status(), StatusCode::OK, "gen {current}");
    }
}
