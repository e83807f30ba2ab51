//! The Tenant reconcile: finalizer -> count a pending revocation -> observe (Redis, the token
//! Secret) -> plan (pure, `plan.rs`) -> carry the plan out: the record, the Secret, the status,
//! then the Events. Deletion removes the tenant's Redis keys before the finalizer lets the Tenant
//! go.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{finalizer, Event as Finalizer};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Resource, ResourceExt};
use nlu_crds::access::redis_client::RedisConnection;
use nlu_crds::access::tokens::random_jti;
use nlu_crds::access::{QualifiedName, RedisKeys};
use nlu_crds::{NluService, Tenant};
use tokio::sync::watch;

use super::identity_keys::Health;
use super::plan::{self, utc_day, Facts, Plan};
use super::signing_key::KeyRing;
use super::status::{self, identity_provider, USAGE_REFRESH};
use super::{redis_sync, token_secret, CONTROLLER, FINALIZER};
use crate::apply::apply_status;
use crate::context::Context;
use crate::controller_kit::{self as kit, status_change, RetryPolicy};

/// How long a deleted Tenant's finalizer waits for Redis before it lets the Tenant go.
pub const CLEANUP_PATIENCE: Duration = Duration::from_secs(15 * 60);

/// Whether the finalizer stops waiting for Redis: [`CLEANUP_PATIENCE`] after the deletion began.
pub fn gives_up_on_redis(
    deleted_at: Option<k8s_openapi::jiff::Timestamp>,
    now: k8s_openapi::jiff::Timestamp,
) -> bool {
    deleted_at.is_some_and(|at| {
        now.as_second().saturating_sub(at.as_second())
            >= i64::try_from(CLEANUP_PATIENCE.as_secs()).unwrap_or(i64::MAX)
    })
}

/// Failures (Redis away above all) are retried after 2 s, then doubling.
const RETRY: RetryPolicy = RetryPolicy {
    controller: CONTROLLER,
    first_delay: Duration::from_secs(2),
};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("Redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("invalid tenant: {0}")]
    Invalid(String),
    #[error("signing: {0}")]
    Sign(#[from] nlu_crds::access::AccessError),
    #[error(transparent)]
    Finalizer(Box<kube::runtime::finalizer::Error<Error>>),
}

impl Error {
    /// Bounded label for the failure metric.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Kube(_) => "Kube",
            Error::Redis(_) => "Redis",
            Error::Invalid(_) => "Invalid",
            Error::Sign(_) => "Sign",
            Error::Finalizer(e) => match e.as_ref() {
                kube::runtime::finalizer::Error::ApplyFailed(e)
                | kube::runtime::finalizer::Error::CleanupFailed(e) => e.reason(),
                _ => "Finalizer",
            },
        }
    }
}

/// What the Tenant reconcile needs besides the shared context.
pub struct TenantContext {
    pub base: Arc<Context>,
    pub redis: RedisConnection,
    pub keys: RedisKeys,
    /// The current signing keys, kept up to date by the key manager.
    pub ring: watch::Receiver<Arc<KeyRing>>,
    /// NluServices, for the URLs written next to the token.
    pub services: Store<NluService>,
    /// The `iss` claim of issued tokens.
    pub issuer: String,
    /// When this operator last showed each tenant's usage in status (the usage throttle).
    usage_shown: Mutex<HashMap<String, Instant>>,
    /// What the reads of the identity providers gave ([`super::identity_keys`]).
    identity_health: watch::Receiver<Health>,
}

impl TenantContext {
    /// Shows on each Tenant what the reads of its identity provider gave.
    pub fn with_identity_health(self, health: watch::Receiver<Health>) -> Self {
        Self {
            identity_health: health,
            ..self
        }
    }

    pub fn new(
        base: Arc<Context>,
        redis: RedisConnection,
        keys: RedisKeys,
        ring: watch::Receiver<Arc<KeyRing>>,
        services: Store<NluService>,
        issuer: String,
    ) -> Self {
        Self {
            base,
            redis,
            keys,
            ring,
            services,
            issuer,
            usage_shown: Mutex::default(),
            identity_health: watch::channel(Health::default()).1,
        }
    }

    /// Whether the usage in `id`'s status is due for a refresh: this operator has not shown any
    /// yet (it may have restarted) or showed it [`USAGE_REFRESH`] ago.
    fn usage_stale(&self, id: &QualifiedName) -> bool {
        self.usage_shown
            .lock()
            .expect("not poisoned")
            .get(&id.to_string())
            .is_none_or(|at| at.elapsed() >= USAGE_REFRESH)
    }

