//! Reconciles against the recording fake API: the exact requests (method, path, field
//! manager and force, content type, body), status writes only on change, events, deletes of
//! switched-off children, and degraded specs.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::runtime::controller::Action;
use nlu_crds::NluService;
use nlu_operator::config::OperatorConfig;
use nlu_operator::context::Context;
use nlu_operator::metrics::Metrics;
use nlu_operator::nlu_service::build::children;
use nlu_operator::nlu_service::build::deployment::{redis_secret, stamp_redis_credential};
use nlu_operator::nlu_service::controller::{error_policy, reconcile, Error, CONTROLLER};
use serde_json::{json, Value};

use crate::fixtures::{self, NS};
use nlu_testkit::fake_api::{Call, FakeApi};

fn path(kind_path: &str, name: &str) -> String {
    format!("{kind_path}/namespaces/{NS}/{name}")
}
fn deployment_path(n: &str) -> String {
    path("/apis/apps/v1", &format!("deployments/{n}"))
}
fn service_path(n: &str) -> String {
    path("/api/v1", &format!("services/{n}"))
}
fn netpol_path(n: &str) -> String {
    path(
        "/apis/networking.k8s.io/v1",
        &format!("networkpolicies/{n}"),
    )
}
fn ingress_path(n: &str) -> String {
    path("/apis/networking.k8s.io/v1", &format!("ingresses/{n}"))
}
fn hpa_path(n: &str) -> String {
    path(
        "/apis/autoscaling/v2",
        &format!("horizontalpodautoscalers/{n}"),
    )
}
fn pdb_path(n: &str) -> String {
    path("/apis/policy/v1", &format!("poddisruptionbudgets/{n}"))
}
fn nlus_path(n: &str) -> String {
    path("/apis/nlu.dev/v1alpha1", &format!("nluservices/{n}"))
}
fn secret_path(n: &str) -> String {
    path("/api/v1", &format!("secrets/{n}"))
}
fn configmap_path(n: &str) -> String {
    path("/api/v1", &format!("configmaps/{n}"))
}
fn events_path() -> String {
    format!("/apis/events.k8s.io/v1/namespaces/{NS}/events")
}

/// A controller context on the fake API, with a clock the test moves.
struct Env {
    api: FakeApi,
    ctx: Arc<Context>,
    seconds: Arc<AtomicI64>,
}

impl Env {
    /// With the operator's default Redis Secret present.
    fn new() -> Self {
        let (client, api) = FakeApi::start();
        let seconds = Arc::new(AtomicI64::new(1_800_000_000));
        let clock = seconds.clone();
        let ctx = Context::new(client, OperatorConfig::default(), Arc::new(Metrics::new()))
            .with_clock(Arc::new(move || {
                Timestamp::from_second(clock.load(Ordering::SeqCst)).unwrap()
            }));
        api.put(&secret_path("nlu-redis"), json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "nlu-redis", "namespace": NS}, "data": {"url": "cmVkaXM6Ly9yZWRpcw=="}}));
        Env {
            api,
            ctx: Arc::new(ctx),
            seconds,
        }
    }

    /// Stores `svc` (as the API server holds it) and reconciles the stored copy.
    async fn reconcile(&self, svc: &NluService) -> Result<Action, Error> {
        let path = nlus_path(&svc.metadata.name.clone().unwrap());
        let mut stored = serde_json::to_value(svc).unwrap();
        if let Some(old) = self.api.get(&path) {
            stored["status"] = old["status"].clone();
        }
        self.api.put(&path, stored.clone());
        let svc: NluService = serde_json::from_value(stored).unwrap();
        tokio::time::timeout(
            Duration::from_secs(10),
            reconcile(Arc::new(svc), self.ctx.clone()),
        )
        .await
        .expect("reconcile finished")
    }

    fn status(&self, name: &str) -> Value {
        self.api.get(&nlus_path(name)).unwrap()["status"].clone()
    }

    fn tick(&self, secs: i64) {
        self.seconds.fetch_add(secs, Ordering::SeqCst);
    }
}

