//! An in-memory stand-in for the core kinds the controllers write (Secrets, Deployments,
//! Services, Events, ...), because the crd-apiserver serves custom resources only.
//!
//! NOT a real API server. It does: get, list and watch (equality label selectors, `metadata.name`
//! / `metadata.namespace` field selectors, resource versions, synthetic ADDED events for watches
//! from `""`/`"0"`), create, replace with a `resourceVersion` precondition (409 on a stale one),
//! patch (server-side apply as a JSON merge patch, merge and strategic-merge patches as JSON merge
//! patches, JSON patches), the `status` subresource (a status write changes only `status`, an
//! object write keeps it), `generation` bumped by non-status changes, no new resource version for
//! a write that changes nothing, Secret `stringData` folded into `data`, delete.
//! It does not: validate or default objects, keep field managers or report apply conflicts,
//! collect garbage through owner references, honour finalizers of core objects, or run anything
//! (no Pods: a test writes a Deployment's status itself to play the kubelet and controllers).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use futures::stream::{self, BoxStream, StreamExt};
use http::{Method, StatusCode};
use serde_json::{json, Map, Value};
use tokio::sync::broadcast;

/// A kind the stand-in serves.
pub(crate) struct Kind {
    api_version: &'static str,
    plural: &'static str,
    kind: &'static str,
}

const fn kind(api_version: &'static str, plural: &'static str, kind: &'static str) -> Kind {
    Kind {
        api_version,
        plural,
        kind,
    }
}

/// The core kinds our operator writes or reads. Anything else (the `nlu.dev` group, discovery,
/// CRDs) is not the stand-in's business and goes to the real server.
const KINDS: &[Kind] = &[
    kind("v1", "secrets", "Secret"),
    kind("v1", "configmaps", "ConfigMap"),
    kind("v1", "services", "Service"),
    kind("v1", "serviceaccounts", "ServiceAccount"),
    kind("v1", "events", "Event"),
    kind("v1", "pods", "Pod"),
    kind("apps/v1", "deployments", "Deployment"),
    kind("networking.k8s.io/v1", "ingresses", "Ingress"),
    kind("networking.k8s.io/v1", "networkpolicies", "NetworkPolicy"),
    kind(
        "autoscaling/v2",
        "horizontalpodautoscalers",
        "HorizontalPodAutoscaler",
    ),
    kind("policy/v1", "poddisruptionbudgets", "PodDisruptionBudget"),
    kind("discovery.k8s.io/v1", "endpointslices", "EndpointSlice"),
    kind("events.k8s.io/v1", "events", "Event"),
    kind("coordination.k8s.io/v1", "leases", "Lease"),
];

/// A request path that names a stand-in kind.
pub(crate) struct Route {
    kind: &'static Kind,
    namespace: Option<String>,
    name: Option<String>,
    subresource: Option<String>,
}

/// `/api/v1/...` or `/apis/GROUP/VERSION/...` of a stand-in kind, else `None`.
pub(crate) fn route(path: &str) -> Option<Route> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (api_version, rest) = match parts.as_slice() {
        ["api", "v1", rest @ ..] => ("v1".to_owned(), rest),
        ["apis", group, version, rest @ ..] => (format!("{group}/{version}"), rest),
        _ => return None,
    };
    let (namespace, plural, name, subresource) = match rest {
        ["namespaces", ns, plural, more @ ..] if more.len() <= 2 => {
            (Some(ns.to_string()), *plural, more.first(), more.get(1))
        }
        [plural] => (None, *plural, None, None),
        _ => return None,
    };
    let kind = KINDS
        .iter()
        .find(|k| k.api_version == api_version && k.plural == plural)?;
    Some(Route {
        kind,
        namespace,
        name: name.map(|s| s.to_string()),
        subresource: subresource.map(|s| s.to_string()),
    })
}

