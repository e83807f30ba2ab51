//! The Tenant controller: issues each tenant's token into a Secret, writes its access record to
//! Redis, reports usage, and keeps the signing keys and their public JWK Set.
//!
//! Runtime pieces started by [`run`]: the key manager (the key Secret: creation, rotation,
//! retirement), the reader of the tenants' identity providers' keys ([`identity_keys`]), the JWK
//! Set publisher (ConfigMap `nlu-jwks` per namespace), the Redis ACL user
//! and credential Secret of each service namespace ([`redis_acl`]), and the controller
//! itself ([`controller::reconcile`]).

pub mod controller;
pub mod identity_keys;
pub mod jwks_publish;
pub mod plan;
pub mod redis_acl;
pub mod redis_sync;
pub mod revocation;
pub mod rotate_key;
pub mod signing_key;
pub mod status;
pub mod token_secret;
pub mod usage_report;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::runtime::controller::Config as ControllerConfig;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, Controller, WatchStreamExt};
use kube::{Api, ResourceExt};
use nlu_crds::access::redis_client::RedisConnection;
use nlu_crds::access::tokens::DEFAULT_ISSUER;
use nlu_crds::access::RedisKeys;
use nlu_crds::{NluService, Tenant};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::OperatorConfig;
use crate::context::Context;
use controller::TenantContext;
use signing_key::{KeyChange, KeyRing, SIGNING_KEY_SECRET};

/// Controller name in metrics and logs.
pub const CONTROLLER: &str = "tenant";
/// Finalizer that removes the tenant's Redis keys before the Tenant goes.
pub const FINALIZER: &str = "nlu.dev/tenant-cleanup";

/// How often the key Secret is re-checked without a watch event (retired keys to drop).
const KEY_RECHECK: Duration = Duration::from_secs(600);

/// Runs the Tenant controller until `stop` is cancelled, then drains running reconciles.
/// Without `--redis-url` it reports the problem and stays idle (the NluService controller runs on).
pub async fn run(ctx: Arc<Context>, stop: CancellationToken) {
    if let Err(e) = run_until(ctx, stop.clone()).await {
        tracing::error!(error = %e, "the Tenant controller cannot run; Tenants are not reconciled");
        stop.cancelled().await;
    }
}

/// The operator's Redis (`--redis-url`, `--redis-ca-file`).
pub fn connect_redis(config: &OperatorConfig) -> anyhow::Result<RedisConnection> {
    let url = config
        .redis_url
        .as_deref()
        .ok_or_else(|| anyhow::anyhow!("--redis-url (NLU_OPERATOR_REDIS_URL) is not set"))?;
    let ca_pem =
        match &config.redis_ca_file {
            Some(path) => Some(std::fs::read(path).map_err(|e| {
                anyhow::anyhow!("cannot read --redis-ca-file {}: {e}", path.display())
            })?),
            None => None,
        };
    redis_sync::connect(url, ca_pem)
}

