//! `serve`: listen at once, load and warm the model in the background, answer until told to
//! stop, then drain.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;

use crate::auth::Auth;
use crate::config::ServeArgs;
use crate::engine::Engine;
use crate::http::health::{Health, ReadinessCheck};
use crate::http::{self, AppState};
use crate::listener;
use crate::metrics::{Metrics, ModelLabels};

/// Serves on `listener` (HTTPS with --tls-cert/--tls-key, auth per --auth) until `shutdown`
/// completes, then stops taking connections, finishes the requests in flight (and so the queued
/// model work) and returns.
pub async fn serve(
    args: ServeArgs,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let mut metrics = Metrics::new();
    let auth = Auth::from_args(
        &args.auth,
        args.limits.request_timeout,
        metrics.registry_mut(),
    )?;
    let tls_config = args.tls.server_config()?;
    let metrics = Arc::new(metrics);
    let checks: Vec<ReadinessCheck> = match &auth {
        Some(auth) => {
            let auth = auth.clone();
            vec![Box::new(move || auth.readiness())]
        }
        None => Vec::new(),
    };
    let state = AppState::new(args.task, metrics.clone(), Health::with_checks(checks))
        .with_playground(!args.no_playground)
        .with_metrics_on_api(args.metrics_listen.is_none())
        .with_max_request_cost(args.limits.max_request_cost)
        .with_request_timeout(args.limits.request_timeout)
        .with_presets(args.presets()?);
    // Bound before the API answers, so a port clash is a start error, not a silent gap.
    let metrics_server = match args.metrics_listen {
        Some(addr) => {
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|e| anyhow::anyhow!("cannot listen on --metrics-listen {addr}: {e}"))?;
            tracing::info!(addr = %listener.local_addr()?, "metrics listening");
            let app = http::metrics_router(state.clone());
            // Same limits as the API; its connections are not counted in the API's gauge.
            let serving = listener::serve(
                listener,
                app,
                args.listener.clone(),
                None,
                Default::default(),
                std::future::pending(),
            );
            Some(tokio::spawn(serving))
        }
        None => None,
    };
    let app = http::router(
        state.clone(),
        args.limits.max_body_bytes,
        |api| match &auth {
            Some(auth) => auth.protect(api),
            None => api,
        },
    );
    let app = http::path_prefix::strip(app, args.path_prefix.as_deref());
    let drain_delay = Duration::from_millis(args.shutdown_delay_millis);
    let listener_args = args.listener.clone();

    let loading = tokio::task::spawn_blocking({
        let state = state.clone();
        move || load(&args, &state)
    });

    let health = state.health.clone();
    let graceful = async move {
        shutdown.await;
        health.set_draining();
        tracing::info!(
            delay_ms = drain_delay.as_millis() as u64,
            "shutting down: readiness off, draining"
        );
        // Load balancers see /readyz fail and stop routing here before the listener closes.
        tokio::time::sleep(drain_delay).await;
    };
    tracing::info!(addr = %listener.local_addr()?, tls = tls_config.is_some(), auth = auth.is_some(), "listening");
    let mut server = pin!(listener::serve(
        listener,
        app,
        listener_args,
        tls_config,
        metrics.open_connections.clone(),
        graceful,
    ));

    tokio::select! {
        () = &mut server => {}
        loaded = loading => {
            loaded??;
            server.await;
        }
    }
    if let Some(engine) = state.engine.get() {
        engine.shutdown();
    }
    // Scraped until the API has drained: the last samples show the drain.
    if let Some(metrics_server) = metrics_server {
        metrics_server.abort();
    }
    tracing::info!("stopped");
    Ok(())
}

/// Loads the model, runs one warm-up batch, then marks the server ready.
fn load(args: &ServeArgs, state: &AppState) -> anyhow::Result<()> {
    let started = Instant::now();
    let engine = Engine::load(&args.engine_config(), state.metrics.clone())?;
    state
        .metrics
        .model_load_seconds
        .set(started.elapsed().as_secs_f64());
    let info = engine.info();
    state
        .metrics
        .model
        .get_or_create(&ModelLabels {
            task: info.task.to_owned(),
            dtype: info.dtype.to_string(),
            kernel: info.kernel.to_owned(),
        })
        .set(1);
    tracing::info!(seconds = started.elapsed().as_secs_f64(), info = ?engine.info(), "model loaded");
    engine.warm_up()?;
    if state.engine.set(engine).is_err() {
        anyhow::bail!("the model was loaded twice");
    }
    state.health.set_warmed_up();
    tracing::info!("warm-up done: ready");
    Ok(())
}

/// Resolves on ctrl-c or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for ctrl-c");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}

/// Installs the log subscriber: text or JSON lines on stderr, filtered by `RUST_LOG` (default
/// info); with `audit` (`--audit-log`), the audit lines go there instead, as JSON lines.
pub fn init_logging(
    format: crate::config::LogFormat,
    audit: Option<&crate::config::AuditLog>,
) -> anyhow::Result<()> {
    use tracing_subscriber::filter::{filter_fn, Targets};
    use tracing_subscriber::fmt::writer::BoxMakeWriter;
    use tracing_subscriber::prelude::*;
    use tracing_subscriber::EnvFilter;

    use crate::config::AuditLog;
    use crate::http::access_log::AUDIT_TARGET;

    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let main = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let main = match format {
        crate::config::LogFormat::Text => main.boxed(),
        crate::config::LogFormat::Json => main
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .boxed(),
    };
    let audit_writer = match audit {
        None => None,
        Some(AuditLog::Stderr) => Some(BoxMakeWriter::new(std::io::stderr)),
        Some(AuditLog::File(path)) => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| anyhow::anyhow!("--audit-log {}: {e}", path.display()))?;
            Some(BoxMakeWriter::new(std::sync::Mutex::new(file)))
        }
    };
    let separate = audit_writer.is_some();
    let audit_layer = audit_writer.map(|writer| {
        tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .with_writer(writer)
            .with_filter(Targets::new().with_target(AUDIT_TARGET, tracing::Level::INFO))
    });
    let result = tracing_subscriber::registry()
        .with(
            main.with_filter(filter)
                .with_filter(filter_fn(move |m| !separate || m.target() != AUDIT_TARGET)),
        )
        .with(audit_layer)
        .try_init();
    // Already installed (tests start several servers in one process): keep the first one.
    drop(result);
    Ok(())
}
