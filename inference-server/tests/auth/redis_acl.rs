//! A namespace's Redis ACL user (`nlu_crds::access::redis_acl`, what the operator sends with
//! `ACL SETUSER`) against a real `redis-server` 7 and a real Redis Cluster: the server's quota
//! code works for the namespace's tenants with that credential, and everything else is refused
//! with `NOPERM`.

use std::time::Duration;

use chrono::Utc;
use nlu_crds::access::redis_acl::{credential_url, setuser_args, user_name};
use nlu_crds::access::redis_client::RedisConnection;
use nlu_crds::access::redis_keys::{script_args, Charge, QUOTA_SCRIPT};
use nlu_crds::access::{QuotaOutcome, RedisKeys, Scope, TenantRecord};
use nlu_server::auth::quota::QuotaStore;

use crate::harness::*;

/// The scopes the calls here ask for: embeddings.
const EMBED: &[Scope] = &[Scope::Embed];

/// Runs `cmd` on `conn` and returns the error text (the test fails if Redis accepted it).
async fn refused(conn: &mut redis::aio::MultiplexedConnection, cmd: &redis::Cmd) -> String {
    let result: redis::RedisResult<redis::Value> = cmd.query_async(conn).await;
    match result {
        Ok(value) => panic!("{cmd:?} was accepted: {value:?}"),
        Err(e) => e.to_string().to_uppercase(),
    }
}

/// Makes the namespace's ACL user, as the operator's `ACL SETUSER` does.
async fn make_user(root: &mut RedisConnection, keys: &RedisKeys, namespace: &str, password: &str) {
    let _: redis::Value = redis::cmd("ACL")
        .arg(setuser_args(keys, namespace, password))
        .query_async(root)
        .await
        .unwrap();
}

/// The namespace's credential URL on `redis_url` and the server's quota store opened with it;
/// `max_delay`: the longest pause before the store reconnects.
fn store_of(
    redis_url: &str,
    namespace: &str,
    password: &str,
    prefix: &str,
    max_delay: Duration,
) -> (String, QuotaStore) {
    let url = credential_url(redis_url, &user_name(namespace), password).unwrap();
    let store = QuotaStore::new(&url, None, prefix, Duration::from_secs(2), max_delay).unwrap();
    (url, store)
}

#[tokio::test]
async fn a_namespace_credential_runs_its_quota_script_and_nothing_else() {
    let redis = redis();
    let prefix = unique_prefix();
    let keys = RedisKeys::new(prefix.clone());
    let mut root = RedisTarget::new(redis.url()).conn();
    let record = TenantRecord {
        requests_per_day: 2,
        ..open_record()
    };
    for tenant in ["team-a/alice", "team-b/bob"] {
        write_record(&mut root, &prefix, tenant, &record).await;
    }
    let password = "pw-of-team-a";
    make_user(&mut root, &keys, "team-a", password).await;

    // The server's own quota code with A's credential: allowed, counted, limited, released.
    let (url, store) = store_of(
        &redis.url(),
        "team-a",
        password,
        &prefix,
        Duration::from_secs(30),
    );
    store.ping().await.unwrap();
    let alice = "team-a/alice".parse().unwrap();
    let alice_token = credential();
    let check = |nonce| store.check(&alice, &alice_token, EMBED, "gte", Charge::Request, nonce);
    assert!(matches!(check(1).await.unwrap(), QuotaOutcome::Allowed(_)));
    assert!(matches!(
        store
            .check(&alice, &credential(), EMBED, "gte", Charge::Tokens(5), 2)
            .await
            .unwrap(),
        QuotaOutcome::Allowed(_)
    ));
    assert!(matches!(check(3).await.unwrap(), QuotaOutcome::Allowed(_)));
    assert!(matches!(
        check(4).await.unwrap(),
        QuotaOutcome::DailyQuotaExceeded(_)
    ));
    store.release(&alice, 1).await.unwrap();
    // After a SCRIPT FLUSH the store loads the script again with the credential.
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut root)
        .await
        .unwrap();
    assert!(matches!(
        check(5).await.unwrap(),
        QuotaOutcome::DailyQuotaExceeded(_)
    ));

    // B's tenants through the store and through the script by hand: refused.
    let bob = "team-b/bob".parse().unwrap();
    let error = store
        .check(&bob, &credential(), EMBED, "gte", Charge::Request, 6)
        .await
        .unwrap_err()
        .to_string()
        .to_uppercase();
    assert!(error.contains("NOPERM"), "{error}");
    let mut a = redis::Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let mut eval = redis::cmd("EVAL");
    eval.arg(QUOTA_SCRIPT).arg(6);
    eval.arg(&keys.script_keys(&bob, Utc::now().date_naive())[..]);
    eval.arg(&script_args(&credential(), EMBED, "gte", 7, Charge::Request, 1000)[..]);
    assert!(refused(&mut a, &eval).await.contains("NOPERM"));
    let mut evalsha = redis::cmd("EVALSHA");
    evalsha
        .arg(redis::Script::new(QUOTA_SCRIPT).get_hash())
        .arg(6);
    evalsha.arg(&keys.script_keys(&bob, Utc::now().date_naive())[..]);
    evalsha.arg(&script_args(&credential(), EMBED, "gte", 8, Charge::Request, 1000)[..]);
    assert!(refused(&mut a, &evalsha).await.contains("NOPERM"));
    // The script must declare its keys: touching an undeclared key of B is refused as well.
    let mut sneaky = redis::cmd("EVALSHA");
    sneaky
        .arg(redis::Script::new(QUOTA_SCRIPT).get_hash())
        .arg(6);
    let mut mixed = keys.script_keys(&alice, Utc::now().date_naive()).to_vec();
    mixed[1] = keys.usage(&bob, Utc::now().date_naive());
    sneaky.arg(&mixed[..]);
    sneaky.arg(&script_args(&credential(), EMBED, "gte", 9, Charge::Request, 1000)[..]);
    assert!(refused(&mut a, &sneaky).await.contains("NOPERM"));

    // Its own record is read-only; the server-wide and dangerous commands are refused.
    let own_record = keys.tenant(&alice);
    for cmd in [
        redis::cmd("HSET")
            .arg(&own_record)
            .arg("gen")
            .arg(0)
            .clone(),
        redis::cmd("DEL").arg(&own_record).clone(),
        redis::cmd("HGETALL").arg(keys.tenant(&bob)).clone(),
        redis::cmd("KEYS").arg("*").clone(),
        redis::cmd("SCAN").arg(0).clone(),
        redis::cmd("FLUSHALL").clone(),
        redis::cmd("MONITOR").clone(),
        redis::cmd("CONFIG").arg("GET").arg("*").clone(),
        redis::cmd("SHUTDOWN").clone(),
        redis::cmd("CLIENT").arg("PAUSE").arg(10_000).clone(),
        redis::cmd("ACL").arg("SETUSER").arg("x").clone(),
        redis::cmd("EVAL").arg("return 1").arg(0).clone(),
    ] {
        let error = refused(&mut a, &cmd).await;
        assert!(error.contains("NOPERM"), "{cmd:?}: {error}");
    }
    // Redis is still up and B's record untouched.
    let gen: String = redis::cmd("HGET")
        .arg(keys.tenant(&bob))
        .arg("gen")
        .query_async(&mut root)
        .await
        .unwrap();
    assert_eq!(gen, "1");
}

