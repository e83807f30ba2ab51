//! The issue's done-when list, one test each.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use kube::runtime::controller::Action;

use kube::ResourceExt;
use nlu_crds::access::redis_keys::field;
use nlu_crds::access::{QualifiedName, QuotaOutcome, RedisKeys, Scope, TokenError, UninluTask};
use nlu_crds::conditions::{is_true, QUOTA_EXCEEDED, READY, SUSPENDED};
use nlu_crds::tenant::UsageDay;
use nlu_operator::config::OperatorConfig;
use nlu_operator::tenant::signing_key::{
    self, KeyChange, KeyError, KeyRing, REVOKE_OLD_ANNOTATION, ROTATED_ANNOTATION,
    ROTATE_ANNOTATION, SIGNING_KEY_SECRET,
};
use nlu_operator::tenant::{controller, redis_sync, usage_report, FINALIZER};
use redis::Commands;
use serde_json::json;

use crate::env::{claims_of, secret_path, tenant_path, Env, Refused, NS};
use crate::harness::redis_conn;

fn acme() -> QualifiedName {
    QualifiedName::new(NS, "acme").unwrap()
}

/// The quota script's answers to `count` embedding calls of `token` to `team/gte`.
fn embed_calls(env: &Env, token: &str, count: usize) -> Vec<QuotaOutcome> {
    (0..count)
        .map(|_| {
            env.server_decision(token, "team/gte", Scope::Embed)
                .unwrap()
        })
        .collect()
}

fn record(env: &Env) -> HashMap<String, String> {
    redis_conn(&env.redis)
        .hgetall(RedisKeys::default().tenant(&acme()))
        .unwrap()
}

#[tokio::test]
async fn token_is_accepted_for_its_services_and_scopes_only() {
    let mut env = Env::new().await;
    env.service("gte", "https://gte.example.com");
    env.create_tenant("acme", json!({"services": ["gte", "uninlu"], "scopes": ["embed"], "quota": {"requestsPerDay": 100}}));
    env.settle("acme").await;
    let token = env.token("acme");

    let claims = claims_of(&env, &token, "team/gte");
    assert_eq!(claims.sub, "team/acme");
    assert_eq!(claims.aud, ["team/gte", "team/uninlu"]);
    assert_eq!(claims.scope, [Scope::Embed]);
    assert_eq!(claims.gen, 1);
    assert_eq!(claims.exp - claims.iat, 720 * 3600, "default TTL");

    assert!(matches!(
        env.server_decision(&token, "team/gte", Scope::Embed),
        Ok(QuotaOutcome::Allowed(_))
    ));
    assert!(matches!(
        env.server_decision(&token, "team/uninlu", Scope::Embed),
        Ok(QuotaOutcome::Allowed(_))
    ));
    assert_eq!(
        env.server_decision(&token, "team/gte", Scope::Predict),
        Err(Refused::ScopeClaim)
    );
    assert_eq!(
        env.server_decision(&token, "team/bert", Scope::Embed),
        Err(Refused::Token(TokenError::WrongAudience))
    );
    assert_eq!(
        env.server_decision(&token, "other/gte", Scope::Embed),
        Err(Refused::Token(TokenError::WrongAudience))
    );

    // The Redis record narrows as the spec does, independently of the token's claims.
    let r = record(&env);
    assert_eq!(
        (
            r[field::ENABLED].as_str(),
            r[field::SCOPES].as_str(),
            r[field::SERVICES].as_str()
        ),
        ("1", "embed", "gte,uninlu")
    );
    assert_eq!(
        (
            r[field::REQUESTS_PER_DAY].as_str(),
            r[field::REQUESTS_PER_MINUTE].as_str(),
            r[field::GEN].as_str()
        ),
        ("100", "0", "1")
    );

    let status = env.tenant("acme").status.unwrap();
    assert!(is_true(&status.conditions, READY));
    assert_eq!(status.token_secret_name.as_deref(), Some("acme-token"));
    assert_eq!(status.token_expires_at.unwrap().0.as_second(), claims.exp);
    assert_eq!(status.observed_generation, Some(1));
    assert!(env
        .tenant("acme")
        .finalizers()
        .contains(&FINALIZER.to_owned()));
    assert_eq!(env.api.event_reasons(), ["TokenIssued"]);
}

