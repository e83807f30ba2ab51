//! A stand-in Kubernetes API behind `tower_test::mock::pair`: it records every request exactly
//! (method, path, query, content type, body) and answers like an API server would for the calls
//! the controller makes: server-side apply stores the applied object (keeping a status the test
//! put there), merge patches merge, `/status` apply replaces the status, GET/DELETE read/remove stored objects (404
//! when absent), POST stores an Event. What it does not do: merge field ownership, validate
//! schemas, bump generations or watch; the real API server tier covers those.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use http::{Request, Response, StatusCode};
use kube::client::Body;
use kube::Client;
use serde_json::{json, Value};

/// One request as the controller sent it.
#[derive(Clone, Debug, PartialEq)]
pub struct Call {
    pub method: String,
    pub path: String,
    pub query: String,
    pub content_type: Option<String>,
    pub body: Option<Value>,
}

impl Call {
    /// `METHOD path?query`, for compact sequence assertions.
    pub fn line(&self) -> String {
        if self.query.is_empty() {
            format!("{} {}", self.method, self.path)
        } else {
            format!("{} {}?{}", self.method, self.path, self.query)
        }
    }
}

/// Objects by API path, and every call so far.
#[derive(Clone, Default)]
pub struct FakeApi {
    objects: Arc<Mutex<BTreeMap<String, Value>>>,
    calls: Arc<Mutex<Vec<Call>>>,
    /// Paths whose next write answers 500 (to exercise the error policy).
    failing: Arc<Mutex<Vec<String>>>,
}

impl FakeApi {
    /// A client whose every request this fake answers, on the current Tokio runtime.
    pub fn start() -> (Client, FakeApi) {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let api = FakeApi::default();
        let server = api.clone();
        tokio::spawn(async move {
            while let Some((request, respond)) = handle.next_request().await {
                let response = server.answer(request).await;
                respond.send_response(response);
            }
        });
        (Client::new(service, "default"), api)
    }

    pub fn put(&self, path: &str, object: Value) {
        self.objects.lock().unwrap().insert(path.to_owned(), object);
    }

    pub fn get(&self, path: &str) -> Option<Value> {
        self.objects.lock().unwrap().get(path).cloned()
    }

    /// Returns and forgets the calls recorded so far.
    pub fn take_calls(&self) -> Vec<Call> {
        std::mem::take(&mut *self.calls.lock().unwrap())
    }

    pub fn fail_next_write(&self, path: &str) {
        self.failing.lock().unwrap().push(path.to_owned());
    }

    async fn answer(&self, request: Request<Body>) -> Response<Body> {
        let (parts, body) = request.into_parts();
        let bytes = body.collect_bytes().await.expect("request body");
        let body: Option<Value> =
            (!bytes.is_empty()).then(|| serde_json::from_slice(&bytes).expect("JSON request body"));
        let call = Call {
            method: parts.method.to_string(),
            path: parts.uri.path().to_owned(),
            query: parts.uri.query().unwrap_or_default().to_owned(),
            content_type: parts
                .headers
                .get(http::header::CONTENT_TYPE)
                .map(|v| v.to_str().unwrap().to_owned()),
            body: body.clone(),
        };
        self.calls.lock().unwrap().push(call.clone());
        let path = call.path.clone();
        if call.method != "GET" {
            let mut failing = self.failing.lock().unwrap();
            if let Some(i) = failing.iter().position(|p| *p == path) {
                failing.remove(i);
                return status(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "InternalError",
                    "injected failure",
                );
            }
        }
        let mut objects = self.objects.lock().unwrap();
        match call.method.as_str() {
            "GET" => match objects.get(&path) {
                Some(obj) => respond(StatusCode::OK, obj),
                None => status(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    &format!("{path} not found"),
                ),
            },
            "DELETE" => match objects.remove(&path) {
                Some(_) => respond(
                    StatusCode::OK,
                    &json!({"kind": "Status", "apiVersion": "v1", "status": "Success"}),
                ),
                None => status(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    &format!("{path} not found"),
                ),
            },
            "PATCH" if path.ends_with("/status") => {
                let parent = path.trim_end_matches("/status").to_owned();
                let Some(obj) = objects.get_mut(&parent) else {
                    return status(
                        StatusCode::NOT_FOUND,
                        "NotFound",
                        &format!("{parent} not found"),
                    );
                };
                obj["status"] = body.expect("status body")["status"].clone();
                respond(StatusCode::OK, obj)
            }
            "PATCH" if call.content_type.as_deref() != Some("application/apply-patch+yaml") => {
                // Merge and strategic-merge patches (leases, repeated events) on scalar fields.
                let Some(obj) = objects.get_mut(&path) else {
                    return status(
                        StatusCode::NOT_FOUND,
                        "NotFound",
                        &format!("{path} not found"),
                    );
                };
                json_patch::merge(obj, &body.expect("patch body"));
                respond(StatusCode::OK, obj)
            }
            "PATCH" => {
                let mut applied = body.expect("apply body");
                if let Some(old) = objects.get(&path) {
                    if let Some(s) = old.get("status") {
                        applied["status"] = s.clone();
                    }
                }
                objects.insert(path, applied.clone());
                respond(StatusCode::OK, &applied)
            }
            "POST" => {
                let event = body.expect("event body");
                let name = event["metadata"]["name"]
                    .as_str()
                    .unwrap_or("event")
                    .to_owned();
                objects.insert(format!("{path}/{name}"), event.clone());
                respond(StatusCode::CREATED, &event)
            }
            other => status(StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed", other),
        }
    }
}

fn respond(code: StatusCode, body: &Value) -> Response<Body> {
    Response::builder()
        .status(code)
        .body(Body::from(serde_json::to_vec(body).unwrap()))
        .unwrap()
}

fn status(code: StatusCode, reason: &str, message: &str) -> Response<Body> {
    respond(
        code,
        &json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason, "message": message, "code": code.as_u16()}),
    )
}