/// A Redis restarted without an ACL file has lost the namespace's user until the operator makes
/// it again: the server's connection is refused (`WRONGPASS`) meanwhile, and must log in again
/// once the user is back rather than keep the refusal (a server that never did was unready for
/// ever after a Redis restart).
#[tokio::test]
async fn a_credential_refused_while_its_user_is_missing_works_once_the_user_is_back() {
    let redis = redis();
    let prefix = unique_prefix();
    let keys = RedisKeys::new(prefix.clone());
    let mut root = RedisTarget::new(redis.url()).conn();
    let password = "pw-of-team-c";
    let (_, store) = store_of(
        &redis.url(),
        "team-c",
        password,
        &prefix,
        Duration::from_millis(100),
    );
    for _ in 0..3 {
        let error = store.ping().await.unwrap_err().to_string();
        assert!(error.contains("uthentication"), "{error}");
    }

    make_user(&mut root, &keys, "team-c", password).await;
    eventually(5, "the credential to work once its user exists", || async {
        store.ping().await.is_ok()
    })
    .await;
}

/// On a Redis Cluster every master keeps its own ACLs. The operator sends `ACL SETUSER` once
/// through the cluster client, which must reach every master: the namespace's credential then
/// works for its tenants whatever master holds their slot (30 tenants: all three masters hold
/// some, but for a chance of about 1 in 60 000) and stays confined to the namespace.
#[tokio::test]
async fn on_a_cluster_the_namespace_user_exists_on_every_master() {
    let cluster = nlu_testkit::RedisCluster::start()
        .expect("the auth tests need redis-server and redis-cli (apt-get install -y redis-server)");
    let prefix = unique_prefix();
    let keys = RedisKeys::new(prefix.clone());
    let mut root = RedisTarget::new(cluster.url()).conn();
    let tenants: Vec<String> = (0..30).map(|i| format!("team-a/t{i}")).collect();
    for tenant in tenants.iter().map(String::as_str).chain(["team-b/bob"]) {
        write_record(&mut root, &prefix, tenant, &open_record()).await;
    }
    let password = "pw-of-team-a-on-a-cluster";
    make_user(&mut root, &keys, "team-a", password).await;
    let (_, store) = store_of(
        &cluster.url(),
        "team-a",
        password,
        &prefix,
        Duration::from_secs(30),
    );
    store.ping().await.unwrap();
    for (nonce, tenant) in (1..).zip(&tenants) {
        let outcome = store
            .check(
                &tenant.parse().unwrap(),
                &credential(),
                EMBED,
                "gte",
                Charge::Request,
                nonce,
            )
            .await
            .unwrap_or_else(|e| panic!("{tenant}: {e}"));
        assert!(matches!(outcome, QuotaOutcome::Allowed(_)), "{tenant}");
    }
    let error = store
        .check(
            &"team-b/bob".parse().unwrap(),
            &credential(),
            EMBED,
            "gte",
            Charge::Request,
            99,
        )
        .await
        .unwrap_err()
        .to_string()
        .to_uppercase();
    assert!(error.contains("NOPERM"), "{error}");
}