/// What the stand-in answers.
pub(crate) enum Reply {
    Json(StatusCode, Value),
    Watch(BoxStream<'static, Bytes>),
}

#[derive(Clone)]
struct Change {
    resource_version: u64,
    event: &'static str,
    plural: &'static str,
    object: Value,
}

#[derive(Default)]
struct State {
    resource_version: u64,
    /// (kind's apiVersion/plural, namespace, name) -> object.
    objects: BTreeMap<(String, String, String), Value>,
    history: Vec<Change>,
}

pub(crate) struct Store {
    state: Mutex<State>,
    changes: broadcast::Sender<Change>,
}

impl Store {
    pub(crate) fn new() -> Store {
        Store {
            state: Mutex::default(),
            changes: broadcast::channel(1024).0,
        }
    }

    pub(crate) fn handle(
        &self,
        method: &Method,
        route: Route,
        query: &Query,
        content_type: &str,
        body: &[u8],
    ) -> Reply {
        let result = match (method, route.name.is_some()) {
            (&Method::GET, false) if query.flag("watch") => return self.watch(&route, query),
            (&Method::GET, false) => self.list(&route, query),
            (&Method::GET, true) => self.get(&route),
            (&Method::POST, false) => parse(body).and_then(|object| self.create(&route, object)),
            (&Method::PUT, true) => parse(body).and_then(|object| self.replace(&route, object)),
            (&Method::PATCH, true) => self.patch(&route, content_type, body),
            (&Method::DELETE, true) => self.delete(&route),
            _ => Err(status(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                "not supported by the stand-in",
            )),
        };
        match result {
            Ok((code, object)) => Reply::Json(code, object),
            Err(failure) => failure,
        }
    }

    fn get(&self, route: &Route) -> Outcome {
        let state = self.state.lock().unwrap();
        match state.objects.get(&key(route)) {
            Some(object) => Ok((StatusCode::OK, object.clone())),
            None => Err(not_found(route)),
        }
    }

    fn list(&self, route: &Route, query: &Query) -> Outcome {
        let selector = Selector::parse(query)?;
        let state = self.state.lock().unwrap();
        let items: Vec<Value> = state
            .objects
            .values()
            .filter(|object| in_scope(route, object) && selector.matches(object))
            .cloned()
            .collect();
        let list = json!({
            "apiVersion": route.kind.api_version,
            "kind": format!("{}List", route.kind.kind),
            "metadata": {"resourceVersion": state.resource_version.to_string()},
            "items": items,
        });
        Ok((StatusCode::OK, list))
    }

    /// Events after the requested resource version (or every current object as ADDED when none
    /// is given), then live changes, until `timeoutSeconds`.
    fn watch(&self, route: &Route, query: &Query) -> Reply {
        let selector = match Selector::parse(query) {
            Ok(selector) => selector,
            Err(failure) => return failure,
        };
        let namespace = route.namespace.clone();
        let plural = route.kind.plural;
        let matches = move |change: &Change| {
            change.plural == plural
                && namespace
                    .as_deref()
                    .is_none_or(|ns| field(&change.object, "namespace") == Some(ns))
                && selector.matches(&change.object)
        };
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
                    .values()
                    .map(|object| Change {
                        resource_version: state.resource_version,
                        event: "ADDED",
                        plural: kind_of(object),
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
                let mut line =
                    serde_json::to_vec(&json!({"type": change.event, "object": change.object}))
                        .unwrap();
                line.push(b'\n');
                Bytes::from(line)
            });
        Reply::Watch(events.boxed())
    }