fn lines(calls: &[Call]) -> Vec<String> {
    calls.iter().map(Call::line).collect()
}

fn query_pairs(q: &str) -> BTreeMap<String, String> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

/// `deployment` as the controller applies it: marked with the Redis URL its pods read.
fn stamped(deployment: Value, url: &[u8]) -> Value {
    let mut typed = serde_json::from_value(deployment).unwrap();
    stamp_redis_credential(&mut typed, url);
    serde_json::to_value(typed).unwrap()
}

/// The Redis URL the pods of `svc` read, from the Secret the fake API holds.
fn redis_url(env: &Env, svc: &NluService) -> Option<Vec<u8>> {
    let (name, key) = redis_secret(&svc.spec, &OperatorConfig::default())?;
    let secret: k8s_openapi::api::core::v1::Secret =
        serde_json::from_value(env.api.get(&secret_path(&name))?).unwrap();
    Some(secret.data?.get(&key)?.0.clone())
}

/// Asserts a server-side apply of `expected` at `path`.
fn assert_apply(call: &Call, path: &str, expected: Value) {
    assert_eq!((call.method.as_str(), call.path.as_str()), ("PATCH", path));
    assert_eq!(
        query_pairs(&call.query),
        BTreeMap::from([
            ("fieldManager".to_owned(), "nlu-operator".to_owned()),
            ("force".to_owned(), "true".to_owned())
        ]),
        "{path}"
    );
    assert_eq!(
        call.content_type.as_deref(),
        Some("application/apply-patch+yaml")
    );
    assert_eq!(call.body.as_ref(), Some(&expected), "{path}");
}

fn condition<'a>(status: &'a Value, type_: &str) -> &'a Value {
    status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == type_)
        .unwrap_or_else(|| panic!("no {type_} in {status}"))
}

/// The applied bodies are exactly the snapshotted objects of the same case.
#[tokio::test]
async fn first_reconcile_applies_the_snapshotted_children_and_writes_status() {
    let env = Env::new();
    let svc = fixtures::uninlu_tls_autoscaling();
    env.api.put(&secret_path("tenants-redis"), json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "tenants-redis"}, "data": {"connection": "eA=="}}));
    let action = env.reconcile(&svc).await.unwrap();
    assert_eq!(action, Action::requeue(Duration::from_secs(300)));
    let calls = env.api.take_calls();
    // Each child is read before it is written (no adoption of an object someone else holds),
    // then the JWK Set ConfigMap the pods mount is checked the same way.
    let paths = [
        deployment_path("uninlu"),
        service_path("uninlu"),
        netpol_path("uninlu"),
        ingress_path("uninlu"),
        hpa_path("uninlu"),
        pdb_path("uninlu"),
    ];
    let mut expected = vec![
        format!("GET {}", secret_path("tenants-redis")),
        format!("GET {}", nlus_path("uninlu")),
    ];
    for child in &paths {
        expected.push(format!("GET {child}"));
        expected.push(format!(
            "PATCH {child}?&force=true&fieldManager=nlu-operator"
        ));
    }
    expected.push(format!("GET {}", configmap_path("nlu-jwks")));
    expected.push(format!(
        "PATCH {}/status?&force=true&fieldManager=nlu-operator",
        nlus_path("uninlu")
    ));
    assert_eq!(lines(&calls), expected);
    let snapshot =
        std::fs::read_to_string(crate::snapshots::snapshot_path("uninlu-tls-autoscaling")).unwrap();
    let docs: Vec<Value> = serde_yaml::Deserializer::from_str(&snapshot)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect();
    let applies = calls.iter().filter(|c| c.method == "PATCH");
    for (call, (path, doc)) in applies.zip(paths.iter().zip(docs)) {
        let doc = if *path == deployment_path("uninlu") {
            stamped(doc, &redis_url(&env, &svc).unwrap())
        } else {
            doc
        };
        assert_apply(call, path, doc);
    }

    let status_call = calls.last().unwrap();
    assert_eq!(
        status_call.content_type.as_deref(),
        Some("application/apply-patch+yaml")
    );
    let body = status_call.body.clone().unwrap();
    assert_eq!(body["apiVersion"], "nlu.dev/v1alpha1");
    assert_eq!(body["kind"], "NluService");
    assert_eq!(body["metadata"], json!({"name": "uninlu"}));
    assert!(
        body.get("spec").is_none(),
        "status writes never touch the spec"
    );
    let status = &body["status"];
    assert_eq!(status["observedGeneration"], 1);
    assert_eq!(status["url"], "https://nlu.example.com/uninlu");
    assert_eq!(condition(status, "Ready")["status"], "False");
    assert_eq!(condition(status, "Ready")["reason"], "ReplicasNotReady");
    assert_eq!(condition(status, "Progressing")["status"], "True");
    assert_eq!(condition(status, "Degraded")["status"], "False");
    assert_eq!(condition(status, "ModelLoaded")["reason"], "NoReadyPod");
    assert_eq!(
        condition(status, "IngressReady")["reason"],
        "AwaitingAddress"
    );
    assert_eq!(
        condition(status, "Ready")["lastTransitionTime"],
        "2027-01-15T08:00:00Z"
    );
}

