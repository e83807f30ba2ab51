//! The Tenant reconcile: finalizer -> revocation -> Redis record -> token Secret -> usage ->
//! status. Deletion removes the tenant's Redis keys before the finalizer lets the Tenant go.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::runtime::finalizer::{finalizer, Event as Finalizer};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Resource, ResourceExt};
use nlu_crds::access::redis_client::RedisConnection;
use nlu_crds::access::{Claims, Credential, QualifiedName, RedisKeys};
use nlu_crds::{NluService, Tenant};
use rand::RngCore;
use tokio::sync::watch;

use super::revocation::{self, generation, pending_revoke};
use super::signing_key::KeyRing;
use super::status::{self, Observed, USAGE_REFRESH};
use super::token_secret::{self, grant_hash, reissue_reason, token_request, IssuedToken};
use super::{redis_sync, CONTROLLER, FINALIZER};
use crate::apply::NameTaken;
use crate::context::Context;
use crate::ownership::{holder, Holder, Mark};

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

/// Longest wait between retries of a failing reconcile.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

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
    /// When each tenant's usage was last written to status (throttle).
    usage_written: Mutex<HashMap<String, Instant>>,
    /// Consecutive failures per tenant (retry backoff).
    failures: Mutex<HashMap<String, u32>>,
}

impl TenantContext {
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
            usage_written: Mutex::default(),
            failures: Mutex::default(),
        }
    }

    async fn event(&self, tenant: &Tenant, type_: EventType, reason: &str, note: String) {
        let event = Event {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: "Reconcile".into(),
            secondary: None,
        };
        if let Err(e) = self
            .base
            .recorder
            .publish(&event, &tenant.object_ref(&()))
            .await
        {
            tracing::warn!(tenant = %tenant.name_any(), reason, error = %e, "could not publish event");
        }
    }
}

