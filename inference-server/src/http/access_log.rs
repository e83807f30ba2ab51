//! Outermost middleware: request id, in-flight gauge (model routes), request metrics and one access log line
//! per request (route, status, latency, tenant, request id; never bodies or credentials), and
//! one audit line per tenant operation (target [`AUDIT_TARGET`]: who called which task at what
//! cost, and the answer).

use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;

use super::router::AppState;
use nlu_crds::routes::Route;

use crate::auth::{Audit, TenantId, TenantLabel};
use crate::metrics::{RequestLabels, RouteLabels};

pub static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The tracing target of the audit lines, for `RUST_LOG` and `--audit-log`.
pub const AUDIT_TARGET: &str = "nlu_audit";

/// The request's id, in the request extensions for handlers that want to log it.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// The caller's id when it is a sane token (visible ASCII, at most 128 bytes), else a new UUID.
pub fn request_id(headers: &HeaderMap) -> String {
    headers
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
}

pub async fn access_log(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let started = Instant::now();
    let id = request_id(req.headers());
    let route = Route::find(req.uri().path());
    // Metrics never get one label per scanned URL.
    let label = route.map_or("other", Route::path);
    let method = req.method().clone();
    req.extensions_mut().insert(RequestId(id.clone()));

    // The gauge is the autoscaler's load metric: only model routes (the tenant operations)
    // count, so an idle pod reads 0 and not 1 for the scrape that reads it, or for its probes.
    let load = route.and_then(Route::scope).is_some();
    if load {
        state.metrics.in_flight.inc();
    }
    // Decrements also when the client disconnects and this future is dropped.
    let _in_flight = scopeguard(|| {
        if load {
            state.metrics.in_flight.dec();
        }
    });
    let mut response = next.run(req).await;

    let latency = started.elapsed();
    let status = response.status().as_u16();
    let tenant = response
        .extensions()
        .get::<TenantId>()
        .map(|t| t.0.clone())
        .unwrap_or_default();
    state
        .metrics
        .requests
        .get_or_create(&RequestLabels {
            route: label.to_owned(),
            status,
            // The auth layer's bounded label: one series per tenant would grow without end.
            tenant: response
                .extensions()
                .get::<TenantLabel>()
                .map(|t| t.0.clone())
                .unwrap_or_default(),
        })
        .inc();
    state
        .metrics
        .request_seconds
        .get_or_create(&RouteLabels {
            route: label.to_owned(),
        })
        .observe(latency.as_secs_f64());
    tracing::info!(
        target: "access",
        method = %method,
        route = label,
        status,
        latency_ms = latency.as_secs_f64() * 1000.0,
        tenant = tenant.as_str(),
        request_id = id.as_str(),
        "request"
    );
    if load {
        // Every tenant operation, refused ones too; the auth layer tells who (absent: not
        // authenticated, or `--auth none`).
        let audit = response.extensions().get::<Audit>();
        tracing::info!(
            target: AUDIT_TARGET,
            tenant = tenant.as_str(),
            subject = audit.map_or("", |a| a.subject.as_str()),
            jti = audit.map_or("", |a| a.token_id.as_str()),
            task = audit.and_then(|a| a.task).unwrap_or_default(),
            cost = audit.map_or(0, |a| a.cost),
            status,
            request_id = id.as_str(),
            route = label,
            method = %method,
            "audit"
        );
    }
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID.clone(), value);
    }
    response
}

struct Guard<F: FnMut()>(F);

impl<F: FnMut()> Drop for Guard<F> {
    fn drop(&mut self) {
        (self.0)()
    }
}

fn scopeguard<F: FnMut()>(f: F) -> Guard<F> {
    Guard(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_id_is_echoed_only_when_sane() {
        let mut headers = HeaderMap::new();
        headers.insert(&REQUEST_ID, HeaderValue::from_static("abc-123"));
        assert_eq!(request_id(&headers), "abc-123");
        headers.insert(&REQUEST_ID, HeaderValue::from_static("has space"));
        assert_ne!(request_id(&headers), "has space");
        assert_eq!(request_id(&HeaderMap::new()).len(), 36);
    }
}
