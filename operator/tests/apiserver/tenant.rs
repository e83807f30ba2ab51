//! The Tenant controller, watch-driven, against the real server and a real redis-server (see
//! `apiserver.rs` for what is real and what is not).

use std::time::Duration;

use http::Method;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use nlu_crds::access::{QualifiedName, RedisKeys};
use nlu_crds::conditions::is_true;
use nlu_crds::{NluService, Tenant};
use nlu_operator::tenant::rotate_key::{rotate_key, RotateKeyArgs};
use nlu_operator::tenant::signing_key::{KeyRing, SIGNING_KEY_SECRET};
use nlu_operator::tenant::FINALIZER;
use nlu_testkit::{Call, RedisServer};
use serde_json::json;

use crate::harness::{create_theirs, eventually, sample, warning_event, Running};

async fn redis_has(url: &str, key: &str) -> bool {
    let mut conn = redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    redis::cmd("EXISTS")
        .arg(key)
        .query_async::<i64>(&mut conn)
        .await
        .unwrap()
        == 1
}

fn record_key(ns: &str, name: &str) -> String {
    RedisKeys::new("nlu:").tenant(&QualifiedName::new(ns.to_owned(), name.to_owned()).unwrap())
}

/// Deletes the tenant and waits until the API server has let it go (its finalizer done).
async fn delete_and_wait(tenants: &Api<Tenant>, name: &str) {
    tenants
        .delete(name, &DeleteParams::default())
        .await
        .unwrap();
    eventually("the tenant gone", 30, || async {
        tenants.get_opt(name).await.unwrap().is_none().then_some(())
    })
    .await;
}

/// The tenant once Ready for its current generation.
async fn ready(api: &Api<Tenant>, name: &str) -> Tenant {
    eventually("the tenant Ready", 30, || async {
        let tenant = api.get(name).await.ok()?;
        let status = tenant.status.as_ref()?;
        (is_true(&status.conditions, "Ready")
            && status.observed_generation == tenant.metadata.generation)
            .then_some(tenant)
    })
    .await
}