/// Reconciles one Tenant (entry point of the controller and of tests).
pub async fn reconcile(tenant: Arc<Tenant>, ctx: Arc<TenantContext>) -> Result<Action, Error> {
    let _timer = ctx.base.metrics.reconcile_started(CONTROLLER);
    let key = format!(
        "{}/{}",
        tenant.namespace().unwrap_or_default(),
        tenant.name_any()
    );
    let api: Api<Tenant> = Api::namespaced(
        ctx.base.client.clone(),
        &tenant.namespace().unwrap_or_default(),
    );
    let result = finalizer(&api, FINALIZER, tenant, |event| async {
        match event {
            Finalizer::Apply(t) => apply(&t, &ctx).await,
            Finalizer::Cleanup(t) => cleanup(&t, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)));
    if result.is_ok() {
        ctx.failures.lock().expect("not poisoned").remove(&key);
    }
    result
}

/// Requeue after a failure: 2 s doubling per consecutive failure, at most 5 minutes.
pub fn error_policy(tenant: Arc<Tenant>, error: &Error, ctx: Arc<TenantContext>) -> Action {
    ctx.base
        .metrics
        .reconcile_failed(CONTROLLER, error.reason());
    let key = format!(
        "{}/{}",
        tenant.namespace().unwrap_or_default(),
        tenant.name_any()
    );
    let mut failures = ctx.failures.lock().expect("not poisoned");
    let n = failures.entry(key.clone()).or_insert(0);
    *n = n.saturating_add(1);
    let wait = backoff(*n);
    tracing::warn!(tenant = %key, error = %error, retry_in = ?wait, "tenant reconcile failed");
    Action::requeue(wait)
}

/// Retry delay after `failures` consecutive failures.
pub fn backoff(failures: u32) -> Duration {
    Duration::from_secs(2u64.saturating_pow(failures.min(16))).min(MAX_BACKOFF)
}

async fn apply(tenant: &Tenant, ctx: &TenantContext) -> Result<Action, Error> {
    let ns = tenant.namespace().unwrap_or_default();
    let id = QualifiedName::new(ns.clone(), tenant.name_any())
        .map_err(|e| Error::Invalid(e.to_string()))?;
    let now = ctx.base.now();
    let ttl = tenant
        .spec
        .token_ttl()
        .map_err(|e| Error::Invalid(format!("spec.token.ttl: {e}")))?
        .min(ctx.base.config.max_token_ttl);

    // A revocation is counted in status first, so it survives whatever fails next.
    let counted;
    let tenant = match pending_revoke(tenant) {
        Some(value) => {
            counted = revocation::handled(tenant, value);
            crate::apply::apply_status(
                &ctx.base.client,
                &counted,
                counted.status.as_ref().expect("handled sets status"),
            )
            .await?;
            let note = format!(
                "every token below generation {} stops working",
                generation(&counted)
            );
            ctx.event(&counted, EventType::Normal, "Revoked", note)
                .await;
            &counted
        }
        None => tenant,
    };
    let uid = tenant
        .uid()
        .ok_or_else(|| Error::Invalid("the Tenant has no metadata.uid".into()))?;
    let wanted = Credential {
        tid: uid,
        gen: generation(tenant),
    };

    let record = redis_sync::record(&tenant.spec, &wanted);
    let credential = match redis_sync::write_record(&mut ctx.redis.clone(), &ctx.keys, &id, &record)
        .await
    {
        Ok(credential) => credential,
        Err(e) => {
            let message = format!("cannot write the access record to Redis: {e}");
            let failed =
                status::not_ready_status(tenant, "RedisUnavailable", message, ctx.base.now_time());
            if tenant.status.as_ref() != Some(&failed) {
                if let Err(e) = crate::apply::apply_status(&ctx.base.client, tenant, &failed).await
                {
                    tracing::warn!(tenant = %id, error = %e, "could not report the Redis failure in status");
                }
            }
            return Err(e.into());
        }
    };
    let was_suspended = tenant.status.as_ref().is_some_and(|s| {
        nlu_crds::conditions::is_true(&s.conditions, nlu_crds::conditions::SUSPENDED)
    });
    if tenant.spec.suspended != was_suspended {
        let (reason, note) = if tenant.spec.suspended {
            ("Suspended", "every request of this tenant is refused (403)")
        } else {
            ("Resumed", "requests of this tenant are served again")
        };
        ctx.event(tenant, EventType::Normal, reason, note.into())
            .await;
    }

    let secrets: Api<Secret> = Api::namespaced(ctx.base.client.clone(), &ns);
    let secret_name = token_secret::secret_name(&tenant.name_any());
    let observed = secrets.get_opt(&secret_name).await?;
    if let Some(wait) = secret_name_taken(tenant, ctx, observed.as_ref(), &secret_name).await? {
        return Ok(wait);
    }
    let current = observed.as_ref().and_then(IssuedToken::from_secret);
    let request = token_request(tenant, &ctx.issuer, ttl, &credential)?;
    let hash = grant_hash(&request);
    let ring = ctx.ring.borrow().clone();
    let token = match (
        reissue_reason(
            current.as_ref(),
            &hash,
            |kid| ring.publishes(kid),
            now.as_second(),
        ),
        current,
    ) {
        (None, Some(current)) => current,
        (reason, _) => {
            let claims = request.claims_at(now.as_second(), jti());
            let token = IssuedToken {
                token: ring.signing.mint(&claims)?,
                kid: ring.signing.kid().to_owned(),
                grant_hash: hash,
                issued_at: claims.iat,
                expires_at: claims.exp,
            };
            let reason = reason.map_or("TokenIssued", |r| r.as_str());
            ctx.event(
                tenant,
                EventType::Normal,
                reason,
                issued_note(&claims, &secret_name),
            )
            .await;
            token
        }
    };
    let desired = token_secret::secret(tenant, &token, &service_urls(tenant, &ctx.services));
    if !observed
        .as_ref()
        .is_some_and(|o| token_secret::up_to_date(o, &desired))
    {
        crate::apply::apply(&ctx.base.client, &desired).await?;
    }

    let today = utc_day(now);
    let used = redis_sync::read_usage(&mut ctx.redis.clone(), &ctx.keys, &id, today).await?;
    let key = id.to_string();
    let usage_stale = ctx
        .usage_written
        .lock()
        .expect("not poisoned")
        .get(&key)
        .is_none_or(|at| at.elapsed() >= USAGE_REFRESH);
    let observed_state = Observed {
        secret_name,
        token_expires_at: token.expires_at,
        usage: status::usage(today, used, &record),
        usage_stale,
    };
    let new_status = status::ready_status(tenant, &observed_state, ctx.base.now_time());
    if tenant.status.as_ref() != Some(&new_status) {
        crate::apply::apply_status(&ctx.base.client, tenant, &new_status).await?;
        if tenant.status.as_ref().and_then(|s| s.usage.as_ref()) != new_status.usage.as_ref() {
            ctx.usage_written
                .lock()
                .expect("not poisoned")
                .insert(key, Instant::now());
        }
    }

    let until_renewal = u64::try_from(token.renew_at() - now.as_second()).unwrap_or(0);
    Ok(Action::requeue(
        USAGE_REFRESH.min(Duration::from_secs(until_renewal.max(1))),
    ))
}

/// A Secret of the token's name that this Tenant does not control is not adopted: no token is
/// read from or written into it, Ready turns False with `SecretNameTaken` and a Warning Event
/// says so (once, when the status changes). `None` when the name is free or the Secret ours.
async fn secret_name_taken(
    tenant: &Tenant,
    ctx: &TenantContext,
    observed: Option<&Secret>,
    secret_name: &str,
) -> Result<Option<Action>, Error> {
    let uid = tenant.uid().unwrap_or_default();
    if holder(observed.map(|s| &s.metadata), Mark::ControlledBy(&uid)) != Holder::Foreign {
        return Ok(None);
    }
    let taken = NameTaken {
        kind: "Secret".into(),
        name: secret_name.to_owned(),
    };
    let reason = "SecretNameTaken";
    let blocked = status::not_ready_status(tenant, reason, taken.to_string(), ctx.base.now_time());
    if tenant.status.as_ref() != Some(&blocked) {
        crate::apply::apply_status(&ctx.base.client, tenant, &blocked).await?;
        ctx.event(tenant, EventType::Warning, reason, taken.to_string())
            .await;
    }
    Ok(Some(Action::requeue(USAGE_REFRESH)))
}

/// The UTC day usage counters are kept by.
fn utc_day(now: k8s_openapi::jiff::Timestamp) -> chrono::NaiveDate {
    chrono::DateTime::from_timestamp(now.as_second(), 0)
        .unwrap_or_default()
        .date_naive()
}

async fn cleanup(tenant: &Tenant, ctx: &TenantContext) -> Result<Action, Error> {
    let id = QualifiedName::new(tenant.namespace().unwrap_or_default(), tenant.name_any())
        .map_err(|e| Error::Invalid(e.to_string()))?;
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
        ctx.event(tenant, EventType::Warning, "RedisCleanupAbandoned", note)
            .await;
        return Ok(Action::await_change());
    }
    ctx.usage_written
        .lock()
        .expect("not poisoned")
        .remove(&id.to_string());
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

fn issued_note(claims: &Claims, secret: &str) -> String {
    let expires = chrono::DateTime::from_timestamp(claims.exp, 0)
        .map(|t| t.to_rfc3339())
        .unwrap_or_default();
    format!(
        "new token (generation {}) in Secret {secret}, expires {expires}",
        claims.gen
    )
}

fn jti() -> String {
    let mut bytes = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
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
    fn backoff_doubles_and_caps() {
        assert_eq!(backoff(1), Duration::from_secs(2));
        assert_eq!(backoff(3), Duration::from_secs(8));
        assert_eq!(backoff(20), MAX_BACKOFF);
    }
}