/// A Tenant narrowed to one UniNLU task: its token and record carry the task scope, which
/// reaches the UniNLU routes (where the server then checks each request's task) and no other.
#[tokio::test]
async fn a_per_task_scope_reaches_the_uninlu_routes_only() {
    let env = Env::new().await;
    env.create_tenant(
        "acme",
        json!({"services": ["uninlu"], "scopes": ["predict:ner"]}),
    );
    env.settle("acme").await;
    let token = env.token("acme");
    let ner = Scope::PredictTask(UninluTask::Ner);
    assert_eq!(claims_of(&env, &token, "team/uninlu").scope, [ner]);
    assert_eq!(record(&env)[field::SCOPES], "predict:ner");
    assert!(matches!(
        env.server_decision(&token, "team/uninlu", Scope::Predict),
        Ok(QuotaOutcome::Allowed(_))
    ));
    assert_eq!(
        env.server_decision(&token, "team/uninlu", Scope::Embed),
        Err(Refused::ScopeClaim)
    );
}

#[tokio::test]
async fn the_secret_holds_only_the_token_and_service_urls() {
    let mut env = Env::new().await;
    env.service("gte", "https://gte.example.com");
    env.create_tenant("acme", json!({"services": ["gte", "uninlu"]}));
    env.settle("acme").await;

    let secret = env.secret("acme");
    let data = secret.data.clone().unwrap();
    assert_eq!(
        data.keys().collect::<Vec<_>>(),
        ["token", "url.gte"],
        "uninlu has no URL yet"
    );
    assert_eq!(data["url.gte"].0, b"https://gte.example.com");
    let pem = env.ring.borrow().signing.to_pkcs8_pem();
    let key_body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    for value in data.values() {
        let text = String::from_utf8_lossy(&value.0);
        assert!(
            !text.contains("PRIVATE KEY") && !text.contains(&key_body),
            "private key material in the Secret"
        );
    }
    let owner = &secret.owner_references()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str(), owner.controller),
        ("Tenant", "acme", Some(true))
    );

    // Applied with the operator's field manager, forced.
    let apply = env
        .api
        .calls()
        .into_iter()
        .find(|r| r.method == "PATCH" && r.path == secret_path("acme-token"))
        .unwrap();
    assert_eq!(
        apply.content_type.as_deref(),
        Some("application/apply-patch+yaml")
    );
    assert!(
        apply.query.contains("fieldManager=nlu-operator") && apply.query.contains("force=true"),
        "{}",
        apply.query
    );

    // A URL appearing later is added without a new token.
    let token = env.token("acme");
    env.service("uninlu", "https://uninlu.example.com");
    env.settle("acme").await;
    assert_eq!(
        env.secret("acme").data.unwrap().keys().collect::<Vec<_>>(),
        ["token", "url.gte", "url.uninlu"]
    );
    assert_eq!(env.token("acme"), token);
}

#[tokio::test]
async fn suspend_then_resume_flips_enabled_in_redis() {
    let env = Env::new().await;
    env.create_tenant("acme", json!({"services": ["gte"]}));
    env.settle("acme").await;
    let token = env.token("acme");
    assert_eq!(record(&env)[field::ENABLED], "1");

    env.edit_spec("acme", |s| s["suspended"] = json!(true));
    env.settle("acme").await;
    assert_eq!(record(&env)[field::ENABLED], "0");
    assert_eq!(
        env.server_decision(&token, "team/gte", Scope::Embed),
        Ok(QuotaOutcome::Suspended)
    );
    let status = env.tenant("acme").status.unwrap();
    assert!(is_true(&status.conditions, SUSPENDED));
    assert_eq!(status.observed_generation, Some(2));
    assert_eq!(env.token("acme"), token, "suspension keeps the token");

    env.edit_spec("acme", |s| s["suspended"] = json!(false));
    env.settle("acme").await;
    assert_eq!(record(&env)[field::ENABLED], "1");
    assert!(matches!(
        env.server_decision(&token, "team/gte", Scope::Embed),
        Ok(QuotaOutcome::Allowed(_))
    ));
    assert!(!is_true(
        &env.tenant("acme").status.unwrap().conditions,
        SUSPENDED
    ));
    assert_eq!(
        env.api.event_reasons(),
        ["TokenIssued", "Suspended", "Resumed"]
    );
}

