//! The one URL the controllers under test talk to: the `nlu.dev` resources, CRDs and discovery
//! go to the real API server unchanged (status codes, conflicts, watches and all); the core kinds
//! are served by the in-memory stand-in. Every request is recorded.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use http::header::CONTENT_TYPE;
use http::StatusCode;

use crate::stand_in::{self, Query, Reply, Store};

/// One request seen by the proxy.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    pub method: http::Method,
    pub path: String,
    pub query: String,
    /// Status code of the answer (for a watch: of its header).
    pub status: StatusCode,
    /// Whether the real API server answered (else the stand-in).
    pub real: bool,
}

struct Shared {
    upstream: kube::Client,
    store: Store,
    log: Mutex<Vec<RecordedRequest>>,
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
        let shared = Arc::new(Shared { upstream, store: Store::new(), log: Mutex::default() });
        let app = axum::Router::new().fallback(handle).with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a loopback port");
        let address = listener.local_addr().expect("bound address");
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("proxy serves");
        });
        ClusterProxy { address, shared, server }
    }

    /// A client for the code under test: plain HTTP to the proxy, default namespace `default`.
    pub fn client(&self) -> kube::Client {
        let url = format!("http://{}", self.address).parse().expect("proxy URL");
        kube::Client::try_from(kube::Config::new(url)).expect("client of the proxy")
    }

    /// Every request so far, oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.log.lock().unwrap().clone()
    }
}

impl Drop for ClusterProxy {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn handle(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let method = parts.method.clone();
    let path = parts.uri.path().to_owned();
    let query = parts.uri.query().unwrap_or_default().to_owned();
    let (response, real) = match stand_in::route(&path) {
        Some(route) => {
            let body = match axum::body::to_bytes(body, usize::MAX).await {
                Ok(body) => body,
                Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
            };
            let content_type = parts.headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
            let content_type = content_type.split(';').next().unwrap_or("").trim();
            let reply = shared.store.handle(&parts.method, route, &Query::parse(parts.uri.query()), content_type, &body);
            (stand_in_response(reply), false)
        }
        None => (forward(&shared.upstream, parts, body).await, true),
    };
    shared.log.lock().unwrap().push(RecordedRequest {
        method,
        path,
        query,
        status: response.status(),
        real,
    });
    response
}

fn stand_in_response(reply: Reply) -> Response {
    match reply {
        Reply::Json(code, value) => (code, [(CONTENT_TYPE, "application/json")], value.to_string()).into_response(),
        Reply::Watch(events) => Response::builder()
            .header(CONTENT_TYPE, "application/json")
            .body(Body::from_stream(futures::StreamExt::map(events, Ok::<_, std::convert::Infallible>)))
            .expect("watch response"),
    }
}

/// Sends the request as it came to the real server (the upstream client adds its address and
/// client certificate) and streams the answer back.
async fn forward(upstream: &kube::Client, parts: http::request::Parts, body: Body) -> Response {
    let body = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(body) => body,
        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    let mut request = http::Request::new(kube::client::Body::from(body));
    *request.method_mut() = parts.method;
    *request.uri_mut() = parts.uri.path_and_query().map_or("/".into(), |pq| pq.as_str()).parse().expect("path and query");
    for name in [CONTENT_TYPE, http::header::ACCEPT] {
        if let Some(value) = parts.headers.get(&name) {
            request.headers_mut().insert(name, value.clone());
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
        Err(e) => (StatusCode::BAD_GATEWAY, format!("real API server unreachable: {e}")).into_response(),
    }
}