#[tokio::test]
async fn unchanged_status_is_not_written_and_transition_times_hold() {
    let env = Env::new();
    let svc = fixtures::minimal();
    env.reconcile(&svc).await.unwrap();
    env.api.take_calls();
    env.tick(60);
    env.reconcile(&svc).await.unwrap();
    let calls = env.api.take_calls();
    assert!(
        calls.iter().all(|c| !c.path.ends_with("/status")),
        "no status write: {:?}",
        lines(&calls)
    );
    assert!(
        calls.iter().all(|c| c.method != "POST"),
        "no event without a flip"
    );

    // The pods become ready: Ready flips (new time, Normal event), Degraded holds (old time).
    let before = env.status("gte");
    let mut dep = env.api.get(&deployment_path("gte")).unwrap();
    dep["metadata"]["generation"] = json!(1);
    dep["status"] = json!({"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1, "readyReplicas": 1, "availableReplicas": 1});
    env.api.put(&deployment_path("gte"), dep);
    env.tick(60);
    env.reconcile(&svc).await.unwrap();
    let after = env.status("gte");
    assert_eq!(condition(&after, "Ready")["status"], "True");
    assert_eq!(condition(&after, "Ready")["reason"], "AllReplicasReady");
    assert_ne!(
        condition(&after, "Ready")["lastTransitionTime"],
        condition(&before, "Ready")["lastTransitionTime"]
    );
    assert_eq!(
        condition(&after, "Degraded")["lastTransitionTime"],
        condition(&before, "Degraded")["lastTransitionTime"]
    );
    assert_eq!(condition(&after, "ModelLoaded")["status"], "True");
    assert_eq!(
        condition(&after, "Progressing")["reason"],
        "RolloutComplete"
    );
    assert_eq!(
        (after["replicas"].clone(), after["readyReplicas"].clone()),
        (json!(1), json!(1))
    );
    assert_eq!(after["url"], "http://gte.nlp.svc");
    let calls = env.api.take_calls();
    let event = calls
        .iter()
        .find(|c| c.method == "POST")
        .expect("Ready event");
    assert_eq!(event.path, events_path());
    let body = event.body.clone().unwrap();
    assert_eq!(
        (body["type"].as_str(), body["reason"].as_str()),
        (Some("Normal"), Some("AllReplicasReady"))
    );
    assert_eq!(body["regarding"]["kind"], "NluService");
    assert_eq!(body["regarding"]["name"], "gte");
    assert_eq!(body["reportingController"], "nlu-operator");
}

/// Switches one feature on, then off, and checks the child is applied, then deleted.
async fn toggle(feature_on: &str, child_path: fn(&str) -> String, kind: &str) {
    let env = Env::new();
    let base = fixtures::minimal();
    env.reconcile(&base).await.unwrap();
    let mut on = base.clone();
    let spec_on: Value = serde_yaml::from_str(feature_on).unwrap();
    let mut spec = serde_json::to_value(&on.spec).unwrap();
    for (k, v) in spec_on.as_object().unwrap() {
        spec[k] = v.clone();
    }
    on.spec = serde_json::from_value(spec).unwrap();
    env.api.take_calls();
    env.reconcile(&on).await.unwrap();
    let calls = env.api.take_calls();
    let applied = calls
        .iter()
        .find(|c| c.path == child_path("gte") && c.method != "GET")
        .unwrap_or_else(|| panic!("{kind} applied: {:?}", lines(&calls)));
    assert_eq!(applied.method, "PATCH");
    assert_eq!(applied.body.as_ref().unwrap()["kind"], kind);
    assert!(env.api.get(&child_path("gte")).is_some());

    env.reconcile(&base).await.unwrap();
    let calls = env.api.take_calls();
    let on_child: Vec<String> = calls
        .iter()
        .filter(|c| c.path == child_path("gte"))
        .map(Call::line)
        .collect();
    assert_eq!(
        on_child,
        [
            format!("GET {}", child_path("gte")),
            format!("DELETE {}", child_path("gte"))
        ],
        "{kind}"
    );
    let delete = calls.iter().find(|c| c.method == "DELETE").unwrap();
    assert_eq!(
        delete.body.as_ref().unwrap()["propagationPolicy"],
        "Background"
    );
    assert!(env.api.get(&child_path("gte")).is_none(), "{kind} gone");
    let event = calls
        .iter()
        .find(|c| c.method == "POST")
        .expect("Deleted event")
        .body
        .clone()
        .unwrap();
    assert_eq!(event["reason"], "Deleted");
    assert!(event["note"].as_str().unwrap().contains(kind), "{event}");

    // Switched off and gone: the next reconcile only looks.
    env.reconcile(&base).await.unwrap();
    let calls = env.api.take_calls();
    assert!(
        calls.iter().all(|c| c.method != "DELETE"),
        "{:?}",
        lines(&calls)
    );
}

#[tokio::test]
async fn ingress_on_then_off() {
    toggle("ingress: {host: gte.example.com}", ingress_path, "Ingress").await;
}

#[tokio::test]
async fn hpa_on_then_off() {
    toggle(
        "autoscaling: {minReplicas: 1, maxReplicas: 4}",
        hpa_path,
        "HorizontalPodAutoscaler",
    )
    .await;
}

#[tokio::test]
async fn pdb_on_then_off() {
    toggle("replicas: 2", pdb_path, "PodDisruptionBudget").await;
}

#[tokio::test]
async fn autoscaling_on_then_off_hands_replicas_over_and_back() {
    let env = Env::new();
    let mut svc = fixtures::minimal();
    svc.spec.replicas = Some(2);
    env.reconcile(&svc).await.unwrap();
    assert_eq!(
        env.api.get(&deployment_path("gte")).unwrap()["spec"]["replicas"],
        2
    );
    svc.spec.replicas = None;
    svc.spec.autoscaling =
        serde_json::from_value(json!({"minReplicas": 2, "maxReplicas": 5})).unwrap();
    env.api.take_calls();
    env.reconcile(&svc).await.unwrap();
    let calls = env.api.take_calls();
    let body = calls
        .iter()
        .find(|c| c.path == deployment_path("gte") && c.method != "GET")
        .unwrap()
        .body
        .clone()
        .unwrap();
    assert!(
        body["spec"].get("replicas").is_none(),
        "the HPA owns replicas: {}",
        body["spec"]
    );
    svc.spec.autoscaling = None;
    svc.spec.replicas = Some(3);
    env.reconcile(&svc).await.unwrap();
    let calls = env.api.take_calls();
    let body = calls
        .iter()
        .find(|c| c.path == deployment_path("gte") && c.method != "GET")
        .unwrap()
        .body
        .clone()
        .unwrap();
    assert_eq!(body["spec"]["replicas"], 3, "replicas handed back");
    assert!(calls
        .iter()
        .any(|c| c.line() == format!("DELETE {}", hpa_path("gte"))));
}

#[tokio::test]
async fn a_child_of_the_same_name_owned_by_someone_else_is_not_deleted() {
    let env = Env::new();
    let foreign = json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": "gte", "namespace": NS, "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "x", "uid": "other", "controller": true}]}});
    env.api.put(&ingress_path("gte"), foreign);
    env.reconcile(&fixtures::minimal()).await.unwrap();
    assert!(env.api.take_calls().iter().all(|c| c.method != "DELETE"));
    assert!(env.api.get(&ingress_path("gte")).is_some());
}