#[tokio::test]
async fn usage_appears_in_status_throttled_to_once_a_minute() {
    let env = Env::new().await;
    env.create_tenant(
        "acme",
        json!({"services": ["gte"], "quota": {"requestsPerDay": 5}}),
    );
    env.settle("acme").await;
    let token = env.token("acme");
    let today = chrono::Utc::now()
        .date_naive()
        .format("%Y-%m-%d")
        .to_string();
    let usage = env.tenant("acme").status.unwrap().usage.unwrap();
    assert_eq!(
        (usage.date.as_str(), usage.requests, usage.remaining),
        (today.as_str(), 0, Some(5))
    );

    for _ in 0..3 {
        assert!(matches!(
            env.server_decision(&token, "team/gte", Scope::Embed),
            Ok(QuotaOutcome::Allowed(_))
        ));
    }
    // Shown usage is less than a minute old: no status write.
    let status_writes = || {
        env.api
            .calls()
            .iter()
            .filter(|r| r.path.ends_with("/status"))
            .count()
    };
    let before = status_writes();
    env.settle("acme").await;
    assert_eq!(status_writes(), before);
    assert_eq!(
        env.tenant("acme").status.unwrap().usage.unwrap().requests,
        0
    );

    // A fresh context has shown nothing yet, so it refreshes (as a reconcile a minute later does).
    for _ in 0..2 {
        env.server_decision(&token, "team/gte", Scope::Embed)
            .unwrap();
    }
    let ctx = env.fresh_context().await;
    nlu_operator::tenant::controller::reconcile(Arc::new(env.tenant("acme")), ctx)
        .await
        .unwrap();
    let status = env.tenant("acme").status.unwrap();
    let usage = status.usage.unwrap();
    assert_eq!((usage.requests, usage.remaining), (5, Some(0)));
    assert!(is_true(&status.conditions, QUOTA_EXCEEDED));
    assert!(matches!(
        env.server_decision(&token, "team/gte", Scope::Embed),
        Ok(QuotaOutcome::DailyQuotaExceeded(_))
    ));
}

/// Done-when of issue 19 (usage history): what was served on day D, refusals included, is read
/// back on D + 1 from `status.usage.history` and from `nlu-operator usage`.
#[tokio::test]
async fn yesterdays_usage_survives_the_day_boundary_in_status_and_the_usage_report() {
    let env = Env::new().await;
    env.create_tenant(
        "acme",
        json!({"services": ["gte"], "quota": {"requestsPerDay": 2}}),
    );
    env.settle("acme").await;
    assert_eq!(record(&env)[field::USAGE_RETENTION_DAYS], "35");
    let token = env.token("acme");
    let served = env.today();
    assert!(matches!(
        embed_calls(&env, &token, 3)[..],
        [
            QuotaOutcome::Allowed(_),
            QuotaOutcome::Allowed(_),
            QuotaOutcome::DailyQuotaExceeded(_)
        ]
    ));
    let keys = RedisKeys::default();
    let ttl: i64 = redis_conn(&env.redis)
        .ttl(keys.usage(&acme(), served))
        .unwrap();
    assert!(ttl > 34 * 86_400, "kept for the retention, not {ttl} s");

    env.advance(86_400);
    assert_eq!(env.today(), served.succ_opt().unwrap());
    env.settle("acme").await;
    let usage = env.tenant("acme").status.unwrap().usage.unwrap();
    assert_eq!(
        (usage.date, usage.requests),
        (env.today().to_string(), 0),
        "a new day"
    );
    assert_eq!(
        usage.history,
        [UsageDay {
            date: served.to_string(),
            requests: 2,
            tokens: 0,
            refused: BTreeMap::from([("requests_per_day".into(), 1)]),
        }],
        "yesterday in status"
    );

    let mut conn = redis_sync::connect(&env.redis.url(), None).unwrap();
    let rows = usage_report::read(&mut conn, &keys, &acme(), served, env.today())
        .await
        .unwrap();
    assert_eq!(
        usage_report::render(&rows, usage_report::Format::Csv),
        format!(
            "date,requests,tokens,refused_requests_per_day\n{served},2,0,1\n{},0,0,0\n",
            env.today()
        ),
        "yesterday in `nlu-operator usage`"
    );
}

