//! Test harness: a real `redis-server` per test (on a free loopback port, no persistence) and a
//! Kubernetes API stand-in behind `tower-test`.
//!
//! What is real: Redis, the controller code, kube's client and finalizer helper, the access
//! contract's verifier and quota script. What is not: the API server. The stand-in keeps objects
//! by URL path, answers GET (404 when absent), POST, PUT, PATCH (server-side apply stores the
//! body; merge and JSON patches are applied with the `json-patch` crate, so a failing `test`
//! operation is refused as a real server would), and records every request for assertions.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use http::{Request, Response, StatusCode};
use kube::client::Body;
use nlu_testkit::RedisServer;
use serde_json::{json, Value};

/// A real `redis-server` for one test.
pub fn redis() -> RedisServer {
    RedisServer::start().expect("the Tenant tests need redis-server (apt-get install -y redis-server)")
}

/// A plain synchronous connection for assertions.
pub fn redis_conn(redis: &RedisServer) -> redis::Connection {
    redis::Client::open(redis.url())
        .unwrap()
        .get_connection()
        .unwrap()
}

/// One request the controller sent.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub query: String,
    pub content_type: String,
    pub body: Value,
}

#[derive(Default)]
struct State {
    objects: BTreeMap<String, Value>,
    requests: Vec<Recorded>,
    version: u64,
}

/// The API stand-in; clone freely (shared state).
#[derive(Clone)]
pub struct FakeApi {
    state: Arc<Mutex<State>>,
}

impl FakeApi {
    /// A client talking to a new stand-in.
    pub fn start() -> (kube::Client, FakeApi) {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let api = FakeApi {
            state: Arc::default(),
        };
        let served = api.clone();
        tokio::spawn(async move {
            while let Some((request, send)) = handle.next_request().await {
                let response = served.answer(request).await;
                send.send_response(response);
            }
        });
        (kube::Client::new(service, "default"), api)
    }

    pub fn put(&self, path: &str, obj: Value) {
        let mut s = self.state.lock().unwrap();
        s.version += 1;
        let mut obj = obj;
        obj["metadata"]["resourceVersion"] = json!(s.version.to_string());
        s.objects.insert(path.to_owned(), obj);
    }

    pub fn get(&self, path: &str) -> Option<Value> {
        self.state.lock().unwrap().objects.get(path).cloned()
    }

    /// Removes a stored object (what the garbage collector does to a child whose owner is gone).
    pub fn remove(&self, path: &str) {
        let mut s = self.state.lock().unwrap();
        s.version += 1;
        s.objects.remove(path);
    }

    /// Changes a stored object in place (what a user's `kubectl edit` would do).
    pub fn edit(&self, path: &str, f: impl FnOnce(&mut Value)) {
        let mut obj = self.get(path).expect("object exists");
        f(&mut obj);
        self.put(path, obj);
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.state.lock().unwrap().requests.clone()
    }

