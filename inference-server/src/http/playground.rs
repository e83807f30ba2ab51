//! The playground page at `GET /` (off with `--no-playground`): static files embedded in the
//! binary, no CDN, calling the same API as every client.

use axum::http::header::{self, HeaderName};
use axum::response::IntoResponse;
use nlu_crds::routes::Route;

const INDEX: &str = include_str!("../../static/index.html");
const SCRIPT: &str = include_str!("../../static/playground.js");
const STYLE: &str = include_str!("../../static/playground.css");

/// Only this origin's files and API: nothing inline, nothing from elsewhere.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; \
                   base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    let headers: [(HeaderName, &'static str); 4] = [
        (header::CONTENT_TYPE, content_type),
        (header::CONTENT_SECURITY_POLICY, CSP),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::CACHE_CONTROL, "no-cache"),
    ];
    (headers, body)
}

/// The playground page (404 when the server runs with --no-playground).
#[utoipa::path(get, path = Route::Playground.openapi_path(), tag = "meta",
    responses(
        (status = 200, description = "The playground page", body = String, content_type = "text/html; charset=utf-8"),
        (status = 404, description = "The server runs with --no-playground", body = super::errors::ErrorBody)))]
pub async fn index() -> impl IntoResponse {
    asset("text/html; charset=utf-8", INDEX)
}

pub async fn script() -> impl IntoResponse {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

pub async fn style() -> impl IntoResponse {
    asset("text/css; charset=utf-8", STYLE)
}