#[tokio::test]
async fn finalizer_keeps_the_tenant_until_its_redis_record_is_gone() {
    let Some(server) = nlu_testkit::api_server() else {
        return;
    };
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let ns = "tenant-flow";
    let op = Running::tenant(server, ns, &redis.url()).await;
    let tenants: Api<Tenant> = Api::namespaced(op.client.clone(), ns);
    tenants
        .create(&PostParams::default(), &sample("tenant.yaml", ns, "acme"))
        .await
        .unwrap();

    let tenant = ready(&tenants, "acme").await;
    assert_eq!(tenant.finalizers(), [FINALIZER]);
    assert!(
        redis_has(&redis.url(), &record_key(ns, "acme")).await,
        "access record written to Redis"
    );
    let status = tenant.status.clone().unwrap();
    let secret_name = status
        .token_secret_name
        .clone()
        .expect("status names the token Secret");
    let secret = Api::<Secret>::namespaced(op.client.clone(), ns)
        .get(&secret_name)
        .await
        .unwrap();
    assert!(
        secret
            .data
            .unwrap()
            .get("token")
            .is_some_and(|t| !t.0.is_empty()),
        "token in the Secret"
    );

    // Writes to the Tenant itself: only the finalizer JSON patch; status only through /status.
    let main = format!("/apis/nlu.dev/v1alpha1/namespaces/{ns}/tenants/acme");
    let main_writes = op.writes_to(&main);
    assert!(
        main_writes
            .iter()
            .all(|w| w.content_type == "application/json-patch+json"),
        "{main_writes:?}"
    );
    let status_writes = op.writes_to(&format!("{main}/status"));
    assert!(
        !status_writes.is_empty()
            && status_writes.iter().all(|w| w.real
                && w.status == 200
                && w.content_type == "application/apply-patch+yaml")
    );

    // Nothing changed: a metadata-only touch makes a reconcile (it reads the token Secret) but no
    // status write, and keeps the conditions' transition times.
    let reads_before = op.count(
        Method::GET,
        &format!("/api/v1/namespaces/{ns}/secrets/{secret_name}"),
    );
    let touch = json!({"metadata": {"annotations": {"example.com/touch": "1"}}});
    tenants
        .patch("acme", &PatchParams::default(), &Patch::Merge(&touch))
        .await
        .unwrap();
    eventually("a reconcile after the touch", 20, || async {
        (op.count(
            Method::GET,
            &format!("/api/v1/namespaces/{ns}/secrets/{secret_name}"),
        ) > reads_before)
            .then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        op.writes_to(&format!("{main}/status")).len(),
        status_writes.len(),
        "a status write although nothing changed"
    );
    assert_eq!(
        tenants
            .get("acme")
            .await
            .unwrap()
            .status
            .unwrap()
            .conditions,
        status.conditions
    );

    // Deletion: the server only marks it; the controller removes the Redis keys, then its
    // finalizer, and the server lets the object go.
    delete_and_wait(&tenants, "acme").await;
    assert!(
        !redis_has(&redis.url(), &record_key(ns, "acme")).await,
        "Redis record removed before the finalizer"
    );
    let removal = op.writes_to(&main);
    assert_eq!(
        removal.last().map(|w| (w.content_type.as_str(), w.status)),
        Some(("application/json-patch+json", http::StatusCode::OK))
    );
}

#[tokio::test]
async fn finalizer_patch_on_a_stale_view_is_refused_by_the_server_and_retried() {
    let Some(server) = nlu_testkit::api_server() else {
        return;
    };
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let ns = "tenant-stale";
    let op = Running::tenant(server, ns, &redis.url()).await;
    let main = format!("/apis/nlu.dev/v1alpha1/namespaces/{ns}/tenants/acme");
    // Someone else adds a finalizer right before the controller's first patch, which tests that
    // the list of finalizers is still the empty one it read: the real server refuses it.
    let other = Call {
        method: Method::PATCH,
        path_and_query: main.clone(),
        content_type: "application/merge-patch+json".into(),
        body: serde_json::to_vec(&json!({"metadata": {"finalizers": ["example.com/keep"]}}))
            .unwrap(),
    };
    op.proxy.interfere_once(Method::PATCH, &main, other);
    let tenants: Api<Tenant> = Api::namespaced(op.client.clone(), ns);
    tenants
        .create(&PostParams::default(), &sample("tenant.yaml", ns, "acme"))
        .await
        .unwrap();

    let tenant = ready(&tenants, "acme").await;
    assert_eq!(
        tenant.finalizers(),
        ["example.com/keep", FINALIZER],
        "the other finalizer is kept, ours appended"
    );
    let outcomes: Vec<u16> = op
        .writes_to(&main)
        .iter()
        .map(|w| w.status.as_u16())
        .collect();
    assert_eq!(
        outcomes,
        [200, 422, 200],
        "the injected write, the refused stale patch, the retry"
    );
}

/// The Tenant controller on `ns` with its own redis-server (kept alive by the caller); `None`
/// (after a SKIP line) without the API server tool or redis-server.
async fn tenant_controller(ns: &str) -> Option<(Running, RedisServer)> {
    let server = nlu_testkit::api_server()?;
    let redis = RedisServer::start()?;
    let op = Running::tenant(server, ns, &redis.url()).await;
    Some((op, redis))
}

/// An NluService with auth on in `ns` (the JWK Set publisher's reason to publish there).
async fn create_embedding_service(op: &Running, ns: &str) {
    Api::<NluService>::namespaced(op.client.clone(), ns)
        .create(
            &PostParams::default(),
            &sample("nluservice-embedding.yaml", ns, "gte"),
        )
        .await
        .unwrap();
}

/// No adoption of the token Secret: a `<tenant>-token` Secret someone else made keeps its content
/// and gets no owner reference; the Tenant reports `Ready=False`/`SecretNameTaken` with a Warning
/// Event; deleting the Tenant (garbage collector running) leaves that Secret in place.
#[tokio::test]
async fn a_token_secret_someone_else_made_is_neither_adopted_nor_collected() {
    let ns = "tenant-no-adoption";
    let Some((op, _redis)) = tenant_controller(ns).await else {
        return;
    };
    let (secrets, theirs) = create_theirs::<Secret>(
        &op.client,
        ns,
        json!({"metadata": {"name": "acme-token"}, "stringData": {"token": "their own"}}),
    )
    .await;
    let tenants: Api<Tenant> = Api::namespaced(op.client.clone(), ns);
    tenants
        .create(&PostParams::default(), &sample("tenant.yaml", ns, "acme"))
        .await
        .unwrap();

    let tenant = eventually("Ready=False SecretNameTaken", 30, || async {
        let t = tenants.get("acme").await.ok()?;
        t.status
            .as_ref()?
            .conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "False" && c.reason == "SecretNameTaken")
            .then_some(t)
    })
    .await;
    let ready = tenant
        .status
        .as_ref()
        .unwrap()
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert!(
        ready.message.contains("Secret \"acme-token\""),
        "{}",
        ready.message
    );
    warning_event(&op.client, ns, "SecretNameTaken").await;
    let path = format!("/api/v1/namespaces/{ns}/secrets/acme-token");
    assert!(op.writes_to(&path).is_empty(), "{:?}", op.writes_to(&path));
    let unchanged = |s: &Secret| {
        s.resource_version() == theirs.resource_version()
            && s.owner_references().is_empty()
            && s.data == theirs.data
    };
    assert!(unchanged(&secrets.get("acme-token").await.unwrap()));

    tenants
        .delete("acme", &DeleteParams::default())
        .await
        .unwrap();
    let gone = eventually("the tenant gone", 30, || async {
        tenants
            .get_opt("acme")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    });
    tokio::select! {
        () = nlu_testkit::collect_garbage(op.client.clone()) => unreachable!("the collector runs for ever"),
        () = gone => {}
    }
    // One more collector pass after the owner is gone.
    let _ = tokio::time::timeout(
        Duration::from_secs(2),
        nlu_testkit::collect_garbage(op.client.clone()),
    )
    .await;
    assert!(unchanged(&secrets.get("acme-token").await.unwrap()));
    assert!(op.writes_to(&path).is_empty());
}

