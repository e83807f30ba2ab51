//! The tenant's side of Redis, with the contract's key names: its record (`uid` and `gen` read
//! first, then written whole on every reconcile), its daily usage hashes (read), and every key
//! of the tenant (deleted when the Tenant goes).

use std::time::Duration;

use chrono::NaiveDate;
use nlu_crds::access::identity::fingerprint;
use nlu_crds::access::redis_client::{self, RedisConnection, Timeouts};
use nlu_crds::access::redis_keys::{field, DayUsage};
use nlu_crds::access::{Credential, QualifiedName, RedisKeys, TenantRecord};
use nlu_crds::TenantSpec;
use redis::AsyncCommands;

use super::token_secret::scope;

/// A connection (one server or a cluster) that reconnects by itself, failing fast while Redis
/// is away so reconciles return an error (and are retried) instead of hanging. TLS URLs are
/// checked against `ca_pem` when given, else the system's roots (`SSL_CERT_FILE` overrides them).
pub fn connect(url: &str, ca_pem: Option<Vec<u8>>) -> anyhow::Result<RedisConnection> {
    let timeouts = Timeouts {
        timeout: Duration::from_secs(2),
        max_delay: Duration::from_millis(500),
    };
    redis_client::connect(url, ca_pem, timeouts)
        .map_err(|e| anyhow::anyhow!("--redis-url / --redis-ca-file: {e}"))
}

/// The record the servers check requests against, for tokens of `credential`; each day's
/// usage is kept `usage_retention_days` (`--usage-retention-days`).
pub fn record(
    spec: &TenantSpec,
    credential: &Credential,
    usage_retention_days: u64,
) -> TenantRecord {
    let quota = spec.quota.clone().unwrap_or_default();
    // Negative limits are refused by the CRD schema; treat any that slip through as unlimited.
    let limit = |v: Option<i64>| v.and_then(|v| u64::try_from(v).ok()).unwrap_or(0);
    let mut scopes: Vec<_> = spec.scopes.iter().map(|s| scope(*s)).collect();
    scopes.sort();
    scopes.dedup();
    let mut services = spec.services.clone();
    services.sort();
    services.dedup();
    TenantRecord {
        enabled: !spec.suspended,
        requests_per_day: limit(quota.requests_per_day),
        requests_per_minute: limit(quota.requests_per_minute),
        tokens_per_day: limit(quota.tokens_per_day),
        tokens_per_minute: limit(quota.tokens_per_minute),
        max_concurrent_requests: limit(quota.max_concurrent_requests),
        scopes,
        services,
        gen: credential.gen,
        uid: credential.tid.clone(),
        usage_retention_days,
        identity: spec
            .identity
            .as_ref()
            .map(|i| fingerprint(&i.issuer, &i.audience, &i.claims)),
    }
}

/// The `uid` and `gen` of the tenant's stored record, as text (`None`: no record, or no such
/// field), read before the record is written.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Stored {
    pub uid: Option<String>,
    pub gen: Option<String>,
}

impl Stored {
    /// The credential tokens must carry: `wanted`, unless the stored record is of the same
    /// Tenant (uid) with a higher `gen`. The record's `gen` is never lowered, so revoked tokens
    /// stay revoked whatever the Tenant says now; a Tenant deleted and created again has a new
    /// uid, so it starts afresh.
    pub fn never_lower(&self, wanted: Credential) -> Credential {
        let stored = self.gen.as_deref().and_then(|g| g.parse::<u64>().ok());
        match stored {
            Some(gen) if self.uid.as_deref() == Some(wanted.tid.as_str()) && gen > wanted.gen => {
                Credential { gen, ..wanted }
            }
            _ => wanted,
        }
    }
}

/// The stored record's `uid` and `gen`. Read and the later write are two commands; the operator
/// is the only writer of the record (one leader at a time), so it does not change in between.
pub async fn read_stored(
    conn: &mut RedisConnection,
    keys: &RedisKeys,
    tenant: &QualifiedName,
) -> redis::RedisResult<Stored> {
    let (uid, gen) = redis::cmd("HMGET")
        .arg(keys.tenant(tenant))
        .arg(field::UID)
        .arg(field::GEN)
        .query_async(conn)
        .await?;
    Ok(Stored { uid, gen })
}