async fn assert_degraded(env: &Env, svc: &NluService, reason: &str, message_part: &str) {
    let name = svc.metadata.name.clone().unwrap();
    let action = env
        .reconcile(svc)
        .await
        .expect("a bad spec is not a reconcile error");
    assert_eq!(
        action,
        Action::requeue(Duration::from_secs(60)),
        "checked again later"
    );
    let calls = env.api.take_calls();
    assert!(
        calls
            .iter()
            .all(|c| c.path.ends_with("/status") || c.method != "PATCH"),
        "nothing applied: {:?}",
        lines(&calls)
    );
    let status = env.status(&name);
    let degraded = condition(&status, "Degraded");
    assert_eq!(
        (degraded["status"].as_str(), degraded["reason"].as_str()),
        (Some("True"), Some(reason))
    );
    assert!(
        degraded["message"].as_str().unwrap().contains(message_part),
        "{degraded}"
    );
    assert_eq!(condition(&status, "Ready")["reason"], "Degraded");
    let event = calls
        .iter()
        .find(|c| c.method == "POST")
        .expect("Warning event")
        .body
        .clone()
        .unwrap();
    assert_eq!(
        (event["type"].as_str(), event["reason"].as_str()),
        (Some("Warning"), Some(reason))
    );
    assert_eq!(env.ctx.metrics.failures(CONTROLLER, "ApplyFailed"), 0);

    // Again: the same status, so no write and no second event (no loop of writes or events).
    env.reconcile(svc).await.unwrap();
    let calls = env.api.take_calls();
    assert!(
        calls
            .iter()
            .all(|c| !c.path.ends_with("/status") && c.method != "POST"),
        "{:?}",
        lines(&calls)
    );
}

