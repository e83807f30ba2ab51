//! The object store of the fake API and its one set of semantics (listed in `mod.rs`): what
//! every request does to the objects, their metadata and the watch history.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use futures::stream::{self, BoxStream, StreamExt};
use http::header::CONTENT_TYPE;
use http::{HeaderMap, Method, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use serde_json::{json, Map, Value};
use tokio::sync::broadcast;

use super::route::{field, Key, Query, Route, Selector};

const APPLY: &str = "application/apply-patch+yaml";
const MERGE: &str = "application/merge-patch+json";
const STRATEGIC_MERGE: &str = "application/strategic-merge-patch+json";
const JSON_PATCH: &str = "application/json-patch+json";

/// What the store answers (a stored object is shared, not copied).
pub(crate) enum Reply {
    Json(StatusCode, Arc<Value>),
    Watch(BoxStream<'static, Bytes>),
}

/// The body of an answer: a JSON document, or a watch's event lines as they come.
pub(crate) type ReplyBody = UnsyncBoxBody<Bytes, Infallible>;

impl Reply {
    /// The answer as HTTP, as the API server sends it (`application/json` either way).
    pub(crate) fn into_response(self) -> http::Response<ReplyBody> {
        let (code, body) = match self {
            Reply::Json(code, value) => (
                code,
                Full::new(Bytes::from(value.to_string())).boxed_unsync(),
            ),
            Reply::Watch(events) => {
                let frames = events.map(|line| Ok::<_, Infallible>(http_body::Frame::data(line)));
                (StatusCode::OK, StreamBody::new(frames).boxed_unsync())
            }
        };
        http::Response::builder()
            .status(code)
            .header(CONTENT_TYPE, "application/json")
            .body(body)
            .expect("a valid response")
    }
}

/// The content type of a request without its parameters (e.g. `application/apply-patch+yaml`);
/// empty if none.
pub(crate) fn content_type(headers: &HeaderMap) -> String {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .unwrap_or("")
        .trim()
        .to_owned()
}

#[derive(Clone)]
struct Change {
    resource_version: u64,
    event: &'static str,
    key: Key,
    object: Arc<Value>,
}

/// Who applied a configuration: (field manager, subresource or "").
type Applier = (String, String);

#[derive(Default)]
struct State {
    resource_version: u64,
    objects: BTreeMap<Key, Arc<Value>>,
    /// The fields of each field manager's last applied configuration, per object.
    applied: BTreeMap<Key, BTreeMap<Applier, Value>>,
    history: Vec<Change>,
}

pub(crate) struct Store {
    state: Mutex<State>,
    changes: broadcast::Sender<Change>,
}

type Outcome = Result<(StatusCode, Arc<Value>), Reply>;

impl Store {
    pub(crate) fn new() -> Store {
        Store {
            state: Mutex::default(),
            changes: broadcast::channel(1024).0,
        }
    }

    /// Answers one request; `body` is the request's JSON body (see [`parse`]), which only
    /// writes read.
    pub(crate) fn handle(
        &self,
        method: &Method,
        route: Route,
        query: &Query,
        content_type: &str,
        body: Result<Value, Reply>,
    ) -> Reply {
        let result = match (method, route.name.is_some()) {
            (&Method::GET, false) if query.flag("watch") => return self.watch(&route, query),
            (&Method::GET, false) => self.list(&route, query),
            (&Method::GET, true) => self.get(&route),
            (&Method::POST, false) => body.and_then(|object| {
                let mut state = self.state.lock().unwrap();
                self.create(&mut state, &route, object)
            }),
            (&Method::PUT, true) => body.and_then(|object| self.replace(&route, object)),
            (&Method::PATCH, true) => self.patch(&route, query, content_type, body),
            (&Method::DELETE, true) => self.delete(&route),
            _ => Err(status(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                "not supported by the fake API",
            )),
        };
        match result {
            Ok((code, object)) => Reply::Json(code, object),
            Err(failure) => failure,
        }
    }

    /// Stores `object` as given under `route` with a new resource version, as a write behind
    /// the API's back would (a test arranging the world): no server-owned metadata, no status
    /// split, no generation. Watchers see it. Returns the object as stored.
    pub(crate) fn put(&self, route: &Route, mut object: Value) -> Arc<Value> {
        let mut state = self.state.lock().unwrap();
        state.resource_version += 1;
        object["metadata"]["resourceVersion"] = state.resource_version.to_string().into();
        let object = Arc::new(object);
        let key = route.key();
        let event = match state.objects.insert(key.clone(), object.clone()) {
            Some(_) => "MODIFIED",
            None => "ADDED",
        };
        self.record(&mut state, event, key, object.clone());
        object
    }

    pub(crate) fn get(&self, route: &Route) -> Outcome {
        let state = self.state.lock().unwrap();
        match state.objects.get(&route.key()) {
            Some(object) => Ok((StatusCode::OK, object.clone())),
            None => Err(not_found(route)),
        }
    }

    fn list(&self, route: &Route, query: &Query) -> Outcome {
        let selector = Selector::parse(query)?;
        let state = self.state.lock().unwrap();
        let items: Vec<Value> = state
            .objects
            .iter()
            .filter(|(key, object)| route.holds(key) && selector.matches(object))
            .map(|(_, object)| Value::clone(object))
            .collect();
        let list = json!({
            "apiVersion": route.api_version,
            "kind": route.kind.map_or("List".to_owned(), |kind| format!("{kind}List")),
            "metadata": {"resourceVersion": state.resource_version.to_string()},
            "items": items,
        });
        Ok((StatusCode::OK, Arc::new(list)))
    }

    /// Events after the requested resource version (or every current object as ADDED when none
    /// is given), then live changes, until `timeoutSeconds`.
    fn watch(&self, route: &Route, query: &Query) -> Reply {
        let selector = match Selector::parse(query) {
            Ok(selector) => selector,
            Err(failure) => return failure,
        };
        let scope = route.clone();
        let matches =
            move |change: &Change| scope.holds(&change.key) && selector.matches(&change.object);
        let (backlog, receiver) = {
            let state = self.state.lock().unwrap();
            let since = query
                .get("resourceVersion")
                .filter(|rv| !rv.is_empty() && *rv != "0");
            let backlog: Vec<Change> = match since.map(str::parse::<u64>) {
                Some(Ok(since)) => state
                    .history
                    .iter()
                    .filter(|c| c.resource_version > since)
                    .cloned()
                    .collect(),
                Some(Err(_)) => {
                    return status(
                        StatusCode::BAD_REQUEST,
                        "BadRequest",
                        "resourceVersion is not a number",
                    )
                }
                None => state
                    .objects
                    .iter()
                    .map(|(key, object)| Change {
                        resource_version: state.resource_version,
                        event: "ADDED",
                        key: key.clone(),
                        object: object.clone(),
                    })
                    .collect(),
            };
            // Subscribed under the lock, so no change falls between the backlog and the live feed.
            (backlog, self.changes.subscribe())
        };
        let backlog: Vec<Change> = backlog.into_iter().filter(&matches).collect();
        let live = stream::unfold(
            (receiver, matches.clone()),
            |(mut receiver, matches)| async move {
                loop {
                    match receiver.recv().await {
                        Ok(change) if matches(&change) => {
                            return Some((change, (receiver, matches)))
                        }
                        Ok(_) => continue,
                        // A lagging watcher ends; the client watches again from its last version.
                        Err(_) => return None,
                    }
                }
            },
        );
        let timeout = Duration::from_secs(
            query
                .get("timeoutSeconds")
                .and_then(|s| s.parse().ok())
                .unwrap_or(300),
        );
        let events = stream::iter(backlog)
            .chain(live)
            .take_until(tokio::time::sleep(timeout))
            .map(|change| {
                let mut line = serde_json::to_vec(
                    &json!({"type": change.event, "object": change.object.as_ref()}),
                )
                .unwrap();
                line.push(b'\n');
                Bytes::from(line)
            });
        Reply::Watch(events.boxed())
    }

    fn create(&self, state: &mut State, route: &Route, mut object: Value) -> Outcome {
        if route.subresource.is_some() {
            return Err(not_found(route));
        }
        let meta = metadata_mut(&mut object)?;
        if meta
            .get("name")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            let Some(prefix) = meta.get("generateName").and_then(Value::as_str) else {
                return Err(status(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "Invalid",
                    "metadata.name: Required value",
                ));
            };
            let name = format!("{prefix}{:05x}", state.resource_version + 1);
            meta.insert("name".into(), name.into());
        }
        let name = meta["name"].as_str().unwrap_or_default().to_owned();
        let route = Route {
            name: Some(name),
            ..route.clone()
        };
        if state.objects.contains_key(&route.key()) {
            return Err(status(
                StatusCode::CONFLICT,
                "AlreadyExists",
                &format!("{} {:?} already exists", route.plural, route.name),
            ));
        }
        // Status is the business of whoever runs the object (a test here), never of its creator.
        set_or_remove(&mut object, "status", None);
        state.resource_version += 1;
        let version = state.resource_version;
        let server_owned = json!({
            "uid": format!("stand-in-{version}"),
            "creationTimestamp": chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string(),
            "generation": 1,
        });
        let object = prepare(&route, object, Some(server_owned), None);
        state.applied.remove(&route.key());
        Ok((
            StatusCode::CREATED,
            self.commit(state, &route, "ADDED", object),
        ))
    }

    fn replace(&self, route: &Route, object: Value) -> Outcome {
        let mut state = self.state.lock().unwrap();
        let existing = state
            .objects
            .get(&route.key())
            .cloned()
            .ok_or_else(|| not_found(route))?;
        check_precondition(&existing, &object)?;
        self.update(&mut state, route, existing, object)
    }

    fn patch(
        &self,
        route: &Route,
        query: &Query,
        content_type: &str,
        body: Result<Value, Reply>,
    ) -> Outcome {
        let mut state = self.state.lock().unwrap();
        let key = route.key();
        let patch = body?;
        let Some(existing) = state.objects.get(&key).cloned() else {
            return match content_type {
                APPLY => {
                    let applied = fields(&patch);
                    let created = self.create(&mut state, route, patch)?;
                    remember_applied(&mut state, route, query, applied);
                    Ok(created)
                }
                _ => Err(not_found(route)),
            };
        };
        let mut object = Value::clone(&existing);
        match content_type {
            APPLY => {
                check_precondition(&object, &patch)?;
                let configs = state.applied.get(&key);
                let mine = applier(route, query);
                if let Some(before) = configs.and_then(|c| c.get(&mine)) {
                    let others: Vec<&Value> = configs
                        .into_iter()
                        .flatten()
                        .filter(|(who, _)| who.1 == mine.1 && **who != mine)
                        .map(|(_, config)| config)
                        .collect();
                    drop_unapplied(&mut object, before, &patch, &others);
                }
                json_patch::merge(&mut object, &patch);
            }
            MERGE | STRATEGIC_MERGE => {
                check_precondition(&object, &patch)?;
                json_patch::merge(&mut object, &patch);
            }
            JSON_PATCH => apply_json_patch(&mut object, &patch)?,
            other => {
                return Err(status(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "UnsupportedMediaType",
                    &format!("patch type {other:?}"),
                ))
            }
        }
        let updated = self.update(&mut state, route, existing, object)?;
        if content_type == APPLY {
            remember_applied(&mut state, route, query, fields(&patch));
        }
        Ok(updated)
    }

    pub(crate) fn delete(&self, route: &Route) -> Outcome {
        let mut state = self.state.lock().unwrap();
        let key = route.key();
        let removed = state.objects.remove(&key).ok_or_else(|| not_found(route))?;
        state.applied.remove(&key);
        state.resource_version += 1;
        let mut object = Arc::unwrap_or_clone(removed);
        object["metadata"]["resourceVersion"] = state.resource_version.to_string().into();
        let object = Arc::new(object);
        self.record(&mut state, "DELETED", key, object.clone());
        Ok((StatusCode::OK, object))
    }

    /// Stores `candidate` over `existing` with the status-subresource split and the metadata the
    /// server owns; a write that changes nothing keeps the resource version and sends no event.
    fn update(
        &self,
        state: &mut State,
        route: &Route,
        existing: Arc<Value>,
        candidate: Value,
    ) -> Outcome {
        let (mut object, keep_status) = match route.subresource.as_deref() {
            Some("status") => (Value::clone(&existing), candidate.get("status").cloned()),
            Some(other) => {
                return Err(status(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    &format!("subresource {other:?}"),
                ))
            }
            None => (candidate, existing.get("status").cloned()),
        };
        set_or_remove(&mut object, "status", keep_status);
        let server_owned = ["uid", "creationTimestamp", "generation", "resourceVersion"]
            .into_iter()
            .filter_map(|f| {
                existing["metadata"]
                    .get(f)
                    .map(|v| (f.to_owned(), v.clone()))
            })
            .collect::<Map<_, _>>();
        let mut object = prepare(route, object, Some(Value::Object(server_owned)), None);
        if object == *existing {
            return Ok((StatusCode::OK, existing));
        }
        if !same_outside_metadata_and_status(&object, &existing) {
            let generation = existing["metadata"]["generation"].as_i64().unwrap_or(0) + 1;
            object["metadata"]["generation"] = generation.into();
        }
        state.resource_version += 1;
        Ok((
            StatusCode::OK,
            self.commit(state, route, "MODIFIED", object),
        ))
    }

    /// Stores `object` at the current resource version and announces it; returns it as stored.
    fn commit(
        &self,
        state: &mut State,
        route: &Route,
        event: &'static str,
        object: Value,
    ) -> Arc<Value> {
        let object = Arc::new(prepare(route, object, None, Some(state.resource_version)));
        state.objects.insert(route.key(), object.clone());
        self.record(state, event, route.key(), object.clone());
        object
    }

    fn record(&self, state: &mut State, event: &'static str, key: Key, object: Arc<Value>) {
        let change = Change {
            resource_version: state.resource_version,
            event,
            key,
            object,
        };
        if self.changes.receiver_count() > 0 {
            // A watch that ended since is fine.
            let _ = self.changes.send(change.clone());
        }
        state.history.push(change);
    }
}

/// The field manager (`fieldManager`) and subresource of an apply.
fn applier(route: &Route, query: &Query) -> Applier {
    (
        query.get("fieldManager").unwrap_or_default().to_owned(),
        route.subresource.clone().unwrap_or_default(),
    )
}

fn remember_applied(state: &mut State, route: &Route, query: &Query, applied: Value) {
    state
        .applied
        .entry(route.key())
        .or_default()
        .insert(applier(route, query), applied);
}

/// The fields a configuration sets: its maps, with every other value as null.
fn fields(config: &Value) -> Value {
    match config {
        Value::Object(map) => map.iter().map(|(k, v)| (k.clone(), fields(v))).collect(),
        _ => Value::Null,
    }
}

/// Removes from `object` the fields a manager's previous configuration (`before`) set and its
/// new one (`now`) does not, unless another manager's configuration (`others`) still sets them;
/// maps are followed field by field, anything else is one field.
fn drop_unapplied(object: &mut Value, before: &Value, now: &Value, others: &[&Value]) {
    let (Some(object), Some(before)) = (object.as_object_mut(), before.as_object()) else {
        return;
    };
    for (name, was) in before {
        let still = now.get(name);
        let theirs: Vec<&Value> = others.iter().filter_map(|o| o.get(name)).collect();
        if still.is_none() && theirs.is_empty() {
            object.remove(name);
        } else if let Some(target) = object.get_mut(name) {
            drop_unapplied(target, was, still.unwrap_or(&Value::Null), &theirs);
        }
    }
}

/// Applies a JSON patch (RFC 6902) all or nothing; a `test` for null passes on an absent path,
/// as it does on the API server (kube's finalizer helper tests an absent list that way).
fn apply_json_patch(object: &mut Value, patch: &Value) -> Result<(), Reply> {
    let operations = <json_patch::Patch as serde::Deserialize>::deserialize(patch)
        .map_err(|e| status(StatusCode::BAD_REQUEST, "BadRequest", &e.to_string()))?;
    for operation in &operations.0 {
        if let json_patch::PatchOperation::Test(test) = operation {
            if test.value.is_null() && object.pointer(test.path.as_str()).is_none() {
                continue;
            }
        }
        json_patch::patch(object, std::slice::from_ref(operation))
            .map_err(|e| status(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", &e.to_string()))?;
    }
    Ok(())
}

/// 409 when `incoming` names a resource version other than the stored one.
fn check_precondition(existing: &Value, incoming: &Value) -> Result<(), Reply> {
    match incoming["metadata"]["resourceVersion"].as_str() {
        Some(wanted) if Some(wanted) != field(existing, "resourceVersion") => Err(status(
            StatusCode::CONFLICT,
            "Conflict",
            "the object has been modified; please apply your changes to the latest version and try again",
        )),
        _ => Ok(()),
    }
}

/// Sets apiVersion, kind (of a core kind), namespace and name from the route, the given
/// server-owned metadata and resource version, and folds a Secret's `stringData` into `data`.
fn prepare(
    route: &Route,
    mut object: Value,
    server_owned: Option<Value>,
    resource_version: Option<u64>,
) -> Value {
    let Some(map) = object.as_object_mut() else {
        return object;
    };
    map.insert("apiVersion".into(), route.api_version.as_str().into());
    if let Some(kind) = route.kind {
        map.insert("kind".into(), kind.into());
    }
    let meta = map.entry("metadata").or_insert_with(|| json!({}));
    if let Some(ns) = &route.namespace {
        meta["namespace"] = ns.as_str().into();
    }
    if let Some(name) = &route.name {
        meta["name"] = name.as_str().into();
    }
    if let Some(Value::Object(owned)) = server_owned {
        for (k, v) in owned {
            meta[k] = v;
        }
    }
    if let Some(version) = resource_version {
        meta["resourceVersion"] = version.to_string().into();
    }
    if route.kind == Some("Secret") {
        if let Some(Value::Object(strings)) = map.remove("stringData") {
            let data = map.entry("data").or_insert_with(|| json!({}));
            for (k, v) in strings {
                let encoded = base64::engine::general_purpose::STANDARD
                    .encode(v.as_str().unwrap_or_default());
                data[k] = encoded.into();
            }
        }
    }
    object
}

/// Whether two objects agree on everything but `metadata` and `status` (what `generation`
/// counts).
fn same_outside_metadata_and_status(a: &Value, b: &Value) -> bool {
    fn counted(object: &Value) -> impl Iterator<Item = (&String, &Value)> {
        let fields = object.as_object().into_iter().flatten();
        fields.filter(|(name, _)| *name != "metadata" && *name != "status")
    }
    counted(a).count() == counted(b).count()
        && counted(a).all(|(name, value)| b.get(name) == Some(value))
}

fn set_or_remove(object: &mut Value, name: &str, value: Option<Value>) {
    if let Some(map) = object.as_object_mut() {
        match value {
            Some(value) => map.insert(name.to_owned(), value),
            None => map.remove(name),
        };
    }
}

fn metadata_mut(object: &mut Value) -> Result<&mut Map<String, Value>, Reply> {
    object
        .as_object_mut()
        .map(|map| map.entry("metadata").or_insert_with(|| json!({})))
        .and_then(Value::as_object_mut)
        .ok_or_else(|| {
            status(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                "the body must be an object with metadata",
            )
        })
}

/// A request body as JSON, else the API server's 400.
pub(crate) fn parse(body: &[u8]) -> Result<Value, Reply> {
    serde_json::from_slice(body).map_err(|e| {
        status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            &format!("body is not JSON: {e}"),
        )
    })
}

pub(crate) fn not_found(route: &Route) -> Reply {
    let name = route.name.as_deref().unwrap_or_default();
    status(
        StatusCode::NOT_FOUND,
        "NotFound",
        &format!("{} {name:?} not found", route.plural),
    )
}

/// A `metav1.Status` failure, as the real server sends it.
pub(crate) fn status(code: StatusCode, reason: &str, message: &str) -> Reply {
    let failure = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code.as_u16(),
    });
    Reply::Json(code, Arc::new(failure))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake_api::route::route;

    const PATH: &str = "/apis/apps/v1/namespaces/a/deployments/d";

    fn send(store: &Store, method: Method, path_and_query: &str, kind: &str, body: Value) -> Value {
        let (path, query) = path_and_query
            .split_once('?')
            .unwrap_or((path_and_query, ""));
        let body = Ok(body);
        match store.handle(
            &method,
            route(path).unwrap(),
            &Query::parse(query),
            kind,
            body,
        ) {
            Reply::Json(code, value) if code.is_success() => Value::clone(&value),
            Reply::Json(code, value) => json!({"failed": code.as_u16(), "reason": value["reason"]}),
            Reply::Watch(_) => panic!("not a watch"),
        }
    }

    fn apply(store: &Store, manager: &str, path: &str, body: Value) -> Value {
        let url = format!("{path}?fieldManager={manager}&force=true");
        send(store, Method::PATCH, &url, APPLY, body)
    }

    fn deployment(spec: Value) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}, "spec": spec})
    }

    #[test]
    fn apply_drops_what_the_same_manager_no_longer_applies() {
        let store = Store::new();
        apply(
            &store,
            "op",
            PATH,
            deployment(json!({"replicas": 2, "paused": true})),
        );
        apply(
            &store,
            "other",
            PATH,
            deployment(json!({"minReadySeconds": 5, "paused": true})),
        );
        let merged = send(
            &store,
            Method::PATCH,
            PATH,
            MERGE,
            json!({"spec": {"revisionHistoryLimit": 3}}),
        );
        assert_eq!(merged["metadata"]["generation"], 3);
        let now = apply(&store, "op", PATH, deployment(json!({})));
        assert_eq!(
            now["spec"],
            json!({"minReadySeconds": 5, "paused": true, "revisionHistoryLimit": 3}),
            "replicas dropped; what another manager applies and what a patch set stay"
        );
        assert_eq!(now["metadata"]["generation"], 4);
        assert_eq!(now["metadata"]["uid"], merged["metadata"]["uid"]);
    }

    #[test]
    fn status_is_written_only_through_its_subresource() {
        let store = Store::new();
        let status_path = format!("{PATH}/status");
        let named = |fields: Value| {
            let mut object = json!({"metadata": {"name": "d"}});
            json_patch::merge(&mut object, &fields);
            object
        };
        let absent = apply(
            &store,
            "op",
            &status_path,
            named(json!({"status": {"replicas": 1}})),
        );
        assert_eq!(absent["failed"], 404);
        let created = apply(
            &store,
            "op",
            PATH,
            named(json!({"spec": {"replicas": 1}, "status": {"replicas": 9}})),
        );
        assert!(created.get("status").is_none(), "{created}");
        apply(
            &store,
            "op",
            &status_path,
            named(json!({"spec": {"replicas": 5}, "status": {"replicas": 1, "readyReplicas": 1}})),
        );
        let status = apply(
            &store,
            "op",
            &status_path,
            named(json!({"status": {"replicas": 1}})),
        );
        assert_eq!(
            status["status"],
            json!({"replicas": 1}),
            "readyReplicas no longer applied"
        );
        assert_eq!(status["spec"], json!({"replicas": 1}));
        assert_eq!(status["metadata"]["generation"], 1);
        let same = apply(
            &store,
            "op",
            &status_path,
            named(json!({"status": {"replicas": 1}})),
        );
        assert_eq!(
            same["metadata"]["resourceVersion"], status["metadata"]["resourceVersion"],
            "no change, no new version"
        );
    }

    #[test]
    fn a_json_patch_test_for_null_passes_on_an_absent_path_and_a_failed_patch_changes_nothing() {
        let store = Store::new();
        apply(&store, "op", PATH, deployment(json!({})));
        let add = json!([
            {"op": "test", "path": "/metadata/finalizers", "value": null},
            {"op": "add", "path": "/metadata/finalizers", "value": ["f"]},
        ]);
        let added = send(&store, Method::PATCH, PATH, JSON_PATCH, add.clone());
        assert_eq!(added["metadata"]["finalizers"], json!(["f"]));
        let refused = send(&store, Method::PATCH, PATH, JSON_PATCH, add);
        assert_eq!(refused["failed"], 422);
        let stored = send(&store, Method::GET, PATH, "", Value::Null);
        assert_eq!(stored, added);
    }
}
