//! What to do while Redis is unreachable (`--redis-failure-policy`), and the state that decides
//! readiness: a probe keeps it current even when no requests arrive.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use super::metrics::AuthMetrics;
use super::quota::QuotaStore;

/// How often the probe pings Redis.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// `fail-closed` refuses requests with 503 and reports not ready until Redis is back (quotas
/// always hold); `fail-open` serves requests whose tokens verify, limited per tenant by a local
/// per-process limiter (suspension, revocation and daily quotas wait until Redis is back).
pub use nlu_crds::serve::FailurePolicy;

/// Whether the quota backend answered last time it was asked.
pub struct BackendHealth {
    up: AtomicBool,
    metrics: Arc<AuthMetrics>,
}

impl BackendHealth {
    pub fn new(metrics: Arc<AuthMetrics>) -> Self {
        Self {
            up: AtomicBool::new(false),
            metrics,
        }
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    pub fn set(&self, up: bool) {
        let was = self.up.swap(up, Ordering::Relaxed);
        self.metrics.backend_up.set(i64::from(up));
        if was != up {
            if up {
                tracing::info!("quota backend (Redis) reachable");
            } else {
                tracing::warn!("quota backend (Redis) unreachable");
            }
        }
    }
}

/// Pings Redis every [`PROBE_INTERVAL`] while `store` lives, so readiness follows Redis.
pub fn spawn_probe(store: &Arc<QuotaStore>, health: Arc<BackendHealth>) {
    let store = Arc::downgrade(store);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(PROBE_INTERVAL);
        loop {
            tick.tick().await;
            let Some(store) = store.upgrade() else { return };
            health.set(store.ping().await.is_ok());
        }
    });
}

/// Fail-open fallback: the same per-minute budget for every tenant, counted in this process.
pub struct LocalLimiter {
    limiter: DefaultKeyedRateLimiter<String>,
}

impl LocalLimiter {
    pub fn per_minute(requests: NonZeroU32) -> Self {
        Self {
            limiter: RateLimiter::keyed(Quota::per_minute(requests)),
        }
    }

    /// `Err(seconds to wait)` when the tenant is over its local budget.
    pub fn check(&self, tenant: &str) -> Result<(), u64> {
        use governor::clock::{Clock, DefaultClock};
        self.limiter
            .check_key(&tenant.to_string())
            .map_err(|not_until| {
                not_until
                    .wait_time_from(DefaultClock::default().now())
                    .as_secs_f64()
                    .ceil()
                    .max(1.0) as u64
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_limiter_allows_the_budget_per_tenant() {
        let limiter = LocalLimiter::per_minute(NonZeroU32::new(3).unwrap());
        let outcomes: Vec<_> = (0..5).map(|_| limiter.check("ns/a").is_ok()).collect();
        assert_eq!(outcomes, [true, true, true, false, false]);
        assert!(
            limiter.check("ns/b").is_ok(),
            "tenants have separate budgets"
        );
        let wait = limiter.check("ns/a").unwrap_err();
        assert!((1..=20).contains(&wait), "{wait}");
    }
}