/// Issue 19 (usage metrics): what the servers counted in Redis reaches the operator's metrics
/// per tenant, for no more than `--usage-metrics-tenants` tenants; the others are counted.
#[tokio::test]
async fn usage_counted_in_redis_is_exported_per_tenant_within_the_bound() {
    let env = Env::new().await;
    env.create_tenant(
        "acme",
        json!({"services": ["gte"], "quota": {"requestsPerDay": 1}}),
    );
    env.create_tenant("zeta", json!({"services": ["gte"]}));
    let config = OperatorConfig {
        usage_metrics_tenants: 1,
        ..OperatorConfig::default()
    };
    let ctx = env.context_with(config).await;
    let reconcile = |name: &'static str| {
        let ctx = ctx.clone();
        let tenant = Arc::new(env.tenant(name));
        async move { controller::reconcile(tenant, ctx).await.unwrap() }
    };
    for _ in 0..2 {
        reconcile("acme").await;
    }
    let token = env.token("acme");
    assert!(matches!(
        embed_calls(&env, &token, 2)[..],
        [
            QuotaOutcome::Allowed(_),
            QuotaOutcome::DailyQuotaExceeded(_)
        ]
    ));
    reconcile("acme").await;
    // The first pass only adds the finalizer.
    for _ in 0..2 {
        reconcile("zeta").await;
    }

    let text = ctx.base.metrics.encode();
    for line in [
        format!(r#"nlu_operator_tenant_requests_total{{tenant="{NS}/acme"}} 1"#),
        format!(
            r#"nlu_operator_tenant_refused_total{{tenant="{NS}/acme",reason="requests_per_day"}} 1"#
        ),
        "nlu_operator_tenant_usage_unexported 1".to_owned(),
    ] {
        assert!(text.contains(&line), "{line} in\n{text}");
    }
    assert!(!text.contains("zeta"), "over the bound: {text}");
}

/// `--usage-retention-days` reaches the record, and the quota script keeps each day that long.
#[tokio::test]
async fn the_operators_usage_retention_sets_how_long_a_day_is_kept() {
    let env = Env::new().await;
    env.create_tenant("acme", json!({"services": ["gte"], "suspended": true}));
    let config = OperatorConfig {
        usage_retention_days: 3,
        ..OperatorConfig::default()
    };
    let ctx = env.context_with(config).await;
    for _ in 0..2 {
        controller::reconcile(Arc::new(env.tenant("acme")), ctx.clone())
            .await
            .unwrap();
    }
    assert_eq!(record(&env)[field::USAGE_RETENTION_DAYS], "3");
    assert!(matches!(
        env.server_decision(&env.token("acme"), "team/gte", Scope::Embed),
        Ok(QuotaOutcome::Suspended)
    ));
    let usage = RedisKeys::default().usage(&acme(), env.today());
    let mut conn = redis_conn(&env.redis);
    let ttl: i64 = conn.ttl(&usage).unwrap();
    assert!((2 * 86_400..=3 * 86_400).contains(&ttl), "{ttl} s");
    let refused: Option<u64> = conn.hget(&usage, "refused:suspended").unwrap();
    assert_eq!(refused, Some(1), "the refusal is counted by reason");
}

#[tokio::test]
async fn revocation_makes_older_tokens_stale_once_per_request() {
    let env = Env::new().await;
    env.create_tenant("acme", json!({"services": ["gte"]}));
    env.settle("acme").await;
    let old = env.token("acme");

    env.annotate("acme", "nlu.dev/revoke", "2026-11-23T12:00:00Z");
    env.settle("acme").await;
    assert_eq!(record(&env)[field::GEN], "2");
    assert_eq!(
        env.server_decision(&old, "team/gte", Scope::Embed),
        Ok(QuotaOutcome::Revoked)
    );
    let new = env.token("acme");
    assert_eq!(claims_of(&env, &new, "team/gte").gen, 2);
    assert!(matches!(
        env.server_decision(&new, "team/gte", Scope::Embed),
        Ok(QuotaOutcome::Allowed(_))
    ));
    // Counted in status, where only the operator writes.
    let status = env.tenant("acme").status.unwrap();
    assert_eq!(
        (status.revocations, status.revoke_handled.as_deref()),
        (Some(1), Some("2026-11-23T12:00:00Z"))
    );

    // Settled above: the same annotation is not counted again.
    env.reconcile("acme").await.unwrap();
    assert_eq!(record(&env)[field::GEN], "2");

    // Raising spec.token.generation revokes too.
    env.edit_spec("acme", |s| s["token"] = json!({"generation": 3}));
    env.settle("acme").await;
    assert_eq!(
        record(&env)[field::GEN],
        "4",
        "generation 3 plus one revocation"
    );
    assert_eq!(
        env.server_decision(&new, "team/gte", Scope::Embed),
        Ok(QuotaOutcome::Revoked)
    );
    // The second re-issue is recorded as a repeat (series) of the first Event, as kube's recorder does.
    assert_eq!(
        env.api.event_reasons(),
        ["TokenIssued", "Revoked", "TokenReissued"]
    );
    let repeats = env
        .api
        .calls()
        .into_iter()
        .filter(|r| r.method == "PATCH" && r.path.contains("/events/"))
        .count();
    assert_eq!(repeats, 1);
}

