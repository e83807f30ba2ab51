//! The routes and the state they share.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::DefaultBodyLimit;
use axum::{middleware, Router};
use nlu_crds::routes::{Kind, Route};

use crate::error::{self, Error};
use super::handlers::handler;
use super::{access_log, deadline, health};
use nlu_crds::serve::Task;
use crate::engine::Engine;
use crate::metrics::Metrics;
use crate::uninlu::Presets;

#[derive(Clone)]
pub struct AppState {
    pub task: Task,
    pub metrics: Arc<Metrics>,
    pub health: Arc<health::Health>,
    /// Set once the model is loaded; the server listens (and answers /healthz) before that.
    pub engine: Arc<OnceLock<Engine>>,
    /// Serve the playground page at `/` (off: --no-playground).
    pub playground: bool,
    /// Serve `/metrics` on the API listener (off when --metrics-listen gives it its own).
    pub metrics_on_api: bool,
    /// Most token positions one request's model work may run (`--max-request-cost`).
    pub max_request_cost: u64,
    /// Longest a model request may take (`--request-timeout`).
    pub request_timeout: Duration,
    /// When this server started, in Unix seconds (the `created` of `/v1/models`).
    pub started: u64,
    /// The task types of `POST /predict`.
    pub presets: Arc<Presets>,
}

impl AppState {
    pub fn new(task: Task, metrics: Arc<Metrics>, health: health::Health) -> Self {
        AppState {
            task,
            metrics,
            health: Arc::new(health),
            engine: Arc::default(),
            playground: false,
            metrics_on_api: true,
            max_request_cost: u64::MAX,
            request_timeout: Duration::MAX,
            started: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            presets: Arc::new(Presets::builtin()),
        }
    }

    pub fn with_max_request_cost(self, max_request_cost: u64) -> Self {
        AppState {
            max_request_cost,
            ..self
        }
    }

    pub fn with_request_timeout(self, request_timeout: Duration) -> Self {
        AppState {
            request_timeout,
            ..self
        }
    }

    pub fn with_presets(self, presets: Presets) -> Self {
        AppState {
            presets: Arc::new(presets),
            ..self
        }
    }

    pub fn with_playground(self, playground: bool) -> Self {
        AppState { playground, ..self }
    }

    pub fn with_metrics_on_api(self, metrics_on_api: bool) -> Self {
        AppState {
            metrics_on_api,
            ..self
        }
    }

    pub fn engine(&self) -> Result<&Engine, Error> {
        self.engine.get().ok_or_else(|| {
            Error::new(error::Kind::Unavailable, "loading", "the model is still loading").retry_after(5)
        })
    }

    /// The route's error when this server runs the other task.
    pub fn require(&self, task: Task) -> Result<(), Error> {
        if self.task == task {
            return Ok(());
        }
        Err(Error::not_found(format!(
            "this server runs the {} task; this route needs a server started with --task {}",
            self.task.as_str(),
            task.as_str()
        )))
    }
}

/// The private metrics listener's app: `/metrics` only (tenant ids and each tenant's traffic
/// stay off the port the Ingress publishes).
pub fn metrics_router(state: AppState) -> Router {
    Router::new()
        .route(Route::Metrics.path(), handler(Route::Metrics))
        .fallback(|| async { Error::not_found("this listener serves /metrics only") })
        .with_state(state)
}

/// All routes this server serves. `protect` wraps the model routes only (the auth layer goes
/// there), so probes and metrics stay reachable without credentials.
pub fn router(
    state: AppState,
    max_body_bytes: usize,
    protect: impl FnOnce(Router<AppState>) -> Router<AppState>,
) -> Router {
    let (mut api, mut open) = (Router::new(), Router::new());
    for route in Route::ALL {
        match route.kind() {
            Kind::Model(..) => api = api.route(route.path(), handler(route)),
            Kind::Playground if !state.playground => {}
            Kind::Metrics if !state.metrics_on_api => {}
            Kind::Open | Kind::Playground | Kind::Metrics => {
                open = open.route(route.path(), handler(route))
            }
        }
    }
    // The deadline covers everything a model request waits for, auth and quota included.
    protect(api)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            deadline::deadline,
        ))
        .merge(open)
        .fallback(|| async { Error::not_found("no such route") })
        .method_not_allowed_fallback(|| async {
            Error::new(
                error::Kind::MethodNotAllowed,
                "method_not_allowed",
                "this route does not take that method",
            )
        })
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            access_log::access_log,
        ))
        .with_state(state)
}
