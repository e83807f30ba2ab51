//! The fake API as a `kube::Client` for the mocked tiers: requests go through
//! `tower_test::mock::pair` to the store, each one recorded exactly as sent; a chosen write can
//! be made to fail; tests read and write the store by API path.

use std::sync::{Arc, Mutex};

use http::{Method, Request, Response, StatusCode};
use kube::client::Body;
use kube::Client;
use serde_json::Value;

use super::route::{route, Query};
use super::store::{content_type, parse, status, ReplyBody, Store};

/// One request as the client sent it.
#[derive(Clone, Debug, PartialEq)]
pub struct Call {
    pub method: String,
    pub path: String,
    /// The query string as sent (e.g. `&force=true&fieldManager=nlu-operator`).
    pub query: String,
    /// Without parameters; `None` when the request had none.
    pub content_type: Option<String>,
    /// The JSON body; `None` when empty (a body that is not JSON is kept as a string).
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

/// The fake API behind a client; clone freely (shared state).
#[derive(Clone)]
pub struct FakeApi {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    calls: Mutex<Vec<Call>>,
    /// Paths whose next write answers 500 (to exercise the error policy).
    failing: Mutex<Vec<String>>,
}

impl FakeApi {
    /// A client whose every request this fake answers, on the current Tokio runtime.
    pub fn start() -> (Client, FakeApi) {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<ReplyBody>>();
        let api = FakeApi {
            inner: Arc::new(Inner {
                store: Store::new(),
                calls: Mutex::default(),
                failing: Mutex::default(),
            }),
        };
        let server = api.clone();
        tokio::spawn(async move {
            while let Some((request, respond)) = handle.next_request().await {
                let response = server.answer(request).await;
                respond.send_response(response);
            }
        });
        (Client::new(service, "default"), api)
    }

    /// Stores `object` at `path` as a write behind the API's back would (see the module's
    /// documentation): as given, with a new resource version. Returns it as stored.
    pub fn put(&self, path: &str, object: Value) -> Value {
        Value::clone(&self.inner.store.put(&api_path(path), object))
    }

    pub fn get(&self, path: &str) -> Option<Value> {
        self.inner
            .store
            .get(&api_path(path))
            .ok()
            .map(|(_, object)| Value::clone(&object))
    }

    /// Removes a stored object (what the garbage collector does to a child whose owner is gone).
    pub fn remove(&self, path: &str) {
        let _ = self.inner.store.delete(&api_path(path));
    }

    /// Changes a stored object in place (what a user's `kubectl edit` would do).
    pub fn edit(&self, path: &str, f: impl FnOnce(&mut Value)) {
        let mut object = self.get(path).expect("object exists");
        f(&mut object);
        self.put(path, object);
    }

    /// Every request so far, oldest first.
    pub fn calls(&self) -> Vec<Call> {
        self.inner.calls.lock().unwrap().clone()
    }

    /// Returns and forgets the requests recorded so far.
    pub fn take_calls(&self) -> Vec<Call> {
        std::mem::take(&mut *self.inner.calls.lock().unwrap())
    }

    /// Reasons of the Events posted so far, in order.
    pub fn event_reasons(&self) -> Vec<String> {
        self.calls()
            .iter()
            .filter(|c| c.method == "POST" && c.path.ends_with("/events"))
            .filter_map(|c| Some(c.body.as_ref()?["reason"].as_str()?.to_owned()))
            .collect()
    }

    /// The next write (any method but GET) to `path` answers 500.
    pub fn fail_next_write(&self, path: &str) {
        self.inner.failing.lock().unwrap().push(path.to_owned());
    }

    async fn answer(&self, request: Request<Body>) -> Response<ReplyBody> {
        let (parts, body) = request.into_parts();
        let bytes = body.collect_bytes().await.expect("request body");
        let content_type = content_type(&parts.headers);
        let path = parts.uri.path().to_owned();
        let query = parts.uri.query().unwrap_or_default().to_owned();
        let body = parse(&bytes);
        self.inner.calls.lock().unwrap().push(Call {
            method: parts.method.to_string(),
            path: path.clone(),
            query: query.clone(),
            content_type: (!content_type.is_empty()).then(|| content_type.clone()),
            body: match &body {
                _ if bytes.is_empty() => None,
                Ok(json) => Some(json.clone()),
                Err(_) => Some(String::from_utf8_lossy(&bytes).into_owned().into()),
            },
        });
        if parts.method != Method::GET && self.take_failure(&path) {
            let failure = status(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                "injected failure",
            );
            return failure.into_response();
        }
        let reply = match route(&path) {
            Some(route) => {
                let query = Query::parse(&query);
                self.inner
                    .store
                    .handle(&parts.method, route, &query, &content_type, body)
            }
            None => status(
                StatusCode::NOT_FOUND,
                "NotFound",
                &format!("{path}: not a resource path"),
            ),
        };
        reply.into_response()
    }

    fn take_failure(&self, path: &str) -> bool {
        let mut failing = self.inner.failing.lock().unwrap();
        let due = failing.iter().position(|p| p == path);
        due.map(|i| failing.remove(i)).is_some()
    }
}

/// The route of a path a test names; a test naming no resource is a bug in the test.
fn api_path(path: &str) -> super::route::Route {
    route(path).unwrap_or_else(|| panic!("{path} is not an API resource path"))
}