#[tokio::test]
async fn missing_redis_secret_degrades() {
    let env = Env::new();
    let svc = fixtures::uninlu_tls_autoscaling(); // names Secret tenants-redis, absent here
    assert_degraded(&env, &svc, "RedisSecretMissing", "tenants-redis").await;

    // The Secret appears: the next reconcile applies and clears Degraded.
    env.api.put(&secret_path("tenants-redis"), json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "tenants-redis"}, "data": {"connection": "eA=="}}));
    env.reconcile(&svc).await.unwrap();
    assert_eq!(
        condition(&env.status("uninlu"), "Degraded")["status"],
        "False"
    );
    assert!(env.api.get(&deployment_path("uninlu")).is_some());
}

#[tokio::test]
async fn redis_secret_without_the_key_degrades() {
    let env = Env::new();
    env.api.put(
        &secret_path("tenants-redis"),
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "tenants-redis"}, "data": {"url": "eA=="}}),
    );
    assert_degraded(
        &env,
        &fixtures::uninlu_tls_autoscaling(),
        "RedisSecretKeyMissing",
        "connection",
    )
    .await;
}

#[tokio::test]
async fn escaping_pvc_path_degrades() {
    let env = Env::new();
    // The CRD's CEL rule rejects this; an object stored before the rule (or with the schema
    // bypassed) still must not mount outside the volume.
    let svc = fixtures::service(
        "escape",
        "model: {task: embedding, source: {pvc: {claimName: models, path: ../../etc}}}\nauth: {mode: none}",
    );
    assert_degraded(&env, &svc, "InvalidModelPath", "inside the volume").await;
}

