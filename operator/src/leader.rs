//! Leader election on a Lease (`kube-lease-manager`): the controllers run only while this
//! process holds the Lease, and stop as soon as it is lost, so two replicas never reconcile at
//! the same time.

use std::future::Future;
use std::sync::Arc;

use kube::Client;
use kube_lease_manager::LeaseManagerBuilder;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// Lease validity after the last renewal, in seconds.
const LEASE_DURATION_SECS: u64 = 15;
/// Renew this long before the Lease would expire (tolerated clock skew), in seconds.
const LEASE_GRACE_SECS: u64 = 5;

/// Where and as whom to hold the Lease.
pub struct LeaseSettings {
    pub namespace: String,
    pub name: String,
    pub identity: String,
}

/// Runs `controllers` whenever this process leads, until `shutdown` is cancelled. `controllers`
/// gets a token that is cancelled when leadership is lost or on shutdown, and must return once
/// it is. The Lease is released on the way out so a standby takes over at once.
pub async fn run_while_leader<F, Fut>(
    client: Client,
    lease: LeaseSettings,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    controllers: F,
) -> anyhow::Result<()>
where
    F: Fn(CancellationToken) -> Fut,
    Fut: Future<Output = ()>,
{
    let manager = LeaseManagerBuilder::new(client, &lease.name)
        .with_namespace(&lease.namespace)
        .with_identity(&lease.identity)
        .with_duration(LEASE_DURATION_SECS)
        .with_grace(LEASE_GRACE_SECS)
        .build()
        .await?;
    let (mut leading, watcher) = manager.watch().await;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            changed = leading.wait_for(|leader| *leader) => if changed.is_err() { break },
        }
        tracing::info!(identity = %lease.identity, "acquired the lease, starting controllers");
        metrics.set_leader(true);
        let term = shutdown.child_token();
        let lost = term.clone();
        let mut watch = leading.clone();
        let run = controllers(term.clone());
        tokio::pin!(run);
        tokio::select! {
            _ = &mut run => {}
            _ = async { let _ = watch.wait_for(|leader| !*leader).await; lost.cancel(); } => {
                tracing::warn!("lost the lease, stopping controllers");
                run.await;
            }
        }
        term.cancel();
        metrics.set_leader(false);
        if shutdown.is_cancelled() {
            break;
        }
    }
    // Closing the channel makes the watcher release the Lease and return.
    drop(leading);
    watcher.await??;
    Ok(())
}
