//! Redis layout of tenant records, usage counters and the per-minute limiter, plus the one
//! atomic script that checks a request against them and counts it.
//!
//! Keys (prefix default `nlu:`):
//! - `nlu:tenant:{ns}/{name}`: hash, see [`field`] and [`TenantRecord`] (written by the operator).
//! - `nlu:usage:{ns}/{name}:{YYYY-MM-DD}`: requests counted on that UTC day (kept two days).
//! - `nlu:rate:{ns}/{name}`: sorted set of request times (ms) in the last minute: a sliding
//!   window log, so no burst is possible across minute edges.

use std::collections::HashMap;

use chrono::NaiveDate;

use super::claims::{QualifiedName, Scope};
use super::AccessError;

pub const DEFAULT_PREFIX: &str = "nlu:";

/// Largest request limit the quota script compares exactly (15 digits: below 2^53, where
/// Lua's numbers stop being exact); the Tenant CRD allows no more.
pub const MAX_LIMIT: u64 = 999_999_999_999_999;

/// Usage counters live two days so yesterday's total is still readable just after midnight.
pub const USAGE_TTL_SECS: u64 = 2 * 24 * 3600;

/// Field names of the tenant hash.
pub mod field {
    /// `1` = enabled, anything else = suspended.
    pub const ENABLED: &str = "enabled";
    /// Integer, `0` = unlimited.
    pub const REQUESTS_PER_DAY: &str = "requests_per_day";
    /// Integer, `0` = unlimited.
    pub const REQUESTS_PER_MINUTE: &str = "requests_per_minute";
    /// Comma-separated scopes (`predict,embed`); empty = all.
    pub const SCOPES: &str = "scopes";
    /// Comma-separated NluService names in the tenant's namespace; empty = all.
    pub const SERVICES: &str = "services";
    /// Credential generation: tokens with a lower `gen` claim are revoked.
    pub const GEN: &str = "gen";
}

/// Key names under one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisKeys {
    prefix: String,
}

impl Default for RedisKeys {
    fn default() -> Self {
        Self::new(DEFAULT_PREFIX)
    }
}

impl RedisKeys {
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
        }
    }

    pub fn tenant(&self, tenant: &QualifiedName) -> String {
        format!("{}tenant:{tenant}", self.prefix)
    }

    pub fn usage(&self, tenant: &QualifiedName, day: NaiveDate) -> String {
        format!("{}usage:{tenant}:{}", self.prefix, day.format("%Y-%m-%d"))
    }

    /// `SCAN MATCH` pattern of all of a tenant's usage counters (for cleanup on deletion).
    pub fn usage_pattern(&self, tenant: &QualifiedName) -> String {
        format!("{}usage:{tenant}:*", self.prefix)
    }

    pub fn rate(&self, tenant: &QualifiedName) -> String {
        format!("{}rate:{tenant}", self.prefix)
    }
}

/// The tenant hash as typed values.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TenantRecord {
    pub enabled: bool,
    pub requests_per_day: u64,
    pub requests_per_minute: u64,
    /// Empty = all scopes.
    pub scopes: Vec<Scope>,
    /// NluService names in the tenant's namespace; empty = all.
    pub services: Vec<String>,
    pub gen: u64,
}

impl TenantRecord {
    /// Field/value pairs for `HSET`.
    pub fn to_fields(&self) -> Vec<(&'static str, String)> {
        vec![
            (
                field::ENABLED,
                if self.enabled { "1" } else { "0" }.to_string(),
            ),
            (field::REQUESTS_PER_DAY, self.requests_per_day.to_string()),
            (
                field::REQUESTS_PER_MINUTE,
                self.requests_per_minute.to_string(),
            ),
            (field::SCOPES, Scope::join(&self.scopes)),
            (field::SERVICES, self.services.join(",")),
            (field::GEN, self.gen.to_string()),
        ]
    }