    /// Reasons of the Events posted so far, in order.
    pub fn event_reasons(&self) -> Vec<String> {
        self.requests()
            .iter()
            .filter(|r| r.method == "POST" && r.path.ends_with("/events"))
            .map(|r| r.body["reason"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    async fn answer(&self, request: Request<Body>) -> Response<Body> {
        let method = request.method().to_string();
        let path = request.uri().path().to_owned();
        let query = request.uri().query().unwrap_or_default().to_owned();
        let content_type = request
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let bytes = request.into_body().collect_bytes().await.unwrap();
        let body: Value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap()
        };
        let mut s = self.state.lock().unwrap();
        s.requests.push(Recorded {
            method: method.clone(),
            path: path.clone(),
            query,
            content_type: content_type.clone(),
            body: body.clone(),
        });
        s.version += 1;
        let version = s.version.to_string();
        let (object_path, subresource) = match path.strip_suffix("/status") {
            Some(parent) => (parent.to_owned(), true),
            None => (path.clone(), false),
        };
        let result = match method.as_str() {
            "GET" => s.objects.get(&path).cloned().ok_or(StatusCode::NOT_FOUND),
            "POST" => {
                let name = body["metadata"]["name"]
                    .as_str()
                    .unwrap_or("generated")
                    .to_owned();
                let full = format!("{path}/{name}");
                match s.objects.entry(full) {
                    std::collections::btree_map::Entry::Occupied(_) => Err(StatusCode::CONFLICT),
                    std::collections::btree_map::Entry::Vacant(slot) => {
                        let mut obj = body;
                        obj["metadata"]["resourceVersion"] = json!(version);
                        slot.insert(obj.clone());
                        Ok(obj)
                    }
                }
            }
            "PUT" => match s.objects.get(&path) {
                Some(old)
                    if old["metadata"]["resourceVersion"]
                        != body["metadata"]["resourceVersion"] =>
                {
                    Err(StatusCode::CONFLICT)
                }
                Some(_) => {
                    let mut obj = body;
                    obj["metadata"]["resourceVersion"] = json!(version);
                    s.objects.insert(path.clone(), obj.clone());
                    Ok(obj)
                }
                None => Err(StatusCode::NOT_FOUND),
            },
            "PATCH" => {
                let existing = s.objects.get(&object_path).cloned();
                patch(existing, &content_type, subresource, body).map(|mut obj| {
                    obj["metadata"]["resourceVersion"] = json!(version);
                    s.objects.insert(object_path.clone(), obj.clone());
                    obj
                })
            }
            _ => Err(StatusCode::METHOD_NOT_ALLOWED),
        };
        match result {
            Ok(obj) => respond(StatusCode::OK, &obj),
            Err(code) => respond(
                code,
                &json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code.as_u16(),
                        "reason": reason(code), "message": format!("{method} {path}: {code}")}),
            ),
        }
    }
}

fn patch(
    existing: Option<Value>,
    content_type: &str,
    subresource: bool,
    body: Value,
) -> Result<Value, StatusCode> {
    match content_type {
        "application/apply-patch+yaml" => Ok(match (existing, subresource) {
            (Some(mut obj), true) => {
                obj["status"] = body["status"].clone();
                obj
            }
            (None, true) => return Err(StatusCode::NOT_FOUND),
            (Some(obj), false) => {
                let mut merged = obj;
                json_patch::merge(&mut merged, &body);
                merged
            }
            (None, false) => body,
        }),
        "application/merge-patch+json" => {
            let mut obj = existing.ok_or(StatusCode::NOT_FOUND)?;
            json_patch::merge(&mut obj, &body);
            Ok(obj)
        }
        "application/json-patch+json" => {
            let mut obj = existing.ok_or(StatusCode::NOT_FOUND)?;
            // An absent list reads as null, as the API server's JSON patch does.
            if obj["metadata"].get("finalizers").is_none() {
                obj["metadata"]["finalizers"] = Value::Null;
            }
            let ops: json_patch::Patch =
                serde_json::from_value(body).map_err(|_| StatusCode::BAD_REQUEST)?;
            json_patch::patch(&mut obj, &ops).map_err(|_| StatusCode::UNPROCESSABLE_ENTITY)?;
            Ok(obj)
        }
        _ => Err(StatusCode::UNSUPPORTED_MEDIA_TYPE),
    }
}

/// The `reason` the API server gives (clients match on it, e.g. `NotFound`).
fn reason(code: StatusCode) -> &'static str {
    match code {
        StatusCode::NOT_FOUND => "NotFound",
        StatusCode::CONFLICT => "Conflict",
        StatusCode::UNPROCESSABLE_ENTITY => "Invalid",
        StatusCode::BAD_REQUEST => "BadRequest",
        _ => "InternalError",
    }
}

fn respond(code: StatusCode, body: &Value) -> Response<Body> {
    Response::builder()
        .status(code)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Body::from(serde_json::to_vec(body).unwrap()))
        .unwrap()
}
