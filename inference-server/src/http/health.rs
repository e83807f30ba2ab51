//! Probes, metrics and model info.

use std::sync::atomic::{AtomicBool, Ordering};

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::Json;
use serde_json::json;

use crate::error::{Error, Kind};
use super::router::AppState;
use crate::engine::ModelInfo;
use nlu_crds::routes::Route;

/// A dependency's own readiness (e.g. the quota backend under fail-closed).
pub type ReadinessCheck = Box<dyn Fn() -> Result<(), &'static str> + Send + Sync>;

/// Readiness: the model is loaded and one warm-up batch ran, every dependency check passes,
/// and shutdown has not begun.
#[derive(Default)]
pub struct Health {
    warmed_up: AtomicBool,
    draining: AtomicBool,
    checks: Vec<ReadinessCheck>,
}

impl Health {
    pub fn with_checks(checks: Vec<ReadinessCheck>) -> Self {
        Health { checks, ..Health::default() }
    }

    pub fn set_warmed_up(&self) {
        self.warmed_up.store(true, Ordering::SeqCst);
    }

    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    /// `Err(reason)` while not ready.
    pub fn readiness(&self) -> Result<(), &'static str> {
        if self.draining.load(Ordering::SeqCst) {
            Err("shutting down")
        } else if !self.warmed_up.load(Ordering::SeqCst) {
            Err("model loading")
        } else {
            self.checks.iter().try_for_each(|check| check())
        }
    }
}

/// Liveness: answers while the process serves HTTP, also while the model loads.
#[utoipa::path(get, path = Route::Healthz.openapi_path(), tag = "probes",
    responses((status = 200, description = "Alive", body = super::openapi::Status, example = json!({"status": "alive"}))))]
pub async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "alive" }))
}

/// Readiness: the model is loaded and warmed up, dependencies (Redis under auth) are reachable,
/// and shutdown has not begun.
#[utoipa::path(get, path = Route::Readyz.openapi_path(), tag = "probes",
    responses(
        (status = 200, description = "Ready", body = super::openapi::Status, example = json!({"status": "ready"})),
        (status = 503, description = "Not ready (loading, a dependency down, or shutting down)", body = super::errors::ErrorBody)))]
pub async fn readyz(State(state): State<AppState>) -> Result<Json<serde_json::Value>, Error> {
    state
        .health
        .readiness()
        .map(|()| Json(json!({ "status": "ready" })))
        .map_err(|reason| Error::new(Kind::Unavailable, "not_ready", reason))
}

/// The second seed app's health route, for its clients: ready or not, as `/readyz`.
#[utoipa::path(get, path = Route::Health.openapi_path(), tag = "probes",
    responses(
        (status = 200, description = "Ready", body = super::openapi::Status, example = json!({"status": "ready"})),
        (status = 503, description = "Not ready (loading, a dependency down, or shutting down)", body = super::errors::ErrorBody)))]
pub async fn health(state: State<AppState>) -> Result<Json<serde_json::Value>, Error> {
    readyz(state).await
}

/// Prometheus metrics (OpenMetrics text).
#[utoipa::path(get, path = Route::Metrics.openapi_path(), tag = "probes",
    responses((status = 200, description = "OpenMetrics exposition", body = String,
        content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8")))]
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
}

/// The served model.
#[utoipa::path(get, path = Route::Info.openapi_path(), tag = "probes",
    responses(
        (status = 200, description = "The served model and its limits", body = ModelInfo),
        (status = 503, description = "The model is still loading", body = super::errors::ErrorBody)))]
pub async fn info(State(state): State<AppState>) -> Result<Json<ModelInfo>, Error> {
    Ok(Json(state.engine()?.info().clone()))
}