    /// Reads an `HGETALL` reply; absent numbers count as 0 and absent lists as empty.
    pub fn from_fields(fields: &HashMap<String, String>) -> Result<Self, AccessError> {
        let get = |name: &str| fields.get(name).map(|v| v.trim()).unwrap_or("");
        let number = |name: &str| match get(name) {
            "" => Ok(0),
            v => v
                .parse::<u64>()
                .map_err(|_| AccessError::Record(format!("{name} = {v:?} is not a number"))),
        };
        Ok(Self {
            enabled: get(field::ENABLED) == "1",
            requests_per_day: number(field::REQUESTS_PER_DAY)?,
            requests_per_minute: number(field::REQUESTS_PER_MINUTE)?,
            scopes: Scope::parse_list(get(field::SCOPES))?,
            services: get(field::SERVICES)
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect(),
            gen: number(field::GEN)?,
        })
    }
}

/// Checks a request against the tenant record and limits, and counts it only when allowed.
///
/// KEYS: tenant hash, today's usage counter, minute limiter (see [`RedisKeys`]).
/// ARGV: token `gen`, route scope, service name, usage TTL seconds, a unique nonce.
/// Reply: `{code, per_day, used_today, per_minute, used_last_minute, minute_reset_ms}`, decoded by
/// [`QuotaOutcome::from_reply`]. Time comes from Redis so all servers share one clock.
pub const QUOTA_SCRIPT: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 0 then return {1, 0, 0, 0, 0, 0} end
local f = redis.call('HMGET', KEYS[1], 'enabled', 'requests_per_day', 'requests_per_minute',
                     'scopes', 'services', 'gen')
local function digits(v, most)
  return type(v) == 'string' and #v <= most and string.find(v, '^%d+$') ~= nil
end
-- A record missing a field or holding a non-number is refused, never read as "unlimited".
if (f[1] ~= '1' and f[1] ~= '0') or not digits(f[2], 15) or not digits(f[3], 15)
   or type(f[4]) ~= 'string' or type(f[5]) ~= 'string' or not digits(f[6], 20) then
  return {8, 0, 0, 0, 0, 0}
end
local function listed(list, item)
  list = string.gsub(list, '%s', '')
  return list == '' or string.find(',' .. list .. ',', ',' .. item .. ',', 1, true) ~= nil
end
-- Generations are compared as decimal strings: exact for every u64, where doubles are not.
local function below(a, b)
  a = string.match(a, '^0*(%d*)$')
  b = string.match(b, '^0*(%d*)$')
  if #a ~= #b then return #a < #b end
  return a < b
end
if f[1] ~= '1' then return {2, 0, 0, 0, 0, 0} end
if below(ARGV[1], f[6]) then return {3, 0, 0, 0, 0, 0} end
if not listed(f[4], ARGV[2]) then return {4, 0, 0, 0, 0, 0} end
if not listed(f[5], ARGV[3]) then return {5, 0, 0, 0, 0, 0} end
local per_day = tonumber(f[2])
local per_minute = tonumber(f[3])
local used = tonumber(redis.call('GET', KEYS[2]) or '0')
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local in_window = 0
if per_minute > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - 60000)
  in_window = redis.call('ZCARD', KEYS[3])
end
local function reset()
  if in_window == 0 then return 0 end
  local oldest = redis.call('ZRANGE', KEYS[3], 0, 0, 'WITHSCORES')
  return tonumber(oldest[2]) + 60000 - now
end
if per_day > 0 and used >= per_day then return {6, per_day, used, per_minute, in_window, reset()} end
if per_minute > 0 and in_window >= per_minute then
  return {7, per_day, used, per_minute, in_window, reset()}
end
used = redis.call('INCR', KEYS[2])
if used == 1 then redis.call('EXPIRE', KEYS[2], ARGV[4]) end
if per_minute > 0 then
  redis.call('ZADD', KEYS[3], now, now .. ':' .. ARGV[5])
  redis.call('PEXPIRE', KEYS[3], 60000)
  in_window = in_window + 1
end
return {0, per_day, used, per_minute, in_window, reset()}
"#;

/// Counts and limits as the script saw them (after counting, when allowed). Limits of 0 are unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub per_day: u64,
    pub used_today: u64,
    pub per_minute: u64,
    pub used_last_minute: u64,
    /// Milliseconds until the oldest request leaves the minute window (0 when it is empty).
    pub minute_reset_ms: u64,
}

/// What the quota script decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaOutcome {
    Allowed(Usage),
    NoRecord,
    Suspended,
    Revoked,
    ScopeNotGranted,
    ServiceNotGranted,
    DailyQuotaExceeded(Usage),
    RateLimited(Usage),
    /// The record misses a field or holds a non-number: refused, not read as unlimited.
    InvalidRecord,
}