async fn run_until(ctx: Arc<Context>, stop: CancellationToken) -> anyhow::Result<()> {
    let config = &ctx.config;
    let redis = connect_redis(config)?;
    let client = ctx.client.clone();
    let (tenants, services): (Api<Tenant>, Api<NluService>) = match &config.namespace {
        Some(ns) => (
            Api::namespaced(client.clone(), ns),
            Api::namespaced(client.clone(), ns),
        ),
        None => (Api::all(client.clone()), Api::all(client.clone())),
    };
    let controller = Controller::new(tenants.clone(), watcher::Config::default())
        .with_config(ControllerConfig::default().concurrency(config.tenant_concurrency));
    let tenant_store = controller.store();

    let key_api: Api<Secret> = Api::namespaced(client.clone(), &config.operator_namespace);
    let ring = tokio::select! {
        ring = first_key_ring(&key_api, &tenants, &ctx) => ring,
        () = stop.cancelled() => return Ok(()),
    };
    let (ring_tx, ring_rx) = watch::channel(ring);
    // A new ring re-checks every Tenant: after `--revoke-old` no token verifies any more and
    // each is re-issued at once.
    let ring_changes = changes(ring_rx.clone());
    let mut helpers = tokio::task::JoinSet::new();
    helpers.spawn(manage_keys(
        key_api,
        ctx.clone(),
        tenant_store.clone(),
        ring_tx,
    ));

    let (service_store, writer) = reflector::store();
    let service_events = reflector::reflector(
        writer,
        watcher(services.clone(), watcher::Config::default()),
    )
    .default_backoff()
    .touched_objects()
    .for_each(|_| futures::future::ready(()));
    helpers.spawn(service_events);
    let (identities_tx, identities_rx) = watch::channel(identity_keys::Published::default());
    let (health_tx, health_rx) = watch::channel(identity_keys::Health::default());
    helpers.spawn(identity_keys::run(
        tenant_store.clone(),
        identity_keys::agent(config.identity_ca_file.as_deref())?,
        config.allowed_identity_issuers.clone(),
        identities_tx,
        health_tx,
    ));
    helpers.spawn(jwks_publish::run(
        client.clone(),
        service_store.clone(),
        ring_rx.clone(),
        identities_rx,
        config.namespace.clone(),
    ));
    helpers.spawn(redis_acl::run(
        client.clone(),
        service_store.clone(),
        redis.clone(),
        config.clone(),
    ));

    let tenant_ctx = Arc::new(
        TenantContext::new(
            ctx.clone(),
            redis,
            RedisKeys::new(config.redis_prefix.clone()),
            ring_rx,
            service_store,
            DEFAULT_ISSUER.to_owned(),
        )
        .with_identity_health(health_rx.clone()),
    );
    let secrets: Api<Secret> = match &config.namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let managed = watcher::Config::default().labels("app.kubernetes.io/managed-by=nlu-operator");
    controller
        .owns(secrets, managed)
        // A new ring re-checks every Tenant (see above); so does a change in how the identity
        // providers' reads went, so that `IdentityProviderReady` follows within seconds. It
        // changes when an issuer is first read, its key count changes or its reads start or
        // stop failing, not on every read.
        .reconcile_all_on(futures::stream::select(ring_changes, changes(health_rx)))
        .watches(services, watcher::Config::default(), move |svc| {
            tenants_using(&tenant_store, &svc)
        })
        .graceful_shutdown_on(stop.cancelled_owned())
        .run(controller::reconcile, controller::error_policy, tenant_ctx)
        .for_each(|_| futures::future::ready(()))
        .await;
    helpers.abort_all();
    Ok(())
}

/// A unit for every change of the channel's value.
fn changes<T: Send + Sync + 'static>(
    rx: watch::Receiver<T>,
) -> impl futures::Stream<Item = ()> + Send + 'static {
    futures::stream::unfold(rx, |mut rx| async move {
        rx.changed().await.ok()?;
        Some(((), rx))
    })
}

/// The Tenants of the service's namespace that list it (their Secret holds its URL).
fn tenants_using(tenants: &Store<Tenant>, svc: &NluService) -> Vec<ObjectRef<Tenant>> {
    let ns = svc.namespace();
    tenants
        .state()
        .iter()
        .filter(|t| t.namespace() == ns && t.spec.services.contains(&svc.name_any()))
        .map(|t| ObjectRef::from_obj(t.as_ref()))
        .collect()
}

