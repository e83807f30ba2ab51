//! `--path-prefix`: behind an Ingress path such as `/uninlu`, requests arrive with that prefix
//! (ingress-nginx passes the path on as it came), so the server strips it before routing. Paths
//! without it route as before: the kubelet's probes and in-cluster callers use the bare paths.
//! The bare prefix redirects to `prefix/`, where the playground's relative links resolve.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::Request;
use axum::http::Uri;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Router;
use tower::ServiceExt;

/// `app` with `prefix` stripped from request paths before routing (`None`: `app` itself).
pub fn strip(app: Router, prefix: Option<&str>) -> Router {
    let Some(prefix) = prefix.map(|p| p.trim_end_matches('/').to_owned()) else {
        return app;
    };
    if prefix.is_empty() {
        return app;
    }
    let prefix: Arc<str> = prefix.into();
    // Middleware on a Router runs after routing; the rewrite must run before, so the inner
    // router sits behind it as the outer one's only service.
    let rewrite = tower::service_fn(move |mut request: Request| {
        let (app, prefix) = (app.clone(), prefix.clone());
        async move {
            match target(request.uri(), &prefix) {
                Target::AddSlash(location) => {
                    return Ok::<Response, Infallible>(
                        Redirect::permanent(&location).into_response(),
                    )
                }
                Target::Stripped(uri) => *request.uri_mut() = uri,
                Target::Unchanged => {}
            }
            app.oneshot(request).await
        }
    });
    Router::new().fallback_service(rewrite)
}

/// Where a request goes, given the prefix.
#[derive(Debug, PartialEq)]
enum Target {
    /// The bare prefix: redirect to this (the prefix with a slash, query kept).
    AddSlash(String),
    /// Under the prefix: route this path.
    Stripped(Uri),
    /// Not under the prefix: route as it came.
    Unchanged,
}

fn target(uri: &Uri, prefix: &str) -> Target {
    let query = uri.query().map(|q| format!("?{q}")).unwrap_or_default();
    match uri.path().strip_prefix(prefix) {
        Some("") => Target::AddSlash(format!("{prefix}/{query}")),
        Some(rest) if rest.starts_with('/') => format!("{rest}{query}")
            .parse()
            .map_or(Target::Unchanged, Target::Stripped),
        _ => Target::Unchanged,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target_str(uri: &str, prefix: &str) -> Target {
        target(&uri.parse().unwrap(), prefix)
    }

    fn stripped(uri: &str) -> Target {
        Target::Stripped(uri.parse().unwrap())
    }

    #[test]
    fn prefixes_come_off_whole_segments_only() {
        assert_eq!(
            target_str("/uninlu/api/predict", "/uninlu"),
            stripped("/api/predict")
        );
        assert_eq!(target_str("/uninlu/?a=1", "/uninlu"), stripped("/?a=1"));
        assert_eq!(target_str("/uninlux/api", "/uninlu"), Target::Unchanged);
        assert_eq!(target_str("/healthz", "/uninlu"), Target::Unchanged);
    }

    #[test]
    fn the_bare_prefix_redirects_to_its_directory() {
        assert_eq!(
            target_str("/uninlu", "/uninlu"),
            Target::AddSlash("/uninlu/".into())
        );
        assert_eq!(
            target_str("/uninlu?a=1", "/uninlu"),
            Target::AddSlash("/uninlu/?a=1".into())
        );
    }
}