impl QuotaOutcome {
    pub fn from_reply(reply: &[i64]) -> Result<Self, AccessError> {
        let bad = || AccessError::Record(format!("unexpected quota script reply {reply:?}"));
        let [code, per_day, used_today, per_minute, used_last_minute, reset] = reply else {
            return Err(bad());
        };
        let n = |v: &i64| u64::try_from(*v).map_err(|_| bad());
        let usage = Usage {
            per_day: n(per_day)?,
            used_today: n(used_today)?,
            per_minute: n(per_minute)?,
            used_last_minute: n(used_last_minute)?,
            minute_reset_ms: n(reset)?,
        };
        Ok(match code {
            0 => QuotaOutcome::Allowed(usage),
            1 => QuotaOutcome::NoRecord,
            2 => QuotaOutcome::Suspended,
            3 => QuotaOutcome::Revoked,
            4 => QuotaOutcome::ScopeNotGranted,
            5 => QuotaOutcome::ServiceNotGranted,
            6 => QuotaOutcome::DailyQuotaExceeded(usage),
            7 => QuotaOutcome::RateLimited(usage),
            8 => QuotaOutcome::InvalidRecord,
            _ => return Err(bad()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_names_follow_the_contract() {
        let keys = RedisKeys::default();
        let t: QualifiedName = "team-a/alice".parse().unwrap();
        assert_eq!(keys.tenant(&t), "nlu:tenant:team-a/alice");
        let day = NaiveDate::from_ymd_opt(2026, 1, 2).unwrap();
        assert_eq!(keys.usage(&t, day), "nlu:usage:team-a/alice:2026-01-02");
        assert_eq!(keys.usage_pattern(&t), "nlu:usage:team-a/alice:*");
        assert_eq!(RedisKeys::new("x:").rate(&t), "x:rate:team-a/alice");
    }

    #[test]
    fn record_round_trips_through_hash_fields() {
        let record = TenantRecord {
            enabled: true,
            requests_per_day: 50,
            requests_per_minute: 5,
            scopes: vec![Scope::Embed],
            services: vec!["gte".into(), "uninlu".into()],
            gen: 7,
        };
        let fields: HashMap<String, String> = record
            .to_fields()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        assert_eq!(fields["enabled"], "1");
        assert_eq!(fields["scopes"], "embed");
        assert_eq!(fields["services"], "gte,uninlu");
        assert_eq!(TenantRecord::from_fields(&fields).unwrap(), record);
    }

    #[test]
    fn record_defaults_and_rejects_bad_numbers() {
        let only_enabled = HashMap::from([("enabled".to_string(), "1".to_string())]);
        let r = TenantRecord::from_fields(&only_enabled).unwrap();
        assert!(
            r.enabled && r.requests_per_day == 0 && r.scopes.is_empty() && r.services.is_empty()
        );
        let bad = HashMap::from([("requests_per_day".to_string(), "ten".to_string())]);
        assert!(TenantRecord::from_fields(&bad).is_err());
    }

    #[test]
    fn script_replies_decode() {
        let usage = Usage {
            per_day: 50,
            used_today: 3,
            per_minute: 5,
            used_last_minute: 2,
            minute_reset_ms: 900,
        };
        assert_eq!(
            QuotaOutcome::from_reply(&[0, 50, 3, 5, 2, 900]).unwrap(),
            QuotaOutcome::Allowed(usage)
        );
        assert_eq!(
            QuotaOutcome::from_reply(&[7, 50, 3, 5, 2, 900]).unwrap(),
            QuotaOutcome::RateLimited(usage)
        );
        assert_eq!(
            QuotaOutcome::from_reply(&[1, 0, 0, 0, 0, 0]).unwrap(),
            QuotaOutcome::NoRecord
        );
        assert_eq!(
            QuotaOutcome::from_reply(&[8, 0, 0, 0, 0, 0]).unwrap(),
            QuotaOutcome::InvalidRecord
        );
        assert!(QuotaOutcome::from_reply(&[9, 0, 0, 0, 0, 0]).is_err());
        assert!(QuotaOutcome::from_reply(&[0, 1]).is_err());
    }
}