/// The JWK Set ConfigMap is the namespace's trust anchor: a key added by an editor (and any other
/// data entry) is undone, and a deleted ConfigMap is re-created, each within one watch event
/// (well before the publisher's 5 s poll).
#[tokio::test]
async fn the_jwk_set_configmap_is_repaired_and_recreated() {
    let ns = "tenant-jwks-repair";
    let Some((op, _redis)) = tenant_controller(ns).await else {
        return;
    };
    let configmaps: Api<ConfigMap> = Api::namespaced(op.client.clone(), ns);
    create_embedding_service(&op, ns).await;
    let published = eventually("nlu-jwks published", 30, || async {
        configmaps.get_opt("nlu-jwks").await.ok()?
    })
    .await;
    let jwks = published.data.clone().unwrap()["jwks.json"].clone();
    assert!(jwks.contains("\"keys\""), "{jwks}");
    let intact = || async {
        configmaps
            .get_opt("nlu-jwks")
            .await
            .ok()
            .flatten()
            .filter(|cm| cm.data == published.data && cm.binary_data.is_none())
    };

    // An editor adds a key of their own to the set, and another data entry.
    let mut forged: serde_json::Value = serde_json::from_str(&jwks).unwrap();
    forged["keys"]
        .as_array_mut()
        .unwrap()
        .push(json!({"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo", "kid": "theirs", "alg": "EdDSA", "use": "sig"}));
    let edit = json!({"data": {"jwks.json": forged.to_string(), "extra.json": "{}"}});
    configmaps
        .patch("nlu-jwks", &PatchParams::default(), &Patch::Merge(&edit))
        .await
        .unwrap();
    eventually("the edit undone", 4, intact).await;

    // Deleted: re-created with the same content.
    configmaps
        .delete("nlu-jwks", &DeleteParams::default())
        .await
        .unwrap();
    let recreated = eventually("nlu-jwks re-created", 4, intact).await;
    assert_ne!(
        recreated.metadata.uid, published.metadata.uid,
        "a new object"
    );
}