#[tokio::test]
async fn api_failures_back_off_and_are_counted() {
    let env = Env::new();
    let svc = Arc::new(fixtures::minimal());
    env.api.put(
        &nlus_path("gte"),
        serde_json::to_value(svc.as_ref()).unwrap(),
    );
    env.api.fail_next_write(&deployment_path("gte"));
    let err = reconcile(svc.clone(), env.ctx.clone()).await.unwrap_err();
    assert_eq!(err.reason(), "ApplyFailed");
    assert!(err.to_string().contains("Deployment"), "{err}");
    let first = error_policy(svc.clone(), &err, env.ctx.clone());
    let second = error_policy(svc.clone(), &err, env.ctx.clone());
    assert_eq!(first, Action::requeue(Duration::from_secs(5)));
    assert_eq!(second, Action::requeue(Duration::from_secs(10)));
    assert_eq!(env.ctx.metrics.failures(CONTROLLER, "ApplyFailed"), 2);
    // Success resets the backoff.
    reconcile(svc.clone(), env.ctx.clone()).await.unwrap();
    assert_eq!(
        error_policy(svc, &err, env.ctx.clone()),
        Action::requeue(Duration::from_secs(5))
    );
    assert!(env.ctx.metrics.runs(CONTROLLER) >= 2);
}

/// The builders are what the controller sends: for every case, the applied bodies equal
/// `children()` (so the snapshot tests cover the wire format).
#[tokio::test]
async fn applied_bodies_equal_the_built_children() {
    for (_, svc) in fixtures::cases() {
        let env = Env::new();
        env.api.put(&secret_path("tenants-redis"), json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "tenants-redis"}, "data": {"connection": "eA=="}}));
        env.reconcile(&svc).await.unwrap();
        let name = svc.metadata.name.clone().unwrap();
        let c = children(&svc, &OperatorConfig::default());
        let calls = env.api.take_calls();
        let body = |p: String| {
            calls
                .iter()
                .find(|c| c.path == p && c.method == "PATCH")
                .map(|c| c.body.clone().unwrap())
        };
        let deployment = serde_json::to_value(&c.deployment).unwrap();
        let deployment = match redis_url(&env, &svc) {
            Some(url) => stamped(deployment, &url),
            None => deployment,
        };
        assert_eq!(body(deployment_path(&name)), Some(deployment));
        assert_eq!(
            body(service_path(&name)),
            Some(serde_json::to_value(&c.service).unwrap())
        );
        assert_eq!(
            body(ingress_path(&name)),
            c.ingress.map(|i| serde_json::to_value(i).unwrap())
        );
    }
}

#[tokio::test]
async fn a_service_being_deleted_is_left_to_garbage_collection() {
    let env = Env::new();
    let mut svc = fixtures::minimal();
    svc.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        Timestamp::from_second(1).unwrap(),
    ));
    assert_eq!(env.reconcile(&svc).await.unwrap(), Action::await_change());
    assert!(env.api.take_calls().is_empty());
}