#[tokio::test]
async fn the_operators_max_token_ttl_caps_every_tenants_ttl() {
    let env = Env::new().await;
    env.create_tenant(
        "acme",
        json!({"services": ["gte"], "token": {"ttl": "8760h"}}),
    );
    let capped = env
        .context_with(nlu_operator::config::OperatorConfig {
            max_token_ttl: Duration::from_secs(3600),
            ..Default::default()
        })
        .await;
    for _ in 0..3 {
        controller::reconcile(Arc::new(env.tenant("acme")), capped.clone())
            .await
            .unwrap();
    }
    let claims = claims_of(&env, &env.token("acme"), "team/gte");
    assert_eq!(claims.exp - claims.iat, 3600);
}

#[tokio::test]
async fn hostile_metadata_cannot_lower_the_generation() {
    let env = Env::new().await;
    env.create_tenant("acme", json!({"services": ["gte"]}));
    env.settle("acme").await;
    env.annotate("acme", "nlu.dev/revoke", "first");
    env.settle("acme").await;
    let current = env.token("acme");
    assert_eq!(record(&env)[field::GEN], "2");
    // What a namespace editor can write: the annotations older operators counted with, set to
    // zero or to a value that once wrapped the sum to 0.
    for (count, handled) in [("0", "other"), ("18446744073709551615", "first")] {
        env.annotate("acme", "nlu.dev/revocations", count);
        env.annotate("acme", "nlu.dev/revoke-handled", handled);
        env.settle("acme").await;
        assert_eq!(record(&env)[field::GEN], "2", "{count}");
        assert!(matches!(
            env.server_decision(&current, "team/gte", Scope::Embed),
            Ok(QuotaOutcome::Allowed(_))
        ));
    }
    // Even a status rewritten by someone who may (a cluster admin) does not lower Redis.
    env.api.edit(&tenant_path("acme"), |t| {
        t["status"]["revocations"] = json!(0)
    });
    env.settle("acme").await;
    assert_eq!(record(&env)[field::GEN], "2");
}

#[tokio::test]
async fn a_tenant_deleted_and_created_again_revokes_the_old_tokens() {
    let env = Env::new().await;
    env.create_tenant("acme", json!({"services": ["gte"]}));
    env.settle("acme").await;
    let old = env.token("acme");
    assert_eq!(claims_of(&env, &old, "team/gte").tid, "uid-acme");

    // Deleted (the finalizer removes the keys) and created again under the same name: the API
    // server gives it a new uid.
    env.api.edit(&tenant_path("acme"), |t| {
        t["metadata"]["deletionTimestamp"] = json!("2026-11-23T12:00:00Z")
    });
    env.reconcile("acme").await.unwrap();
    env.create_tenant("acme", json!({"services": ["gte"]}));
    env.api.edit(&tenant_path("acme"), |t| {
        t["metadata"]["uid"] = json!("uid-acme-2")
    });
    // The old token Secret (controlled by the old uid) is not adopted; the garbage collector
    // removes it once its owner is gone.
    env.settle("acme").await;
    assert_eq!(record(&env)[field::UID], "uid-acme-2");
    env.api.remove(&secret_path("acme-token"));
    env.settle("acme").await;
    assert_eq!(
        env.server_decision(&old, "team/gte", Scope::Embed),
        Ok(QuotaOutcome::Revoked),
        "same name and generation, another Tenant"
    );
    let new = env.token("acme");
    assert_eq!(claims_of(&env, &new, "team/gte").tid, "uid-acme-2");
    assert!(matches!(
        env.server_decision(&new, "team/gte", Scope::Embed),
        Ok(QuotaOutcome::Allowed(_))
    ));
}