/// Writes every field of the record in one `HSET` (atomic: a server never sees half of it).
pub async fn write_record(
    conn: &mut RedisConnection,
    keys: &RedisKeys,
    tenant: &QualifiedName,
    record: &TenantRecord,
) -> redis::RedisResult<()> {
    conn.hset_multiple(keys.tenant(tenant), &record.to_fields())
        .await
}

/// The usage hashes of the tenant's `days` (UTC), in their order, in one round trip; a day
/// without a hash is empty.
pub async fn read_days(
    conn: &mut RedisConnection,
    keys: &RedisKeys,
    tenant: &QualifiedName,
    days: &[NaiveDate],
) -> redis::RedisResult<Vec<DayUsage>> {
    let mut pipe = redis::pipe();
    for day in days {
        pipe.hgetall(keys.usage(tenant, *day));
    }
    let hashes: Vec<std::collections::HashMap<String, String>> = pipe.query_async(conn).await?;
    Ok(hashes.iter().map(DayUsage::from_fields).collect())
}

/// Deletes the record, the minute limiters and every usage counter of the tenant.
pub async fn delete_tenant(
    conn: &mut RedisConnection,
    keys: &RedisKeys,
    tenant: &QualifiedName,
    today: NaiveDate,
) -> redis::RedisResult<()> {
    conn.del::<_, ()>(keys.all(tenant, today)).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use nlu_crds::access::Scope;

    fn credential(gen: u64) -> Credential {
        Credential {
            tid: "uid-1".into(),
            gen,
            identity: None,
        }
    }

    fn never_lower(uid: Option<&str>, gen: Option<&str>, wanted: Credential) -> Credential {
        let stored = Stored {
            uid: uid.map(Into::into),
            gen: gen.map(Into::into),
        };
        stored.never_lower(wanted)
    }

    #[test]
    fn the_stored_generation_of_the_same_tenant_is_never_lowered() {
        assert_eq!(never_lower(None, None, credential(2)), credential(2));
        assert_eq!(
            never_lower(Some("uid-1"), Some("7"), credential(2)),
            credential(7)
        );
        assert_eq!(
            never_lower(Some("uid-1"), Some("1"), credential(2)),
            credential(2)
        );
        // Another incarnation of the tenant, or a damaged value: the wanted one.
        assert_eq!(
            never_lower(Some("uid-0"), Some("7"), credential(2)),
            credential(2)
        );
        assert_eq!(
            never_lower(Some("uid-1"), Some("x"), credential(2)),
            credential(2)
        );
    }

    #[test]
    fn record_follows_the_spec() {
        let spec: TenantSpec = serde_json::from_value(serde_json::json!({
            "services": ["uninlu", "gte"], "scopes": ["predict"], "suspended": true,
            "quota": {"requestsPerDay": 100, "tokensPerMinute": 5000, "maxConcurrentRequests": 3}
        }))
        .unwrap();
        let r = record(&spec, &credential(4), 90);
        assert_eq!(
            r,
            TenantRecord {
                enabled: false,
                requests_per_day: 100,
                requests_per_minute: 0,
                tokens_per_day: 0,
                tokens_per_minute: 5000,
                max_concurrent_requests: 3,
                scopes: vec![Scope::Predict],
                services: vec!["gte".into(), "uninlu".into()],
                gen: 4,
                uid: "uid-1".into(),
                usage_retention_days: 90,
                identity: None,
            }
        );
        let federated: TenantSpec = serde_json::from_value(serde_json::json!({
            "services": ["gte"],
            "identity": {"issuer": "https://idp", "audience": "api",
                         "claims": [{"claim": "azp", "equals": "app"}]}
        }))
        .unwrap();
        let identity = federated.identity.clone().unwrap();
        assert_eq!(
            record(&federated, &credential(1), 35).identity,
            Some(fingerprint(
                &identity.issuer,
                &identity.audience,
                &identity.claims
            ))
        );
        let open: TenantSpec =
            serde_json::from_value(serde_json::json!({"services": ["gte"]})).unwrap();
        let r = record(&open, &credential(1), 35);
        assert!(
            r.enabled
                && r.scopes.is_empty()
                && r.requests_per_day == 0
                && r.requests_per_minute == 0
        );
    }
}
