//! `--path-prefix`: behind an Ingress path such as `/uninlu`, requests arrive with that prefix
//! (ingress-nginx passes the path on as it came), so the server strips it before routing. Paths
//! without it route as before: the kubelet's probes and in-cluster callers use the bare paths.

use axum::extract::Request;
use axum::http::Uri;
use axum::Router;
use tower::ServiceBuilder;

/// `app` with `prefix` stripped from request paths before routing (`None`: `app` itself).
pub fn strip(app: Router, prefix: Option<&str>) -> Router {
    let Some(prefix) = prefix.map(|p| p.trim_end_matches('/').to_owned()) else {
        return app;
    };
    if prefix.is_empty() {
        return app;
    }
    // Middleware on a Router runs after routing; the rewrite must run before, so the inner
    // router sits behind it as the outer one's only service.
    let rewrite = ServiceBuilder::new()
        .map_request(move |mut request: Request| {
            if let Some(uri) = without_prefix(request.uri(), &prefix) {
                *request.uri_mut() = uri;
            }
            request
        })
        .service(app);
    Router::new().fallback_service(rewrite)
}

/// The URI without `prefix` when its path is the prefix or lies under it.
fn without_prefix(uri: &Uri, prefix: &str) -> Option<Uri> {
    let rest = uri.path().strip_prefix(prefix)?;
    let path = match rest {
        "" => "/",
        r if r.starts_with('/') => r,
        _ => return None,
    };
    let path_and_query = match uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path.to_owned(),
    };
    path_and_query.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strip_str(uri: &str, prefix: &str) -> Option<String> {
        without_prefix(&uri.parse().unwrap(), prefix).map(|u| u.to_string())
    }

    #[test]
    fn prefixes_come_off_whole_segments_only() {
        assert_eq!(
            strip_str("/uninlu/api/predict", "/uninlu").as_deref(),
            Some("/api/predict")
        );
        assert_eq!(strip_str("/uninlu", "/uninlu").as_deref(), Some("/"));
        assert_eq!(
            strip_str("/uninlu/?a=1", "/uninlu").as_deref(),
            Some("/?a=1")
        );
        assert_eq!(strip_str("/uninlux/api", "/uninlu"), None);
        assert_eq!(strip_str("/healthz", "/uninlu"), None);
    }
}