#[tokio::test]
async fn deletion_removes_the_redis_keys_and_retries_while_redis_is_down() {
    let mut env = Env::new().await;
    env.create_tenant(
        "acme",
        json!({"services": ["gte"], "quota": {"requestsPerMinute": 10}}),
    );
    env.create_tenant("acme-b", json!({"services": ["gte"]}));
    env.settle("acme").await;
    env.settle("acme-b").await;
    let token = env.token("acme");
    env.server_decision(&token, "team/gte", Scope::Embed)
        .unwrap();
    let keys = |env: &Env| -> Vec<String> {
        let mut k: Vec<String> = redis_conn(&env.redis).keys("nlu:*").unwrap();
        k.sort();
        k
    };
    let today = chrono::Utc::now().date_naive();
    let (acme, acme_b) = ("team/acme".parse().unwrap(), "team/acme-b".parse().unwrap());
    let named = RedisKeys::default();
    let sorted = |mut k: Vec<String>| {
        k.sort();
        k
    };
    assert_eq!(
        keys(&env),
        sorted(vec![
            named.rate(&acme),
            named.tenant(&acme),
            named.usage(&acme, today),
            named.tenant(&acme_b),
        ])
    );

    env.api.edit(&tenant_path("acme"), |t| {
        t["metadata"]["deletionTimestamp"] = json!(chrono::Utc::now().to_rfc3339())
    });
    env.redis.stop();
    let err = env.reconcile("acme").await.unwrap_err();
    assert_eq!(err.reason(), "Redis", "{err}");
    let retry = controller::error_policy(Arc::new(env.tenant("acme")), &err, env.ctx.clone());
    assert_eq!(
        retry,
        Action::requeue(Duration::from_secs(2)),
        "retried with backoff"
    );
    assert!(
        env.tenant("acme")
            .finalizers()
            .contains(&FINALIZER.to_owned()),
        "finalizer kept while Redis is down"
    );

    // Redis returns. It runs without persistence, so put the keys back as a persistent Redis
    // would still hold them: the point is that cleanup now runs and removes them.
    env.redis.restart();
    // Every key a tenant can have, yesterday's usage and the token limiter included.
    let mut conn = redis_conn(&env.redis);
    for k in named.all(&acme, today) {
        let _: () = conn.set(k, "1").unwrap();
    }
    let _: () = conn.hset(named.tenant(&acme_b), "enabled", "1").unwrap();
    env.reconcile("acme").await.unwrap();
    assert_eq!(
        keys(&env),
        [named.tenant(&acme_b)],
        "only the other tenant's record is left"
    );
    assert!(
        env.tenant("acme").finalizers().is_empty(),
        "finalizer removed"
    );
}

#[tokio::test]
async fn a_deleted_tenant_is_let_go_when_redis_stays_away() {
    let mut env = Env::new().await;
    env.create_tenant("acme", json!({"services": ["gte"]}));
    env.settle("acme").await;
    // Deleted 16 minutes ago, Redis still away: the namespace must not stay stuck.
    let deleted = chrono::Utc::now() - chrono::Duration::minutes(16);
    env.api.edit(&tenant_path("acme"), |t| {
        t["metadata"]["deletionTimestamp"] = json!(deleted.to_rfc3339())
    });
    env.redis.stop();
    env.reconcile("acme").await.unwrap();
    assert!(
        env.tenant("acme").finalizers().is_empty(),
        "finalizer removed"
    );
    assert!(env
        .api
        .event_reasons()
        .contains(&"RedisCleanupAbandoned".to_owned()));
}