/// The key ring to start with; tokens cannot be issued without one, so this retries. The
/// Tenants are listed first: a key Secret missing while their tokens are valid is not replaced.
async fn first_key_ring(api: &Api<Secret>, tenants: &Api<Tenant>, ctx: &Context) -> Arc<KeyRing> {
    loop {
        let listed = tenants
            .list(&Default::default())
            .await
            .map(|list| list.items.into_iter().map(Arc::new).collect::<Vec<_>>());
        let result = match listed {
            Ok(tenants) => sync_keys(api, ctx, Some(&tenants), None).await,
            Err(e) => Err(e.into()),
        };
        match result {
            Ok(ring) => return ring,
            Err(e) => {
                tracing::error!(error = %e, "cannot load or create the signing key; retrying");
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        }
    }
}

/// [`signing_key::sync`], with a log line and an Event for what changed or is missing.
async fn sync_keys(
    api: &Api<Secret>,
    ctx: &Context,
    tenants: Option<&[Arc<Tenant>]>,
    current: Option<&Arc<KeyRing>>,
) -> Result<Arc<KeyRing>, signing_key::KeyError> {
    let now = chrono::DateTime::from_timestamp(ctx.now().as_second(), 0).unwrap_or_default();
    let result = signing_key::sync(api, now, tenants, current).await;
    let event = match &result {
        Ok((ring, change)) => {
            if *change != KeyChange::Unchanged {
                tracing::info!(?change, kid = ring.signing.kid(), "signing keys changed");
            }
            signing_key::key_event(change)
        }
        Err(e @ signing_key::KeyError::Missing(_)) => Some(signing_key::missing_event(e)),
        Err(_) => None,
    };
    if let Some(event) = event {
        let reference = signing_key::secret_ref(&ctx.config.operator_namespace);
        crate::controller_kit::publish(&ctx.recorder, &reference, &event).await;
    }
    result.map(|(ring, _)| ring)
}

/// Waits until `store` holds its first complete list; false if its writer is gone.
/// `Store::wait_until_ready` of kube-runtime 5 wakes only the task that polled it last (one
/// oneshot receiver, one waker) and the controller polls the same store before each reconcile,
/// so a second waiter can sleep for ever: this one polls again every 100 ms.
async fn filled<K>(store: &Store<K>) -> bool
where
    K: kube::Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    loop {
        let poll = tokio::time::timeout(Duration::from_millis(100), store.wait_until_ready());
        if let Ok(ready) = poll.await {
            return ready.is_ok();
        }
    }
}

/// Re-syncs the key Secret on every change of it (a rotation request) and when a retired key
/// is due, and hands new rings to the controller and the publisher.
async fn manage_keys(
    api: Api<Secret>,
    ctx: Arc<Context>,
    tenants: Store<Tenant>,
    ring: watch::Sender<Arc<KeyRing>>,
) {
    let only_key =
        watcher::Config::default().fields(&format!("metadata.name={SIGNING_KEY_SECRET}"));
    let mut changes = watcher(api.clone(), only_key)
        .default_backoff()
        .touched_objects()
        .boxed();
    loop {
        let due = ring.borrow().next_retirement().map(|at| {
            let secs = (at - chrono::Utc::now()).num_seconds().max(1);
            Duration::from_secs(u64::try_from(secs).unwrap_or(1))
        });
        tokio::select! {
            _ = changes.next() => {}
            () = tokio::time::sleep(due.unwrap_or(KEY_RECHECK).min(KEY_RECHECK)) => {}
        }
        // Rotation needs the tenants' lifetimes: wait until the Tenant cache is filled.
        if !filled(&tenants).await {
            return;
        }
        let new = loop {
            let current = ring.borrow().clone();
            match sync_keys(&api, &ctx, Some(&tenants.state()), Some(&current)).await {
                Ok(new) => break new,
                Err(e) => {
                    tracing::warn!(error = %e, "signing key sync failed; retrying");
                    tokio::time::sleep(Duration::from_secs(5)).await;
                }
            }
        };
        ring.send_if_modified(|old| {
            let changed = old.signing.kid() != new.signing.kid() || old.retired != new.retired;
            if changed {
                *old = new;
            }
            changed
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::runtime::reflector::store::Writer;

    #[tokio::test]
    async fn filled_returns_although_another_task_waits_on_the_same_store() {
        let mut writer: Writer<Tenant> = Writer::default();
        let store = writer.as_reader();
        let ours = tokio::spawn({
            let store = store.clone();
            async move { filled(&store).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        // Polled after ours, as the controller does before each reconcile: it takes the waker.
        let other = tokio::spawn(async move { store.wait_until_ready().await.is_ok() });
        tokio::time::sleep(Duration::from_millis(20)).await;
        writer.apply_watcher_event(&watcher::Event::InitDone);
        let ours = tokio::time::timeout(Duration::from_secs(2), ours).await;
        assert!(matches!(ours, Ok(Ok(true))), "{ours:?}");
        assert!(other.await.unwrap());
    }
}