/// A `nlu-jwks` ConfigMap someone made by hand (without the operator's marks) is not adopted.
#[tokio::test]
async fn a_jwks_configmap_someone_else_made_is_left_alone() {
    let ns = "tenant-jwks-foreign";
    let Some((op, _redis)) = tenant_controller(ns).await else {
        return;
    };
    let (configmaps, theirs) = create_theirs::<ConfigMap>(
        &op.client,
        ns,
        json!({"metadata": {"name": "nlu-jwks"}, "data": {"jwks.json": "{\"keys\":[]}"}}),
    )
    .await;
    create_embedding_service(&op, ns).await;
    let path = format!("/api/v1/namespaces/{ns}/configmaps/nlu-jwks");
    eventually("the publisher looked at it", 30, || async {
        (op.count(Method::GET, &path) > 0).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(op.writes_to(&path).is_empty(), "{:?}", op.writes_to(&path));
    let now = configmaps.get("nlu-jwks").await.unwrap();
    assert_eq!(now.resource_version(), theirs.resource_version());
    assert!(now.owner_references().is_empty());
}

/// The `tid` claim of the token in the tenant's Secret (read, not verified: the server tests
/// check what a verified token with another `tid` gets).
async fn token_tid(secrets: &Api<Secret>, tenant: &Tenant) -> Option<String> {
    let name = tenant.status.as_ref()?.token_secret_name.clone()?;
    let secret = secrets.get_opt(&name).await.ok()??;
    let token = String::from_utf8(secret.data?.get("token")?.0.clone()).ok()?;
    jsonwebtoken::dangerous::insecure_decode_claims::<nlu_crds::access::Claims>(&token)
        .ok()
        .map(|c| c.tid)
}

#[tokio::test]
async fn a_tenant_created_again_under_its_old_name_has_a_new_uid_in_record_and_token() {
    let Some(server) = nlu_testkit::api_server() else {
        return;
    };
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let ns = "tenant-again";
    let op = Running::tenant(server, ns, &redis.url()).await;
    let tenants: Api<Tenant> = Api::namespaced(op.client.clone(), ns);
    let secrets: Api<Secret> = Api::namespaced(op.client.clone(), ns);
    let record_uid = || async {
        let mut conn = redis::Client::open(redis.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        redis::cmd("HGET")
            .arg(record_key(ns, "acme"))
            .arg(nlu_crds::access::redis_keys::field::UID)
            .query_async::<Option<String>>(&mut conn)
            .await
            .unwrap()
    };
    let create = || async {
        tenants
            .create(&PostParams::default(), &sample("tenant.yaml", ns, "acme"))
            .await
            .unwrap();
        ready(&tenants, "acme").await
    };

    let first = create().await;
    let first_uid = first.uid().unwrap();
    assert_eq!(token_tid(&secrets, &first).await, Some(first_uid.clone()));
    assert_eq!(record_uid().await.as_deref(), Some(first_uid.as_str()));

    delete_and_wait(&tenants, "acme").await;
    // The old token Secret goes with its owner (the garbage collector runs meanwhile); the new
    // Tenant does not adopt it while it is there.
    let recreated = async {
        let second = create().await;
        let second_uid = second.uid().unwrap();
        assert_ne!(second_uid, first_uid, "the API server gives a new uid");
        // The record names the new Tenant, so the old tokens (tid = the first uid) are revoked.
        eventually("the record of the new Tenant", 30, || async {
            (record_uid().await.as_deref() == Some(second_uid.as_str())).then_some(())
        })
        .await;
        eventually("a token of the new Tenant", 30, || async {
            let t = tenants.get("acme").await.ok()?;
            (token_tid(&secrets, &t).await == Some(second_uid.clone())).then_some(())
        })
        .await;
    };
    tokio::select! {
        () = nlu_testkit::collect_garbage(op.client.clone()) => unreachable!("the collector runs for ever"),
        () = recreated => {}
    }
}

/// The `kid` of the Tenant's current token.
async fn token_kid(secrets: &Api<Secret>, tenants: &Api<Tenant>, name: &str) -> Option<String> {
    let tenant = tenants.get(name).await.ok()?;
    let secret_name = tenant.status?.token_secret_name?;
    let secret = secrets.get_opt(&secret_name).await.ok()??;
    let token = String::from_utf8(secret.data?.get("token")?.0.clone()).ok()?;
    jsonwebtoken::decode_header(&token).ok()?.kid
}

/// Signing-key containment with the running operator: a deleted key Secret is written back with
/// the same key (and a Warning Event); `nlu-operator rotate-key --revoke-old` (the CLI's own
/// code) takes the old key out of the published JWK Set at once and re-issues the token.
#[tokio::test]
async fn a_deleted_key_comes_back_and_revoke_old_drops_the_old_key_and_reissues_tokens() {
    let ns = "tenant-revoke-old";
    let Some((op, _redis)) = tenant_controller(ns).await else {
        return;
    };
    let system = format!("{ns}-system");
    let keys: Api<Secret> = Api::namespaced(op.client.clone(), &system);
    let secrets: Api<Secret> = Api::namespaced(op.client.clone(), ns);
    let tenants: Api<Tenant> = Api::namespaced(op.client.clone(), ns);
    let configmaps: Api<ConfigMap> = Api::namespaced(op.client.clone(), ns);
    create_embedding_service(&op, ns).await;
    tenants
        .create(&PostParams::default(), &sample("tenant.yaml", ns, "acme"))
        .await
        .unwrap();
    ready(&tenants, "acme").await;
    let old_kid = token_kid(&secrets, &tenants, "acme").await.unwrap();
    let published = || async {
        let cm = configmaps.get_opt("nlu-jwks").await.ok()??;
        let jwks = cm.data?.get("jwks.json")?.clone();
        let set: jsonwebtoken::jwk::JwkSet = serde_json::from_str(&jwks).ok()?;
        Some(
            set.keys
                .into_iter()
                .filter_map(|k| k.common.key_id)
                .collect::<Vec<_>>(),
        )
    };
    eventually("the key published", 30, || async {
        published().await.filter(|kids| kids.contains(&old_kid))
    })
    .await;

    let key_uid = keys.get(SIGNING_KEY_SECRET).await.unwrap().uid();
    keys.delete(SIGNING_KEY_SECRET, &DeleteParams::default())
        .await
        .unwrap();
    let restored = eventually("the key Secret written back", 20, || async {
        keys.get_opt(SIGNING_KEY_SECRET)
            .await
            .ok()?
            .filter(|s| s.uid() != key_uid)
    })
    .await;
    assert_eq!(
        KeyRing::from_secret(&restored).unwrap().signing.kid(),
        old_kid,
        "the same key, not a new one"
    );
    warning_event(&op.client, &system, "KeyRestored").await;

    let args = RotateKeyArgs {
        operator_namespace: system.clone(),
        wait_seconds: 30,
        revoke_old: true,
    };
    rotate_key(op.client.clone(), &args).await.unwrap();
    let new_kids = eventually("the old key dropped from the JWK Set", 20, || async {
        published().await.filter(|kids| !kids.contains(&old_kid))
    })
    .await;
    assert_eq!(new_kids.len(), 1, "{new_kids:?}");
    eventually("a token of the new key", 20, || async {
        (token_kid(&secrets, &tenants, "acme").await.as_ref() == new_kids.first()).then_some(())
    })
    .await;
}