#[tokio::test]
async fn key_rotation_keeps_earlier_tokens_valid_until_they_expire() {
    let env = Env::new().await;
    // The key Secret goes through the same sync the operator runs: created, then rotated on request.
    let key_api: kube::Api<k8s_openapi::api::core::v1::Secret> =
        kube::Api::namespaced(env.client.clone(), "nlu-system");
    let now = chrono::Utc::now();
    let (ring, change) = signing_key::sync(&key_api, now, Some(&[]), None)
        .await
        .unwrap();
    assert_eq!(change, signing_key::KeyChange::Created);
    env.ring.send_replace(ring);
    env.create_tenant("acme", json!({"services": ["gte"], "token": {"ttl": "2h"}}));
    env.settle("acme").await;
    let before = env.token("acme");
    let old_kid = env.ring.borrow().signing.kid().to_owned();

    let key_path = format!("/api/v1/namespaces/nlu-system/secrets/{SIGNING_KEY_SECRET}");
    env.api.edit(&key_path, |s| {
        s["metadata"]["annotations"] = json!({ROTATE_ANNOTATION: "1"})
    });
    // At start-up the tenants' token lifetimes are unknown: the request waits for them.
    let (_, deferred) = signing_key::sync(&key_api, now, None, None).await.unwrap();
    assert_eq!(deferred, signing_key::KeyChange::Unchanged);
    let tenants = [Arc::new(env.tenant("acme"))];
    let (ring, change) = signing_key::sync(&key_api, now, Some(&tenants), None)
        .await
        .unwrap();
    assert!(
        matches!(&change, signing_key::KeyChange::Rotated { old_kid: k, .. } if *k == old_kid),
        "{change:?}"
    );
    assert_eq!(
        env.api.get(&key_path).unwrap()["metadata"]["annotations"][ROTATED_ANNOTATION],
        "1"
    );
    let stored =
        KeyRing::from_secret(&serde_json::from_value(env.api.get(&key_path).unwrap()).unwrap())
            .unwrap();
    assert_eq!(
        stored.signing.kid(),
        ring.signing.kid(),
        "the rotation is persisted"
    );
    let retire_after = ring.next_retirement().unwrap();
    env.ring.send_replace(ring);
    // The same request is not handled twice.
    let (_, again) = signing_key::sync(&key_api, now, Some(&tenants), None)
        .await
        .unwrap();
    assert_eq!(again, signing_key::KeyChange::Unchanged);

    // The earlier token still verifies with the published set and outlives no key.
    let claims = claims_of(&env, &before, "team/gte");
    assert!(
        claims.exp < retire_after.timestamp(),
        "token expires before its key leaves the set"
    );
    env.settle("acme").await;
    assert_eq!(
        env.token("acme"),
        before,
        "no new token just because the key rotated"
    );

    // New tokens are signed with the new key.
    env.edit_spec("acme", |s| s["scopes"] = json!(["embed"]));
    env.settle("acme").await;
    let after = env.token("acme");
    let new_kid = jsonwebtoken::decode_header(&after).unwrap().kid.unwrap();
    assert_eq!(new_kid, env.ring.borrow().signing.kid());
    assert_ne!(new_kid, old_kid);
    claims_of(&env, &after, "team/gte");

    // Once every token of the old key has expired, the key leaves the set.
    let (ring, change) = signing_key::sync(&key_api, retire_after, Some(&tenants), None)
        .await
        .unwrap();
    assert_eq!(change, signing_key::KeyChange::Pruned);
    env.ring.send_replace(ring);
    assert_eq!(
        env.verifier("team/gte").verify(&before),
        Err(TokenError::UnknownKey)
    );
    claims_of(&env, &after, "team/gte");
}

/// A leaked key: `--revoke-old` drops every earlier key at once, so earlier tokens fail with the
/// next key set, and the next reconcile re-issues the token with the new key. A key Secret that
/// is deleted is written back from memory; one missing with valid tokens and nothing in memory
/// is an error, until a `--revoke-old` request (a Secret without a key) makes a new one.
#[tokio::test]
async fn revoking_old_keys_fails_earlier_tokens_at_once_and_a_lost_key_is_never_replaced_silently()
{
    let env = Env::new().await;
    let key_api: kube::Api<k8s_openapi::api::core::v1::Secret> =
        kube::Api::namespaced(env.client.clone(), "nlu-system");
    let key_path = format!("/api/v1/namespaces/nlu-system/secrets/{SIGNING_KEY_SECRET}");
    let now = chrono::Utc::now();
    let (first, _) = signing_key::sync(&key_api, now, Some(&[]), None)
        .await
        .unwrap();
    env.ring.send_replace(first.clone());
    env.create_tenant("acme", json!({"services": ["gte"], "token": {"ttl": "2h"}}));
    env.settle("acme").await;
    let before = env.token("acme");
    let tenants = [Arc::new(env.tenant("acme"))];

    // Deleted while the operator runs: the same key is written back, tokens keep working.
    env.api.remove(&key_path);
    let (ring, change) = signing_key::sync(&key_api, now, Some(&tenants), Some(&first))
        .await
        .unwrap();
    assert_eq!(change, KeyChange::Restored);
    assert_eq!(ring.signing.kid(), first.signing.kid());
    let stored = serde_json::from_value(env.api.get(&key_path).unwrap()).unwrap();
    assert_eq!(
        KeyRing::from_secret(&stored).unwrap().signing.kid(),
        first.signing.kid()
    );

    // Missing at start-up (nothing in memory) while acme's token is valid: refused.
    env.api.remove(&key_path);
    let missing = signing_key::sync(&key_api, now, Some(&tenants), None).await;
    assert!(
        matches!(missing, Err(KeyError::Missing(1))),
        "{:?}",
        missing.err()
    );
    assert!(env.api.get(&key_path).is_none(), "no silent new key");

    // `rotate-key --revoke-old` files its request as a Secret without a key.
    env.api.put(
        &key_path,
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": SIGNING_KEY_SECRET, "namespace": "nlu-system",
            "annotations": {ROTATE_ANNOTATION: "r1", REVOKE_OLD_ANNOTATION: "r1"}}}),
    );
    let (ring, change) = signing_key::sync(&key_api, now, None, None).await.unwrap();
    assert!(
        matches!(&change, KeyChange::Revoked { old_kids, .. } if old_kids.is_empty()),
        "{change:?}"
    );
    assert_eq!(ring.kids(), [ring.signing.kid().to_owned()]);

    // A revoke request on a Secret with keys drops every one of them.
    let with_retired = KeyRing::from_secret(&stored)
        .unwrap()
        .rotate(now + chrono::Duration::hours(1));
    let old_kids = with_retired.kids();
    env.api.edit(&key_path, |s| {
        s["data"] = serde_json::to_value(with_retired.to_secret_data()).unwrap();
        s["metadata"]["annotations"] =
            json!({ROTATE_ANNOTATION: "r2", REVOKE_OLD_ANNOTATION: "r2"});
    });
    let (ring, change) = signing_key::sync(&key_api, now, Some(&tenants), None)
        .await
        .unwrap();
    assert_eq!(
        change,
        KeyChange::Revoked {
            old_kids: old_kids.clone(),
            new_kid: ring.signing.kid().to_owned()
        }
    );
    assert_eq!(
        env.api.get(&key_path).unwrap()["metadata"]["annotations"][ROTATED_ANNOTATION],
        "r2"
    );
    assert!(old_kids.iter().all(|kid| !ring.publishes(kid)));
    env.ring.send_replace(ring);
    assert_eq!(
        env.verifier("team/gte").verify(&before),
        Err(TokenError::UnknownKey)
    );
    // One reconcile later acme holds a token of the new key.
    env.settle("acme").await;
    let after = env.token("acme");
    assert_ne!(after, before);
    assert_eq!(
        jsonwebtoken::decode_header(&after).unwrap().kid.unwrap(),
        env.ring.borrow().signing.kid()
    );
    claims_of(&env, &after, "team/gte");
}