/// A reconcile that started from a cached copy writes nothing once the live object is gone,
/// being deleted, or replaced by a new object of the same name.
#[tokio::test]
async fn no_child_is_written_for_a_service_that_is_gone() {
    for case in ["deleted", "deleting", "recreated"] {
        let env = Env::new();
        let mut cached = fixtures::minimal();
        cached.metadata.uid = Some("uid-1".into());
        let name = cached.metadata.name.clone().unwrap();
        let path = nlus_path(&name);
        match case {
            "deleted" => {}
            "deleting" => {
                let mut live = serde_json::to_value(&cached).unwrap();
                live["metadata"]["deletionTimestamp"] = json!("2027-01-15T08:00:00Z");
                env.api.put(&path, live);
            }
            _ => {
                let mut live = serde_json::to_value(&cached).unwrap();
                live["metadata"]["uid"] = json!("uid-2");
                env.api.put(&path, live);
            }
        }
        let action = reconcile(Arc::new(cached), env.ctx.clone()).await.unwrap();
        assert_eq!(action, Action::await_change(), "{case}");
        let writes: Vec<String> = env
            .api
            .take_calls()
            .iter()
            .filter(|c| c.method != "GET")
            .map(Call::line)
            .collect();
        assert!(writes.is_empty(), "{case}: {writes:?}");
    }
}

/// No adoption: a Deployment of the service's name that it does not control, and an `nlu-jwks`
/// ConfigMap someone made by hand, are read but never written; the service is Degraded with
/// `NameConflict` naming both, a Warning Event says so, and the other children are applied.
#[tokio::test]
async fn objects_of_a_childs_name_that_someone_else_holds_are_not_adopted() {
    let env = Env::new();
    let theirs = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "gte", "namespace": NS, "labels": {"team": "theirs"}}, "spec": {"replicas": 7}});
    // As stored (with its resource version): compared whole after the reconcile.
    let theirs = env.api.put(&deployment_path("gte"), theirs);
    let their_jwks = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "nlu-jwks", "namespace": NS}, "data": {"jwks.json": "{\"keys\":[]}"}});
    let their_jwks = env.api.put(&configmap_path("nlu-jwks"), their_jwks);

    let action = env.reconcile(&fixtures::minimal()).await.unwrap();
    assert_eq!(
        action,
        Action::requeue(Duration::from_secs(60)),
        "checked again every minute"
    );
    let calls = env.api.take_calls();
    let writes_to = |path: String| {
        calls
            .iter()
            .filter(|c| c.path == path && c.method != "GET")
            .count()
    };
    assert_eq!(writes_to(deployment_path("gte")), 0, "{:?}", lines(&calls));
    assert_eq!(writes_to(configmap_path("nlu-jwks")), 0);
    assert_eq!(
        writes_to(service_path("gte")),
        1,
        "the free names are applied"
    );
    assert_eq!(env.api.get(&deployment_path("gte")), Some(theirs));
    assert_eq!(env.api.get(&configmap_path("nlu-jwks")), Some(their_jwks));

    let status = env.status("gte");
    let degraded = condition(&status, "Degraded");
    assert_eq!(
        (degraded["status"].as_str(), degraded["reason"].as_str()),
        (Some("True"), Some("NameConflict"))
    );
    let message = degraded["message"].as_str().unwrap();
    assert!(
        message.contains("Deployment \"gte\"") && message.contains("ConfigMap \"nlu-jwks\""),
        "{message}"
    );
    assert_eq!(condition(&status, "Ready")["reason"], "Degraded");
    let warning = calls
        .iter()
        .filter(|c| c.method == "POST" && c.path == events_path())
        .filter_map(|c| c.body.clone())
        .find(|e| e["reason"] == "NameConflict")
        .expect("a NameConflict event");
    assert_eq!(warning["type"], "Warning");
    assert!(warning["note"]
        .as_str()
        .unwrap()
        .contains("Deployment \"gte\""));

    // A Deployment of that name this service controls is its own: written again.
    env.api.take_calls();
    env.api.put(
        &deployment_path("gte"),
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "gte", "namespace": NS, "ownerReferences": [{"apiVersion": "nlu.dev/v1alpha1", "kind": "NluService", "name": "gte", "uid": fixtures::minimal().metadata.uid, "controller": true}]}}),
    );
    env.reconcile(&fixtures::minimal()).await.unwrap();
    let calls = env.api.take_calls();
    assert!(
        calls
            .iter()
            .any(|c| c.path == deployment_path("gte") && c.method == "PATCH"),
        "its own Deployment is written: {:?}",
        lines(&calls)
    );
}