    /// `id`'s status shows fresh usage from now on.
    fn usage_shown_now(&self, id: &QualifiedName) {
        let mut shown = self.usage_shown.lock().expect("not poisoned");
        shown.insert(id.to_string(), Instant::now());
    }

    /// Days before today shown in status: `--usage-history-days`, no more than are kept.
    fn usage_history_days(&self) -> u64 {
        let config = &self.base.config;
        config.usage_history_days.min(config.usage_retention_days)
    }

    /// `id` is gone: from the usage throttle and from the usage metrics.
    fn forget_usage(&self, id: &QualifiedName) {
        let mut shown = self.usage_shown.lock().expect("not poisoned");
        shown.remove(&id.to_string());
        self.base.metrics.forget_tenant(&id.to_string());
    }
}

/// Reconciles one Tenant (entry point of the controller and of tests).
pub async fn reconcile(tenant: Arc<Tenant>, ctx: Arc<TenantContext>) -> Result<Action, Error> {
    let _timer = ctx.base.metrics.reconcile_started(CONTROLLER);
    let api: Api<Tenant> = Api::namespaced(
        ctx.base.client.clone(),
        &tenant.namespace().unwrap_or_default(),
    );
    let result = finalizer(&api, FINALIZER, tenant.clone(), |event| async {
        match event {
            Finalizer::Apply(t) => apply(&t, &ctx).await,
            Finalizer::Cleanup(t) => cleanup(&t, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)));
    if result.is_ok() {
        RETRY.succeeded(&ctx.base, tenant.as_ref());
    }
    result
}

/// Requeue after a failure: 2 s doubling per consecutive failure, at most 5 minutes.
pub fn error_policy(tenant: Arc<Tenant>, error: &Error, ctx: Arc<TenantContext>) -> Action {
    RETRY.failed(&ctx.base, tenant.as_ref(), error.reason(), error)
}

async fn apply(tenant: &Tenant, ctx: &TenantContext) -> Result<Action, Error> {
    let id = tenant_id(tenant)?;
    let revoked = count_revocation(tenant, ctx).await?;
    let tenant = revoked.as_ref().unwrap_or(tenant);
    let now = ctx.base.now();

    let mut redis = ctx.redis.clone();
    let read = async {
        let stored = redis_sync::read_stored(&mut redis, &ctx.keys, &id).await?;
        let days = status::usage_days(utc_day(now), ctx.usage_history_days());
        let usage = redis_sync::read_days(&mut redis, &ctx.keys, &id, &days).await?;
        Ok::<_, redis::RedisError>((stored, usage))
    };
    let (stored, usage) = match read.await {
        Ok(read) => read,
        Err(e) => return Err(redis_unavailable(tenant, ctx, e).await),
    };
    if let Some(today) = usage.first() {
        let limit = ctx.base.config.usage_metrics_tenants;
        ctx.base.metrics.tenant_usage(&id.to_string(), today, limit);
    }
    let secrets: Api<Secret> = Api::namespaced(
        ctx.base.client.clone(),
        &tenant.namespace().unwrap_or_default(),
    );
    let secret = secrets
        .get_opt(&token_secret::secret_name(&tenant.name_any()))
        .await?;
    let ring = ctx.ring.borrow().clone();
    let plan = plan::plan(&Facts {
        tenant,
        secret: secret.as_ref(),
        stored: &stored,
        usage: &usage,
        usage_retention_days: ctx.base.config.usage_retention_days,
        usage_stale: ctx.usage_stale(&id),
        ring: &ring,
        urls: service_urls(tenant, &ctx.services),
        now,
        issuer: &ctx.issuer,
        max_ttl: ctx.base.config.max_token_ttl,
        jti: random_jti(),
        identity: identity_provider(tenant, &ctx.identity_health.borrow()),
    })?;
    execute(tenant, &id, plan, ctx).await
}

/// Counts a pending revocation in status before anything else is read or written, so that the
/// count survives whatever fails next and raises `gen` once. Returns the Tenant as counted.
async fn count_revocation(tenant: &Tenant, ctx: &TenantContext) -> Result<Option<Tenant>, Error> {
    let Some((counted, revoked)) = plan::revocation(tenant) else {
        return Ok(None);
    };
    let status = counted.status.as_ref().expect("counted in status");
    apply_status(&ctx.base.client, &counted, status).await?;
    kit::publish(&ctx.base.recorder, &counted.object_ref(&()), &revoked).await;
    Ok(Some(counted))
}

/// Carries `plan` out. The record goes first: a token must never carry a `gen` the record does
/// not hold yet. The Events go last, so each tells of a write that was made.
async fn execute(
    tenant: &Tenant,
    id: &QualifiedName,
    plan: Plan,
    ctx: &TenantContext,
) -> Result<Action, Error> {
    tracing::debug!(tenant = %id, token = ?plan.token, "carrying out the plan");
    let mut redis = ctx.redis.clone();
    let written = redis_sync::write_record(&mut redis, &ctx.keys, id, &plan.record).await;
    if let Err(e) = written {
        return Err(redis_unavailable(tenant, ctx, e).await);
    }
    if let Some(secret) = &plan.secret {
        crate::apply::apply(&ctx.base.client, secret).await?;
    }
    if let Some(status) = &plan.status {
        apply_status(&ctx.base.client, tenant, status).await?;
        if plan.shows_new_usage {
            ctx.usage_shown_now(id);
        }
    }
    let regarding = tenant.object_ref(&());
    for event in &plan.events {
        kit::publish(&ctx.base.recorder, &regarding, event).await;
    }
    Ok(Action::requeue(plan.requeue))
}

/// Ready turns False with `RedisUnavailable` (written when that changes the status; a failure
/// to write it is only logged); the Redis error is returned, for the retry.
async fn redis_unavailable(tenant: &Tenant, ctx: &TenantContext, e: redis::RedisError) -> Error {
    let message = format!("cannot write the access record to Redis: {e}");
    let failed = status::not_ready_status(tenant, "RedisUnavailable", message, ctx.base.now_time());
    if let Some(failed) = status_change(tenant.status.as_ref(), failed) {
        if let Err(error) = apply_status(&ctx.base.client, tenant, &failed).await {
            tracing::warn!(tenant = %tenant.name_any(), %error, "could not report the Redis failure in status");
        }
    }
    e.into()
}

/// The tenant's `namespace/name`, as tokens and Redis keys name it.
fn tenant_id(tenant: &Tenant) -> Result<QualifiedName, Error> {
    QualifiedName::new(tenant.namespace().unwrap_or_default(), tenant.name_any())
        .map_err(|e| Error::Invalid(e.to_string()))
}

async fn cleanup(tenant: &Tenant, ctx: &TenantContext) -> Result<Action, Error> {
    let id = tenant_id(tenant)?;
    let deleted = redis_sync::delete_tenant(
        &mut ctx.redis.clone(),
        &ctx.keys,
        &id,
        utc_day(ctx.base.now()),
    )
    .await;
    if let Err(e) = deleted {
        let deleted_at = tenant.metadata.deletion_timestamp.as_ref().map(|t| t.0);
        if !gives_up_on_redis(deleted_at, ctx.base.now()) {
            return Err(e.into());
        }
        // A namespace must always be deletable; what stays behind is said where it is seen.
        let note = format!(
            "Redis unreachable for {} min after the deletion ({e}): the tenant's record and \
             counters stay in Redis, so its unexpired tokens work again if Redis comes back with \
             them; delete its keys by hand (docs/operator.md, Deletion)",
            CLEANUP_PATIENCE.as_secs() / 60
        );
        tracing::warn!(tenant = %id, "{note}");
        let abandoned = kit::event(EventType::Warning, "RedisCleanupAbandoned", note);
        kit::publish(&ctx.base.recorder, &tenant.object_ref(&()), &abandoned).await;
        return Ok(Action::await_change());
    }
    ctx.forget_usage(&id);
    tracing::info!(tenant = %id, "removed the tenant's Redis keys");
    Ok(Action::await_change())
}

/// `status.url` of each of the tenant's services that has one.
fn service_urls(tenant: &Tenant, services: &Store<NluService>) -> BTreeMap<String, String> {
    let ns = tenant.namespace().unwrap_or_default();
    tenant
        .spec
        .services
        .iter()
        .filter_map(|name| {
            let svc = services.get(&ObjectRef::new(name).within(&ns))?;
            Some((name.clone(), svc.status.as_ref()?.url.clone()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_finalizer_waits_for_redis_a_bounded_time() {
        let t = |s: i64| k8s_openapi::jiff::Timestamp::from_second(s).unwrap();
        let patience = i64::try_from(CLEANUP_PATIENCE.as_secs()).unwrap();
        assert!(!gives_up_on_redis(None, t(10_000)));
        assert!(!gives_up_on_redis(Some(t(1_000)), t(1_000 + patience - 1)));
        assert!(gives_up_on_redis(Some(t(1_000)), t(1_000 + patience)));
    }

    #[test]
    fn retries_start_at_2_s_double_and_cap() {
        let delay = |failures| kit::retry_delay(RETRY.first_delay, failures);
        assert_eq!(delay(1), Duration::from_secs(2));
        assert_eq!(delay(3), Duration::from_secs(8));
        assert_eq!(delay(20), kit::MAX_RETRY_DELAY);
    }
}
