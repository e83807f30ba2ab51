//! The one URL the controllers under test talk to: the `nlu.dev` resources, CRDs and discovery
//! go to the real API server unchanged (status codes, conflicts, watches and all); the core kinds
//! are served by the fake API's store (`fake_api`). Every request is recorded.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use http::header::CONTENT_TYPE;
use http::StatusCode;

use crate::fake_api::{content_type, parse, route, Query, Store};

/// One request seen by the proxy.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    pub method: http::Method,
    pub path: String,
    pub query: String,
    /// Content type without parameters (e.g. `application/apply-patch+yaml`); empty if none.
    pub content_type: String,
    /// Status code of the answer (for a watch: of its header).
    pub status: StatusCode,
    /// Whether the real API server answered (else the fake API's store).
    pub real: bool,
}

struct Shared {
    upstream: kube::Client,
    store: Store,
    log: Mutex<Vec<RecordedRequest>>,
    /// Concurrent writes to make just before the first request with this method and path.
    interference: Mutex<Vec<(http::Method, String, Call)>>,
}

/// A routing proxy on a loopback port, running on the Tokio runtime of the test that started it.
pub struct ClusterProxy {
    address: SocketAddr,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

impl ClusterProxy {
    /// Starts the proxy in front of `upstream` (a client of the real server).
    pub async fn start(upstream: kube::Client) -> ClusterProxy {
        let shared = Arc::new(Shared {
            upstream,
            store: Store::new(),
            log: Mutex::default(),
            interference: Mutex::default(),
        });
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        let address = listener.local_addr().expect("bound address");
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("proxy serves");
        });
        ClusterProxy {
            address,
            shared,
            server,
        }
    }

    /// A client for the code under test: plain HTTP to the proxy, default namespace `default`.
    pub fn client(&self) -> kube::Client {
        let url = self.url().parse().expect("proxy URL");
        kube::Client::try_from(kube::Config::new(url)).expect("client of the proxy")
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Makes `write` (as another client would, through the same routing) right before the first
    /// later request with `method` and `path` is handled, so that request meets a state it did
    /// not read: how a test provokes a genuine conflict at a chosen moment.
    pub fn interfere_once(&self, method: http::Method, path: &str, write: Call) {
        self.shared
            .interference
            .lock()
            .unwrap()
            .push((method, path.to_owned(), write));
    }

    /// Every request so far, oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.log.lock().unwrap().clone()
    }
}

/// A kubeconfig for a process (`kubectl`, `nlu-operator`) that talks plain HTTP to a proxy at
/// `server` (its [`ClusterProxy::url`]), default namespace `default`.
pub fn kubeconfig_text(server: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: process-cluster\n  cluster:\n    server: {server}\n\
         contexts:\n- name: process-cluster\n  context:\n    cluster: process-cluster\n    user: admin\n    namespace: default\n\
         current-context: process-cluster\nusers:\n- name: admin\n  user: {{}}\n"
    )
}

impl Drop for ClusterProxy {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn handle(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(body) => body,
        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    let request = Call {
        method: parts.method.clone(),
        path_and_query: parts
            .uri
            .path_and_query()
            .map_or("/".to_owned(), |pq| pq.to_string()),
        content_type: content_type(&parts.headers),
        body: body.to_vec(),
    };
    let interference = {
        let mut pending = shared.interference.lock().unwrap();
        let due = pending
            .iter()
            .position(|(method, path, _)| *method == request.method && *path == request.path());
        due.map(|i| pending.remove(i).2)
    };
    if let Some(write) = interference {
        dispatch(&shared, write).await;
    }
    dispatch(&shared, request).await
}

/// A request as the proxy handles it (also the shape of an injected concurrent write).
#[derive(Clone, Debug)]
pub struct Call {
    pub method: http::Method,
    /// Path with the query string, e.g. `/api/v1/namespaces/a/secrets?watch=1`.
    pub path_and_query: String,
    pub content_type: String,
    pub body: Vec<u8>,
}

impl Call {
    fn path(&self) -> &str {
        self.path_and_query.split('?').next().unwrap_or("")
    }
}

/// Routes one call to the fake API's store or the real server and records it.
async fn dispatch(shared: &Shared, call: Call) -> Response {
    let (path, query) = call
        .path_and_query
        .split_once('?')
        .unwrap_or((&call.path_and_query, ""));
    let (response, real) = match route(path).filter(|route| route.is_core()) {
        Some(route) => {
            let reply = shared.store.handle(
                &call.method,
                route,
                &Query::parse(query),
                &call.content_type,
                parse(&call.body),
            );
            (reply.into_response().map(Body::new), false)
        }
        None => (forward(&shared.upstream, &call).await, true),
    };
    shared.log.lock().unwrap().push(RecordedRequest {
        method: call.method.clone(),
        path: path.to_owned(),
        query: query.to_owned(),
        content_type: call.content_type.clone(),
        status: response.status(),
        real,
    });
    response
}

/// Sends the call as it came to the real server (the upstream client adds its address and
/// client certificate) and streams the answer back.
async fn forward(upstream: &kube::Client, call: &Call) -> Response {
    let mut request = http::Request::new(kube::client::Body::from(call.body.clone()));
    *request.method_mut() = call.method.clone();
    *request.uri_mut() = match call.path_and_query.parse() {
        Ok(uri) => uri,
        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    if !call.content_type.is_empty() {
        if let Ok(value) = call.content_type.parse() {
            request.headers_mut().insert(CONTENT_TYPE, value);
        }
    }
    match upstream.send(request).await {
        Ok(answer) => {
            let (answer, body) = answer.into_parts();
            let mut response = Response::new(Body::new(body));
            *response.status_mut() = answer.status;
            if let Some(value) = answer.headers.get(CONTENT_TYPE) {
                response.headers_mut().insert(CONTENT_TYPE, value.clone());
            }
            response
        }
        Err(e) => (
            StatusCode::BAD_GATEWAY,
            format!("real API server unreachable: {e}"),
        )
            .into_response(),
    }
}