#[tokio::test]
async fn the_jwk_set_is_published_where_services_check_tokens_and_follows_rotation() {
    use kube::runtime::{reflector, watcher};
    use nlu_operator::tenant::jwks_publish::{self, JWKS_CONFIGMAP, JWKS_KEY};

    let env = Env::new().await;
    let (services, mut writer) = reflector::store();
    for (ns, name, auth) in [
        ("team", "gte", json!(null)),
        ("open", "demo", json!({"mode": "none"})),
    ] {
        let mut spec =
            json!({"model": {"task": "embedding", "source": {"url": "https://models.example/m"}}});
        if !auth.is_null() {
            spec["auth"] = auth;
        }
        let svc = serde_json::from_value(json!({"apiVersion": "nlu.dev/v1alpha1", "kind": "NluService",
            "metadata": {"name": name, "namespace": ns, "uid": format!("uid-{name}")}, "spec": spec}))
        .unwrap();
        writer.apply_watcher_event(&watcher::Event::Apply(svc));
    }
    let (_identities, no_identities) = tokio::sync::watch::channel(Default::default());
    let publisher = tokio::spawn(jwks_publish::run(
        env.client.clone(),
        services,
        env.ring.subscribe(),
        no_identities,
        None,
    ));
    let path = format!("/api/v1/namespaces/team/configmaps/{JWKS_CONFIGMAP}");
    let published = || {
        env.api
            .get(&path)
            .map(|cm| cm["data"][JWKS_KEY].as_str().unwrap().to_owned())
    };
    let wait_for = |want: String| async move {
        for _ in 0..100 {
            if published().as_deref() == Some(want.as_str()) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("JWK Set not published: {:?}", published());
    };
    wait_for(env.ring.borrow().jwks_json()).await;
    assert!(
        env.api
            .get(&format!(
                "/api/v1/namespaces/open/configmaps/{JWKS_CONFIGMAP}"
            ))
            .is_none(),
        "auth none: nothing to verify"
    );

    let rotated = KeyRing::from_secret(&k8s_openapi::api::core::v1::Secret {
        data: Some(env.ring.borrow().to_secret_data()),
        ..Default::default()
    })
    .unwrap()
    .rotate(chrono::Utc::now() + chrono::Duration::hours(1));
    let want = rotated.jwks_json();
    env.ring.send_replace(Arc::new(rotated));
    wait_for(want).await;
    publisher.abort();
}
