//! Tenant records, daily quotas and the per-minute limiter in Redis: one atomic script per
//! request (the contract's `QUOTA_SCRIPT`) checks and counts; the HTTP headers that report the
//! limits are computed here from its reply.

use std::time::Duration;

use chrono::{DateTime, Utc};
use nlu_crds::access::redis_client::{self, RedisConnection, Timeouts};
use nlu_crds::access::redis_keys::{script_args, Charge, Counts, QUOTA_SCRIPT};
use nlu_crds::access::{Credential, QualifiedName, QuotaOutcome, RedisKeys, Scope};

/// Redis could not answer (down, timed out, or answered nonsense).
#[derive(Debug, thiserror::Error)]
#[error("quota backend: {0}")]
pub struct BackendError(String);

/// The Redis side: a reconnecting connection (one server or a cluster) and the loaded script.
pub struct QuotaStore {
    conn: RedisConnection,
    script: redis::Script,
    keys: RedisKeys,
    timeout: Duration,
    /// How long a request may hold a place under its tenant's concurrency limit if this server
    /// never releases it (it died): the request timeout.
    lease: Duration,
}

impl QuotaStore {
    /// Does not connect yet: the server starts (unready under fail-closed) while Redis is down,
    /// and the connection reconnects whenever it returns. `ca_pem`: the only roots to trust for
    /// a TLS URL (else the system's).
    pub fn new(
        url: &str,
        ca_pem: Option<Vec<u8>>,
        prefix: &str,
        timeout: Duration,
        lease: Duration,
    ) -> anyhow::Result<Self> {
        // Fail fast while Redis is away; the next request tries again.
        let timeouts = Timeouts {
            timeout,
            max_delay: Duration::from_millis(200),
        };
        let conn = redis_client::connect(url, ca_pem, timeouts)
            .map_err(|e| anyhow::anyhow!("--redis-url / --redis-ca-file: {e}"))?;
        Ok(Self {
            conn,
            script: redis::Script::new(QUOTA_SCRIPT),
            keys: RedisKeys::new(prefix),
            timeout,
            lease,
        })
    }

    /// Checks `charge` against the tenant record and limits, counting it when allowed; the
    /// record must grant one of `scopes`. `nonce` must be unique per call; a request admitted under a concurrency limit holds a place
    /// named by it until [`QuotaStore::release`].
    pub async fn check(
        &self,
        tenant: &QualifiedName,
        credential: &Credential,
        scopes: &[Scope],
        service_name: &str,
        charge: Charge,
        nonce: u64,
    ) -> Result<QuotaOutcome, BackendError> {
        let mut invocation = self.script.prepare_invoke();
        invocation
            .key(&self.keys.script_keys(tenant, Utc::now().date_naive())[..])
            .arg(
                &script_args(
                    credential,
                    scopes,
                    service_name,
                    nonce,
                    charge,
                    u64::try_from(self.lease.as_millis()).unwrap_or(u64::MAX),
                )[..],
            );
        let mut conn = self.conn.clone();
        let reply: Vec<i64> =
            tokio::time::timeout(self.timeout, invocation.invoke_async(&mut conn))
                .await
                .map_err(|_| BackendError("timed out".into()))?
                .map_err(|e| BackendError(e.to_string()))?;
        QuotaOutcome::from_reply(&reply).map_err(|e| BackendError(e.to_string()))
    }

    /// Frees the place the request `nonce` held under its tenant's concurrency limit.
    pub async fn release(&self, tenant: &QualifiedName, nonce: u64) -> Result<(), BackendError> {
        let mut conn = self.conn.clone();
        let removed: redis::RedisResult<u64> = tokio::time::timeout(
            self.timeout,
            redis::cmd("ZREM")
                .arg(self.keys.in_flight(tenant))
                .arg(nonce)
                .query_async(&mut conn),
        )
        .await
        .map_err(|_| BackendError("timed out".into()))?;
        removed.map(drop).map_err(|e| BackendError(e.to_string()))
    }

    pub async fn ping(&self) -> Result<(), BackendError> {
        let mut conn = self.conn.clone();
        let pong: String =
            tokio::time::timeout(self.timeout, redis::cmd("PING").query_async(&mut conn))
                .await
                .map_err(|_| BackendError("timed out".into()))?
                .map_err(|e| BackendError(e.to_string()))?;
        if pong == "PONG" {
            Ok(())
        } else {
            Err(BackendError(format!("PING answered {pong:?}")))
        }
    }
}

/// What a set of `X-RateLimit-*` headers reports: the limit closest to exhaustion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub limit: u64,
    pub remaining: u64,
    /// Seconds until `remaining` grows again.
    pub reset_secs: u64,
}

/// Seconds until the next UTC midnight, when daily counters start over.
pub fn secs_to_midnight(now: DateTime<Utc>) -> u64 {
    let next = (now.date_naive() + chrono::Days::new(1))
        .and_hms_opt(0, 0, 0)
        .expect("midnight exists")
        .and_utc();
    u64::try_from((next - now).num_seconds())
        .unwrap_or(0)
        .max(1)
}

/// The limit to report for one kind of count; `None` when the tenant has no limit of that kind
/// (or the call did not count it). The one with less left wins; on a tie the one that resets
/// later (the binding one).
pub fn rate_limit(usage: &Counts, now: DateTime<Utc>) -> Option<RateLimit> {
    let daily = (usage.per_day > 0).then(|| RateLimit {
        limit: usage.per_day,
        remaining: usage.per_day.saturating_sub(usage.used_today),
        reset_secs: secs_to_midnight(now),
    });
    let minute = (usage.per_minute > 0).then(|| RateLimit {
        limit: usage.per_minute,
        remaining: usage.per_minute.saturating_sub(usage.used_last_minute),
        reset_secs: usage.minute_reset_ms.div_ceil(1000).max(1),
    });
    [daily, minute]
        .into_iter()
        .flatten()
        .min_by_key(|r| (r.remaining, std::cmp::Reverse(r.reset_secs)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(h: u32, m: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 1, h, m, s).unwrap()
    }

    fn usage(
        per_day: u64,
        used_today: u64,
        per_minute: u64,
        used_last_minute: u64,
        reset_ms: u64,
    ) -> Counts {
        Counts {
            per_day,
            used_today,
            per_minute,
            used_last_minute,
            minute_reset_ms: reset_ms,
        }
    }

    #[test]
    fn midnight_is_counted_in_utc() {
        assert_eq!(secs_to_midnight(at(23, 59, 30)), 30);
        assert_eq!(secs_to_midnight(at(0, 0, 0)), 86_400);
    }

    #[test]
    fn reports_the_limit_closest_to_exhaustion() {
        let now = at(23, 0, 0);
        assert_eq!(rate_limit(&usage(0, 9, 0, 0, 0), now), None);
        assert_eq!(
            rate_limit(&usage(50, 10, 0, 0, 0), now),
            Some(RateLimit {
                limit: 50,
                remaining: 40,
                reset_secs: 3600
            })
        );
        assert_eq!(
            rate_limit(&usage(50, 10, 5, 4, 1200), now),
            Some(RateLimit {
                limit: 5,
                remaining: 1,
                reset_secs: 2
            })
        );
        // Both exhausted: the daily limit binds longer.
        assert_eq!(
            rate_limit(&usage(50, 50, 5, 5, 1200), now),
            Some(RateLimit {
                limit: 50,
                remaining: 0,
                reset_secs: 3600
            })
        );
    }
}