    fn create(&self, route: &Route, mut object: Value) -> Outcome {
        let mut state = self.state.lock().unwrap();
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
        if state.objects.contains_key(&key(&route)) {
            return Err(status(
                StatusCode::CONFLICT,
                "AlreadyExists",
                &format!("{} {:?} already exists", route.kind.plural, route.name),
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
        Ok((
            StatusCode::CREATED,
            self.commit(&mut state, &route, "ADDED", object),
        ))
    }

    fn replace(&self, route: &Route, object: Value) -> Outcome {
        let mut state = self.state.lock().unwrap();
        let existing = state
            .objects
            .get(&key(route))
            .cloned()
            .ok_or_else(|| not_found(route))?;
        check_precondition(&existing, &object)?;
        self.update(&mut state, route, existing, object)
    }

    fn patch(&self, route: &Route, content_type: &str, body: &[u8]) -> Outcome {
        let mut state = self.state.lock().unwrap();
        let existing = state.objects.get(&key(route)).cloned();
        let patch = parse(body)?;
        let patched = match (content_type, existing.clone()) {
            ("application/apply-patch+yaml", None) => {
                drop(state);
                return self.create(route, patch);
            }
            (
                "application/apply-patch+yaml"
                | "application/merge-patch+json"
                | "application/strategic-merge-patch+json",
                Some(mut object),
            ) => {
                check_precondition(&object, &patch)?;
                json_patch::merge(&mut object, &patch);
                object
            }
            ("application/json-patch+json", Some(mut object)) => {
                let operations: json_patch::Patch = serde_json::from_value(patch)
                    .map_err(|e| status(StatusCode::BAD_REQUEST, "BadRequest", &e.to_string()))?;
                json_patch::patch(&mut object, &operations).map_err(|e| {
                    status(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", &e.to_string())
                })?;
                object
            }
            (_, None) => return Err(not_found(route)),
            (other, _) => {
                return Err(status(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "UnsupportedMediaType",
                    &format!("patch type {other:?}"),
                ))
            }
        };
        self.update(&mut state, route, existing.unwrap_or_default(), patched)
    }

    fn delete(&self, route: &Route) -> Outcome {
        let mut state = self.state.lock().unwrap();
        let mut object = state
            .objects
            .remove(&key(route))
            .ok_or_else(|| not_found(route))?;
        state.resource_version += 1;
        object["metadata"]["resourceVersion"] = state.resource_version.to_string().into();
        self.record(&mut state, "DELETED", route.kind.plural, object.clone());
        Ok((StatusCode::OK, object))
    }

    /// Stores `candidate` over `existing` with the status-subresource split and the metadata the
    /// server owns; a write that changes nothing keeps the resource version and sends no event.
    fn update(
        &self,
        state: &mut State,
        route: &Route,
        existing: Value,
        candidate: Value,
    ) -> Outcome {
        let (mut object, keep_status) = match route.subresource.as_deref() {
            Some("status") => (existing.clone(), candidate.get("status").cloned()),
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
        if object == existing {
            return Ok((StatusCode::OK, existing));
        }
        if without_metadata_and_status(&object) != without_metadata_and_status(&existing) {
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
    ) -> Value {
        let object = prepare(route, object, None, Some(state.resource_version));
        state.objects.insert(key(route), object.clone());
        self.record(state, event, route.kind.plural, object.clone());
        object
    }

    fn record(&self, state: &mut State, event: &'static str, plural: &'static str, object: Value) {
        let change = Change {
            resource_version: state.resource_version,
            event,
            plural,
            object,
        };
        state.history.push(change.clone());
        // No receiver (no watch open) is fine.
        let _ = self.changes.send(change);
    }
}

impl Clone for Route {
    fn clone(&self) -> Self {
        Route {
            kind: self.kind,
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            subresource: self.subresource.clone(),
        }
    }
}

type Outcome = Result<(StatusCode, Value), Reply>;

/// The parsed query string of a request.
pub(crate) struct Query(Vec<(String, String)>);

impl Query {
    pub(crate) fn parse(query: Option<&str>) -> Query {
        Query(
            form_urlencoded::parse(query.unwrap_or("").as_bytes())
                .into_owned()
                .collect(),
        )
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn flag(&self, name: &str) -> bool {
        matches!(self.get(name), Some("true" | "1"))
    }
}

/// Equality-based label and field selectors (`k=v`, `k==v`, `k!=v`, `k`, `!k`; fields
/// `metadata.name` and `metadata.namespace`). Set-based selectors are refused, not ignored.
#[derive(Clone)]
struct Selector {
    labels: Vec<(String, Requirement)>,
    fields: Vec<(String, Requirement)>,
}

#[derive(Clone)]
enum Requirement {
    Equals(String),
    NotEquals(String),
    Exists,
    Absent,
}

impl Selector {
    fn parse(query: &Query) -> Result<Selector, Reply> {
        Ok(Selector {
            labels: requirements(query.get("labelSelector").unwrap_or(""))?,
            fields: requirements(query.get("fieldSelector").unwrap_or(""))?,
        })
    }

    fn matches(&self, object: &Value) -> bool {
        let labels = &object["metadata"]["labels"];
        self.labels
            .iter()
            .all(|(k, r)| r.holds(labels.get(k).and_then(Value::as_str)))
            && self.fields.iter().all(|(k, r)| {
                let value = match k.as_str() {
                    "metadata.name" => field(object, "name"),
                    "metadata.namespace" => field(object, "namespace"),
                    _ => None,
                };
                r.holds(value)
            })
    }
}

impl Requirement {
    fn holds(&self, value: Option<&str>) -> bool {
        match self {
            Requirement::Equals(want) => value == Some(want),
            Requirement::NotEquals(want) => value != Some(want),
            Requirement::Exists => value.is_some(),
            Requirement::Absent => value.is_none(),
        }
    }
}

fn requirements(text: &str) -> Result<Vec<(String, Requirement)>, Reply> {
    let mut out = Vec::new();
    for term in text.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        if term.contains(" in ") || term.contains(" notin ") || term.contains('(') {
            return Err(status(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                &format!("set-based selector {term:?} not supported by the stand-in"),
            ));
        }
        let requirement = if let Some((k, v)) = term.split_once("!=") {
            (k, Requirement::NotEquals(v.to_owned()))
        } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
            (k, Requirement::Equals(v.to_owned()))
        } else if let Some(k) = term.strip_prefix('!') {
            (k, Requirement::Absent)
        } else {
            (term, Requirement::Exists)
        };
        out.push((requirement.0.trim().to_owned(), requirement.1));
    }
    Ok(out)
}

fn key(route: &Route) -> (String, String, String) {
    (
        format!("{}/{}", route.kind.api_version, route.kind.plural),
        route.namespace.clone().unwrap_or_default(),
        route.name.clone().unwrap_or_default(),
    )
}

fn in_scope(route: &Route, object: &Value) -> bool {
    object["apiVersion"] == route.kind.api_version
        && kind_of(object) == route.kind.plural
        && route
            .namespace
            .as_deref()
            .is_none_or(|ns| field(object, "namespace") == Some(ns))
}

fn kind_of(object: &Value) -> &'static str {
    KINDS
        .iter()
        .find(|k| object["apiVersion"] == k.api_version && object["kind"] == k.kind)
        .map_or("", |k| k.plural)
}

fn field<'a>(object: &'a Value, name: &str) -> Option<&'a str> {
    object["metadata"][name].as_str()
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

/// Sets kind, apiVersion, namespace and name from the route, the given server-owned metadata
/// and resource version, and folds a Secret's `stringData` into `data`.
fn prepare(
    route: &Route,
    mut object: Value,
    server_owned: Option<Value>,
    resource_version: Option<u64>,
) -> Value {
    let Some(map) = object.as_object_mut() else {
        return object;
    };
    map.insert("apiVersion".into(), route.kind.api_version.into());
    map.insert("kind".into(), route.kind.kind.into());
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
    if route.kind.kind == "Secret" {
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

fn without_metadata_and_status(object: &Value) -> Value {
    let mut rest = object.clone();
    if let Some(map) = rest.as_object_mut() {
        map.remove("metadata");
        map.remove("status");
    }
    rest
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

fn parse(body: &[u8]) -> Result<Value, Reply> {
    serde_json::from_slice(body).map_err(|e| {
        status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            &format!("body is not JSON: {e}"),
        )
    })
}

fn not_found(route: &Route) -> Reply {
    let name = route.name.as_deref().unwrap_or_default();
    status(
        StatusCode::NOT_FOUND,
        "NotFound",
        &format!("{} {name:?} not found", route.kind.plural),
    )
}

/// A `metav1.Status` failure, as the real server sends it.
fn status(code: StatusCode, reason: &str, message: &str) -> Reply {
    Reply::Json(
        code,
        json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code.as_u16(),
        }),
    )
}
