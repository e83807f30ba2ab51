//! `nlu-operator`: runs the controllers (default) with an admin server and optional leader
//! election.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use nlu_operator::admin::{self, AdminState};
use nlu_operator::config::{LogFormat, RunArgs};
use nlu_operator::context::Context;
use nlu_operator::leader::{self, LeaseSettings};
use nlu_operator::metrics::Metrics;
use nlu_operator::nlu_service;
use nlu_operator::tenant;

#[derive(Parser)]
#[command(name = "nlu-operator", version, about = "Kubernetes operator for NluService and Tenant resources")]
#[command(args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// `run` is the default command; its flags may be given without it.
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controllers (the default).
    Run(Box<RunArgs>),
    /// Ask the running operator to rotate its token signing key and wait until it has: new
    /// tokens are signed with a new key, earlier tokens stay valid until they expire.
    RotateKey(tenant::rotate_key::RotateKeyArgs),
    /// Print a Tenant's daily usage (requests, tokens, refusals by reason) from Redis, one row
    /// per UTC day, as a table or CSV.
    Usage(Box<tenant::usage_report::UsageArgs>),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        None => run(cli.run).await,
        Some(Command::Run(args)) => run(*args).await,
        Some(Command::RotateKey(args)) => tenant::rotate_key::rotate_key(kube::Client::try_default().await?, &args).await,
        Some(Command::Usage(args)) => tenant::usage_report::usage(&args).await,
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    init_logging(args.log_format);
    let client = kube::Client::try_default().await?;
    let metrics = Arc::new(Metrics::new());
    let ctx = Arc::new(Context::new(client.clone(), args.operator.clone(), metrics.clone()));
    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));

    let ready = Arc::new(AtomicBool::new(false));
    let admin_state = AdminState { metrics: metrics.clone(), ready: ready.clone() };
    let admin = tokio::spawn(admin::serve(args.admin_listen, admin_state, shutdown.clone()));

    let version = client.apiserver_version().await?;
    tracing::info!(server = %version.git_version, "connected to the API server");
    ready.store(true, Ordering::Release);

    if args.leader_elect {
        let identity = args
            .identity
            .clone()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_else(|| "nlu-operator".into());
        let lease = LeaseSettings { namespace: args.operator.operator_namespace.clone(), name: args.lease_name.clone(), identity };
        leader::run_while_leader(client, lease, metrics, shutdown.clone(), |term| run_controllers(ctx.clone(), term)).await?;
    } else {
        metrics.set_leader(true);
        run_controllers(ctx, shutdown.clone()).await;
    }
    shutdown.cancel();
    admin.await??;
    Ok(())
}

/// Every controller of the operator, until `stop` is cancelled; each drains its running
/// reconciles before returning.
async fn run_controllers(ctx: Arc<Context>, stop: CancellationToken) {
    tokio::join!(
        nlu_service::controller::run(ctx.clone(), stop.clone()),
        tenant::run(ctx.clone(), stop.clone()),
    );
}

/// Cancels `shutdown` on SIGTERM or Ctrl-C.
async fn cancel_on_signal(shutdown: CancellationToken) {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing the SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
    shutdown.cancel();
}
