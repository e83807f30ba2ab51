//! Redis layout of tenant records, usage counters and the per-minute limiters, plus the one
//! atomic script that checks a request against them and counts it.
//!
//! Keys (prefix default `nlu:`); every key of a tenant carries the tenant in a hash tag
//! (`{ns/name}`), so all of them live in one Redis Cluster slot and one script can touch them:
//! - `nlu:tenant:{ns/name}`: hash, see [`field`] and [`TenantRecord`] (written by the operator).
//! - `nlu:usage:{ns/name}:{YYYY-MM-DD}`: hash of `requests` and `tokens` counted that UTC day
//!   and of refused requests by reason (`refused:<reason>`, see [`REFUSAL_REASONS`]), kept for
//!   the record's `usage_retention_days` (the operator's `--usage-retention-days`).
//! - `nlu:rate:{ns/name}`: sorted set of request times (ms) in the last minute: a sliding
//!   window log, so no burst is possible across minute edges.
//! - `nlu:rate-tokens:{ns/name}`: the same log for token charges (members `ms:nonce:tokens`),
//!   with their running sum in `nlu:rate-tokens-sum:{ns/name}`.
//! - `nlu:in-flight:{ns/name}`: sorted set of the tenant's requests in flight (member: the
//!   request's nonce, score: when its lease ends, in ms), for `maxConcurrentRequests`. A server
//!   removes its member when the request ends; a lease of a server that died ends by itself.

use std::collections::{BTreeMap, HashMap};

use chrono::NaiveDate;

use super::claims::{Credential, QualifiedName, Scope};
use super::AccessError;

pub const DEFAULT_PREFIX: &str = "nlu:";

/// Largest limit the quota script compares exactly (15 digits: below 2^53, where Lua's numbers
/// stop being exact); the Tenant CRD allows no more.
pub const MAX_LIMIT: u64 = 999_999_999_999_999;

/// How many days a day's usage hash lives when the tenant record names no retention (a record
/// written by an operator older than `usage_retention_days`): the operator's default too.
pub const DEFAULT_USAGE_RETENTION_DAYS: u64 = 35;

/// Longest retention a record may name (a year, leap day included): it bounds the usage keys
/// [`RedisKeys::all`] names for deletion.
pub const MAX_USAGE_RETENTION_DAYS: u64 = 366;

/// A usage hash lives `retention_days` from its first count (the script sets the TTL), so the
/// day is readable for at least that many days after it began.
pub fn usage_ttl_secs(retention_days: u64) -> u64 {
    retention_days * 24 * 3600
}

/// The kinds of key, the part between the prefix and the tenant's hash tag.
pub mod kind {
    /// The tenant record, written by the operator only.
    pub const TENANT: &str = "tenant";
    /// The servers' counters and limiters, in script-key order after the record.
    pub const USAGE: &str = "usage";
    pub const RATE: &str = "rate";
    pub const TOKEN_RATE: &str = "rate-tokens";
    pub const TOKEN_RATE_SUM: &str = "rate-tokens-sum";
    pub const IN_FLIGHT: &str = "in-flight";
    /// Every kind the servers write (the quota script and the in-flight release).
    pub const COUNTERS: [&str; 5] = [USAGE, RATE, TOKEN_RATE, TOKEN_RATE_SUM, IN_FLIGHT];
}

/// Field names of the tenant hash.
pub mod field {
    /// `1` = enabled, `0` = suspended.
    pub const ENABLED: &str = "enabled";
    /// Integer, `0` = unlimited.
    pub const REQUESTS_PER_DAY: &str = "requests_per_day";
    /// Integer, `0` = unlimited.
    pub const REQUESTS_PER_MINUTE: &str = "requests_per_minute";
    /// Integer (token positions the encoder runs), `0` = unlimited.
    pub const TOKENS_PER_DAY: &str = "tokens_per_day";
    /// Integer (token positions the encoder runs), `0` = unlimited.
    pub const TOKENS_PER_MINUTE: &str = "tokens_per_minute";
    /// Integer, most requests in flight at once over all servers, `0` = unlimited.
    pub const MAX_CONCURRENT_REQUESTS: &str = "max_concurrent_requests";
    /// Comma-separated scopes (`predict,embed,rerank`, `predict:ner`, ...); empty = all.
    pub const SCOPES: &str = "scopes";
    /// Comma-separated NluService names in the tenant's namespace; empty = all.
    pub const SERVICES: &str = "services";
    /// Integer, 1 to [`super::MAX_USAGE_RETENTION_DAYS`]: how long each day's usage hash
    /// lives. Optional: absent = [`super::DEFAULT_USAGE_RETENTION_DAYS`].
    pub const USAGE_RETENTION_DAYS: &str = "usage_retention_days";
    /// Credential generation: tokens with a lower `gen` claim are revoked.
    pub const GEN: &str = "gen";
    /// The Tenant's `metadata.uid`: tokens whose `tid` claim differs are revoked.
    pub const UID: &str = "uid";
    /// Fingerprint of the Tenant's `spec.identity` ([`crate::access::identity::fingerprint`]),
    /// empty without one: tokens of its identity provider are accepted only while it matches.
    /// Optional: absent = empty.
    pub const IDENTITY: &str = "identity";
}

/// Field names of a day's usage hash.
pub mod usage_field {
    pub const REQUESTS: &str = "requests";
    pub const TOKENS: &str = "tokens";
    /// Prefix of the refusal counters: `refused:<reason>`, one of [`super::REFUSAL_REASONS`].
    pub const REFUSED_PREFIX: &str = "refused:";
}

/// The reasons a refusal is counted under (the script's table maps its reply codes to them).
/// A missing or invalid record is not counted: there is no tenant to count it for.
pub const REFUSAL_REASONS: [&str; 10] = [
    "suspended",
    "revoked",
    "scope",
    "service",
    "requests_per_day",
    "requests_per_minute",
    "tokens_per_day",
    "tokens_per_minute",
    "cost_over_limit",
    "concurrency",
];

/// One UTC day of a tenant's usage hash.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DayUsage {
    /// Requests allowed.
    pub requests: u64,
    /// Tokens charged.
    pub tokens: u64,
    /// Refused requests by reason; reasons with none are absent.
    pub refused: BTreeMap<String, u64>,
}

impl DayUsage {
    /// Reads an `HGETALL` reply (empty when the day has no hash). The script only writes
    /// counters by `HINCRBY`, so a field that is not a number was not written by it: skipped.
    pub fn from_fields(fields: &HashMap<String, String>) -> Self {
        let number = |name: &str| fields.get(name).and_then(|v| v.parse().ok()).unwrap_or(0);
        let refused = fields
            .iter()
            .filter_map(|(name, value)| {
                let reason = name.strip_prefix(usage_field::REFUSED_PREFIX)?;
                Some((reason.to_owned(), value.parse().ok()?))
            })
            .collect();
        Self {
            requests: number(usage_field::REQUESTS),
            tokens: number(usage_field::TOKENS),
            refused,
        }
    }

    /// Whether nothing was counted that day.
    pub fn is_empty(&self) -> bool {
        self.requests == 0 && self.tokens == 0 && self.refused.is_empty()
    }
}

/// Checks a `--redis-prefix`: braces would put a hash tag in the prefix and every tenant in
/// one cluster slot.
pub fn prefix(value: &str) -> Result<String, String> {
    if value.contains(['{', '}']) {
        return Err(format!(
            "{value:?} must not contain {{ or }} (keys carry the tenant as their hash tag)"
        ));
    }
    Ok(value.to_string())
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

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn key(&self, kind: &str, tenant: &QualifiedName) -> String {
        format!("{}{kind}:{{{tenant}}}", self.prefix)
    }

    pub fn tenant(&self, tenant: &QualifiedName) -> String {
        self.key(kind::TENANT, tenant)
    }

    pub fn usage(&self, tenant: &QualifiedName, day: NaiveDate) -> String {
        format!(
            "{}:{}",
            self.key(kind::USAGE, tenant),
            day.format("%Y-%m-%d")
        )
    }

    pub fn rate(&self, tenant: &QualifiedName) -> String {
        self.key(kind::RATE, tenant)
    }

    pub fn token_rate(&self, tenant: &QualifiedName) -> String {
        self.key(kind::TOKEN_RATE, tenant)
    }

    pub fn token_rate_sum(&self, tenant: &QualifiedName) -> String {
        self.key(kind::TOKEN_RATE_SUM, tenant)
    }

    pub fn in_flight(&self, tenant: &QualifiedName) -> String {
        self.key(kind::IN_FLIGHT, tenant)
    }

    /// Every key the tenant can have on `today`: the usage hashes of every day the longest
    /// retention ([`MAX_USAGE_RETENTION_DAYS`]) can keep alive, whatever retention wrote them
    /// (a hash of day D lives until D + retention + 1 at most). Named, not scanned, because
    /// `SCAN` sees one node of a cluster only.
    pub fn all(&self, tenant: &QualifiedName, today: NaiveDate) -> Vec<String> {
        let mut keys = vec![
            self.tenant(tenant),
            self.rate(tenant),
            self.token_rate(tenant),
            self.token_rate_sum(tenant),
            self.in_flight(tenant),
        ];
        keys.extend(
            (0..=MAX_USAGE_RETENTION_DAYS)
                .filter_map(|back| today.checked_sub_days(chrono::Days::new(back)))
                .map(|day| self.usage(tenant, day)),
        );
        keys
    }

    /// The script's `KEYS`, in its order.
    pub fn script_keys(&self, tenant: &QualifiedName, today: NaiveDate) -> [String; 6] {
        [
            self.tenant(tenant),
            self.usage(tenant, today),
            self.rate(tenant),
            self.token_rate(tenant),
            self.token_rate_sum(tenant),
            self.in_flight(tenant),
        ]
    }
}

/// The tenant hash as typed values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantRecord {
    pub enabled: bool,
    pub requests_per_day: u64,
    pub requests_per_minute: u64,
    pub tokens_per_day: u64,
    pub tokens_per_minute: u64,
    pub max_concurrent_requests: u64,
    /// Empty = all scopes.
    pub scopes: Vec<Scope>,
    /// NluService names in the tenant's namespace; empty = all.
    pub services: Vec<String>,
    pub gen: u64,
    /// The Tenant's `metadata.uid` (not empty).
    pub uid: String,
    /// How many days each day's usage hash lives, 1 to [`MAX_USAGE_RETENTION_DAYS`].
    pub usage_retention_days: u64,
    /// Fingerprint of the identity mapping whose tokens are accepted (`spec.identity`).
    pub identity: Option<String>,
}

impl Default for TenantRecord {
    fn default() -> Self {
        Self {
            enabled: false,
            requests_per_day: 0,
            requests_per_minute: 0,
            tokens_per_day: 0,
            tokens_per_minute: 0,
            max_concurrent_requests: 0,
            scopes: Vec::new(),
            services: Vec::new(),
            gen: 0,
            uid: String::new(),
            usage_retention_days: DEFAULT_USAGE_RETENTION_DAYS,
            identity: None,
        }
    }
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
            (field::TOKENS_PER_DAY, self.tokens_per_day.to_string()),
            (field::TOKENS_PER_MINUTE, self.tokens_per_minute.to_string()),
            (
                field::MAX_CONCURRENT_REQUESTS,
                self.max_concurrent_requests.to_string(),
            ),
            (field::SCOPES, Scope::join(&self.scopes)),
            (field::SERVICES, self.services.join(",")),
            (field::GEN, self.gen.to_string()),
            (field::UID, self.uid.clone()),
            (
                field::USAGE_RETENTION_DAYS,
                self.usage_retention_days.to_string(),
            ),
            // Always written, so removing `spec.identity` clears it in the same HSET.
            (field::IDENTITY, self.identity.clone().unwrap_or_default()),
        ]
    }

    /// Reads an `HGETALL` reply as strictly as the quota script does: a missing field or a
    /// non-number is an error, never a default (but for the optional `usage_retention_days`,
    /// which only records of older operators lack).
    pub fn from_fields(fields: &HashMap<String, String>) -> Result<Self, AccessError> {
        let get = |name: &str| {
            fields
                .get(name)
                .map(String::as_str)
                .ok_or_else(|| AccessError::Record(format!("{name} is missing")))
        };
        let number = |name: &str| {
            get(name)?.parse::<u64>().map_err(|_| {
                AccessError::Record(format!("{name} = {:?} is not a number", fields[name]))
            })
        };
        let enabled = match get(field::ENABLED)? {
            "1" => true,
            "0" => false,
            other => {
                return Err(AccessError::Record(format!(
                    "enabled = {other:?} is not 1 or 0"
                )))
            }
        };
        Ok(Self {
            enabled,
            requests_per_day: number(field::REQUESTS_PER_DAY)?,
            requests_per_minute: number(field::REQUESTS_PER_MINUTE)?,
            tokens_per_day: number(field::TOKENS_PER_DAY)?,
            tokens_per_minute: number(field::TOKENS_PER_MINUTE)?,
            max_concurrent_requests: number(field::MAX_CONCURRENT_REQUESTS)?,
            scopes: Scope::parse_list(get(field::SCOPES)?)?,
            services: get(field::SERVICES)?
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect(),
            gen: number(field::GEN)?,
            uid: Some(get(field::UID)?)
                .filter(|uid| !uid.is_empty())
                .ok_or_else(|| AccessError::Record(format!("{} is empty", field::UID)))?
                .to_owned(),
            usage_retention_days: match fields.get(field::USAGE_RETENTION_DAYS) {
                None => DEFAULT_USAGE_RETENTION_DAYS,
                Some(_) => Some(number(field::USAGE_RETENTION_DAYS)?)
                    .filter(|days| (1..=MAX_USAGE_RETENTION_DAYS).contains(days))
                    .ok_or_else(|| {
                        AccessError::Record(format!(
                            "{} is not 1 to {MAX_USAGE_RETENTION_DAYS}",
                            field::USAGE_RETENTION_DAYS
                        ))
                    })?,
            },
            identity: fields
                .get(field::IDENTITY)
                .filter(|f| !f.is_empty())
                .cloned(),
        })
    }
}

/// Checks a request against the tenant record and limits, and counts it only when allowed.
/// Called once per request to count it (`requests` = 1, `tokens` = 0, before the body is read)
/// and once per unit of model work to charge its tokens (`requests` = 0), so the token cost is
/// known exactly when it is charged.
///
/// KEYS: [`RedisKeys::script_keys`]. ARGV: token `gen`, the scopes that would each allow the
/// call (comma-separated, e.g. [`Scope::reaching`] or [`Scope::granting`]; the record must list
/// one of them or none at all), service name, usage TTL seconds when the record names no
/// `usage_retention_days`, a unique nonce, requests to count (`0`/`1`), tokens to charge, the
/// request's lease in ms (how long it may hold a place under `max_concurrent_requests`: the
/// request timeout), token `tid`, the identity fingerprint of a token of the tenant's identity
/// provider (empty for the operator's tokens, whose `gen` is compared instead).
/// Reply: `{code, requests: per_day, used_today, per_minute, used_last_minute, minute_reset_ms,
/// tokens: the same five, max_concurrent_requests, requests in flight}`, decoded by
/// [`QuotaOutcome::from_reply`]; a part the call did not count is zeros. A counted request
/// under a concurrency limit holds a place named by its nonce until the server removes it
/// ([`RedisKeys::in_flight`]) or its lease ends. A refusal of a tenant with a valid record is
/// counted in the day's usage hash under its reason ([`REFUSAL_REASONS`]), in the same call, so
/// none is lost. Time comes from Redis so all servers share one clock. Counters only ever
/// change by `HINCRBY`/`INCRBY` with the caller's decimal strings: Lua formats numbers above
/// 10^14 inexactly.
pub const QUOTA_SCRIPT: &str = r#"
local zero = {0, 0, 0, 0, 0}
local conc = {0, 0}
local ttl = ARGV[4]
local refused = {[2] = 'suspended', [3] = 'revoked', [4] = 'scope', [5] = 'service',
                 [6] = 'requests_per_day', [7] = 'requests_per_minute', [9] = 'tokens_per_day',
                 [10] = 'tokens_per_minute', [11] = 'cost_over_limit', [12] = 'concurrency'}
local function count(field, by)
  local used = redis.call('HINCRBY', KEYS[2], field, by)
  if redis.call('TTL', KEYS[2]) < 0 then redis.call('EXPIRE', KEYS[2], ttl) end
  return used
end
local function answer(code, req, tok)
  if refused[code] then count('refused:' .. refused[code], 1) end
  return {code, req[1], req[2], req[3], req[4], req[5], tok[1], tok[2], tok[3], tok[4], tok[5],
          conc[1], conc[2]}
end
if redis.call('EXISTS', KEYS[1]) == 0 then return answer(1, zero, zero) end
local f = redis.call('HMGET', KEYS[1], 'enabled', 'requests_per_day', 'requests_per_minute',
                     'scopes', 'services', 'gen', 'tokens_per_day', 'tokens_per_minute',
                     'max_concurrent_requests', 'uid', 'usage_retention_days', 'identity')
local function digits(v, most)
  return type(v) == 'string' and #v <= most and string.find(v, '^%d+$') ~= nil
end
-- A record missing a field or holding a non-number is refused, never read as "unlimited".
if (f[1] ~= '1' and f[1] ~= '0') or not digits(f[2], 15) or not digits(f[3], 15)
   or type(f[4]) ~= 'string' or type(f[5]) ~= 'string' or not digits(f[6], 20)
   or not digits(f[7], 15) or not digits(f[8], 15) or not digits(f[9], 15)
   or type(f[10]) ~= 'string' or f[10] == ''
   or (f[11] and (not digits(f[11], 3) or tonumber(f[11]) < 1 or tonumber(f[11]) > 366))
   or not digits(ARGV[7], 15) or not digits(ARGV[8], 15) then
  return answer(8, zero, zero)
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
-- The retention in days, as seconds (`usage_ttl_secs`).
if f[11] then ttl = tonumber(f[11]) * 86400 end
if f[1] ~= '1' then return answer(2, zero, zero) end
-- A token of another incarnation of the tenant (deleted and re-created) is revoked too. One of
-- the tenant's identity provider (ARGV[10] set) needs the record's identity mapping instead.
if ARGV[9] ~= f[10] then return answer(3, zero, zero) end
if ARGV[10] ~= '' then
  if f[12] ~= ARGV[10] then return answer(3, zero, zero) end
elseif below(ARGV[1], f[6]) then return answer(3, zero, zero) end
-- ARGV[2] lists the scopes that would each allow the call: the record must grant one.
local function any_listed(list, items)
  for item in string.gmatch(items, '[^,]+') do
    if listed(list, item) then return true end
  end
  return false
end
if not any_listed(f[4], ARGV[2]) then return answer(4, zero, zero) end
if not listed(f[5], ARGV[3]) then return answer(5, zero, zero) end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local cutoff = now - 60000
local function reset(log, in_window)
  if in_window == 0 then return 0 end
  local oldest = redis.call('ZRANGE', log, 0, 0, 'WITHSCORES')
  if oldest[2] == nil then return 0 end
  return tonumber(oldest[2]) + 60000 - now
end
local req = zero
if ARGV[6] == '1' then
  local per_day, per_minute = tonumber(f[2]), tonumber(f[3])
  local used = tonumber(redis.call('HGET', KEYS[2], 'requests') or '0')
  local in_window = 0
  if per_minute > 0 then
    redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', cutoff)
    in_window = redis.call('ZCARD', KEYS[3])
  end
  local function seen() return {per_day, used, per_minute, in_window, reset(KEYS[3], in_window)} end
  if per_day > 0 and used >= per_day then return answer(6, seen(), zero) end
  if per_minute > 0 and in_window >= per_minute then return answer(7, seen(), zero) end
  local most = tonumber(f[9])
  if most > 0 then
    -- Places whose lease ended belong to requests a dead server never released.
    redis.call('ZREMRANGEBYSCORE', KEYS[6], '-inf', now)
    local held = redis.call('ZCARD', KEYS[6])
    conc = {most, held}
    if held >= most then return answer(12, seen(), zero) end
    redis.call('ZADD', KEYS[6], now + tonumber(ARGV[8]), ARGV[5])
    redis.call('PEXPIRE', KEYS[6], ARGV[8])
    conc = {most, held + 1}
  end
  used = count('requests', 1)
  if per_minute > 0 then
    redis.call('ZADD', KEYS[3], now, now .. ':' .. ARGV[5])
    redis.call('PEXPIRE', KEYS[3], 60000)
    in_window = in_window + 1
  end
  req = seen()
end
local cost = tonumber(ARGV[7])
if cost == 0 then return answer(0, req, zero) end
local per_day, per_minute = tonumber(f[7]), tonumber(f[8])
local used = tonumber(redis.call('HGET', KEYS[2], 'tokens') or '0')
local in_window = 0
if per_minute > 0 then
  -- The log's members end in their token count; the sum is kept beside it and rebuilt from
  -- the log when it is missing (evicted) or the log is empty.
  local expired = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', cutoff)
  redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', cutoff)
  local left = redis.call('ZRANGE', KEYS[4], 0, -1)
  if #left == 0 then
    redis.call('DEL', KEYS[5])
  elseif redis.call('EXISTS', KEYS[5]) == 1 then
    for _, m in ipairs(expired) do redis.call('DECRBY', KEYS[5], string.match(m, '(%d+)$')) end
  else
    for _, m in ipairs(left) do redis.call('INCRBY', KEYS[5], string.match(m, '(%d+)$')) end
    redis.call('PEXPIRE', KEYS[5], 60000)
  end
  in_window = math.max(0, tonumber(redis.call('GET', KEYS[5]) or '0'))
end
local function seen() return {per_day, used, per_minute, in_window, reset(KEYS[4], in_window)} end
if (per_day > 0 and cost > per_day) or (per_minute > 0 and cost > per_minute) then
  return answer(11, req, seen())
end
if per_day > 0 and used + cost > per_day then return answer(9, req, seen()) end
if per_minute > 0 and in_window + cost > per_minute then return answer(10, req, seen()) end
used = count('tokens', ARGV[7])
if per_minute > 0 then
  redis.call('ZADD', KEYS[4], now, now .. ':' .. ARGV[5] .. ':' .. ARGV[7])
  redis.call('INCRBY', KEYS[5], ARGV[7])
  redis.call('PEXPIRE', KEYS[4], 60000)
  redis.call('PEXPIRE', KEYS[5], 60000)
  in_window = in_window + cost
end
return answer(0, req, seen())
"#;

/// What one script call counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Charge {
    /// The request itself, against the request limits.
    Request,
    /// Token positions of model work about to run, against the token limits.
    Tokens(u64),
}

/// The script's `ARGV`, in its order; `scopes`: those that would each allow the call; `nonce`
/// must be unique per call (it names the call's entries in the minute logs).
pub fn script_args(
    credential: &Credential,
    scopes: &[Scope],
    service: &str,
    nonce: u64,
    charge: Charge,
    lease_ms: u64,
) -> [String; 10] {
    let (requests, tokens) = match charge {
        Charge::Request => (1, 0),
        Charge::Tokens(n) => (0, n),
    };
    [
        credential.gen.to_string(),
        Scope::join(scopes),
        service.to_string(),
        usage_ttl_secs(DEFAULT_USAGE_RETENTION_DAYS).to_string(),
        nonce.to_string(),
        requests.to_string(),
        tokens.to_string(),
        lease_ms.min(MAX_LIMIT).to_string(),
        credential.tid.clone(),
        credential.identity.clone().unwrap_or_default(),
    ]
}

/// One kind of count (requests or tokens) as the script saw it, after counting when allowed.
/// Limits of 0 are unlimited; all zeros when the call did not count this kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counts {
    pub per_day: u64,
    pub used_today: u64,
    pub per_minute: u64,
    pub used_last_minute: u64,
    /// Milliseconds until the oldest entry leaves the minute window (0 when it is empty).
    pub minute_reset_ms: u64,
}

/// The tenant's requests in flight over all servers, as the script saw them when it counted a
/// request (all zeros otherwise, and when the tenant has no concurrency limit).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Concurrency {
    /// `max_concurrent_requests`; `0` = unlimited.
    pub limit: u64,
    /// Places held, this request's included when it took one.
    pub in_flight: u64,
}

/// Requests, tokens and requests in flight as the script saw them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    pub requests: Counts,
    pub tokens: Counts,
    pub concurrency: Concurrency,
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
    DailyTokensExceeded(Usage),
    TokenRateLimited(Usage),
    /// The charge alone is larger than a token limit: it can never pass.
    CostOverTokenLimit(Usage),
    /// The tenant already has `max_concurrent_requests` requests in flight.
    TooManyInFlight(Usage),
}

impl QuotaOutcome {
    pub fn from_reply(reply: &[i64]) -> Result<Self, AccessError> {
        let bad = || AccessError::Record(format!("unexpected quota script reply {reply:?}"));
        let [code, numbers @ ..] = reply else {
            return Err(bad());
        };
        let numbers: Vec<u64> = numbers
            .iter()
            .map(|v| u64::try_from(*v).map_err(|_| bad()))
            .collect::<Result<_, _>>()?;
        let counts = |n: &[u64]| Counts {
            per_day: n[0],
            used_today: n[1],
            per_minute: n[2],
            used_last_minute: n[3],
            minute_reset_ms: n[4],
        };
        if numbers.len() != 12 {
            return Err(bad());
        }
        let usage = Usage {
            requests: counts(&numbers[..5]),
            tokens: counts(&numbers[5..10]),
            concurrency: Concurrency {
                limit: numbers[10],
                in_flight: numbers[11],
            },
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
            9 => QuotaOutcome::DailyTokensExceeded(usage),
            10 => QuotaOutcome::TokenRateLimited(usage),
            11 => QuotaOutcome::CostOverTokenLimit(usage),
            12 => QuotaOutcome::TooManyInFlight(usage),
            _ => return Err(bad()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::UninluTask;

    fn alice() -> QualifiedName {
        "team-a/alice".parse().unwrap()
    }

    #[test]
    fn key_names_follow_the_contract_and_share_the_tenant_hash_tag() {
        let keys = RedisKeys::default();
        let t = alice();
        let day = NaiveDate::from_ymd_opt(2026, 1, 2).unwrap();
        assert_eq!(keys.tenant(&t), "nlu:tenant:{team-a/alice}");
        assert_eq!(keys.usage(&t, day), "nlu:usage:{team-a/alice}:2026-01-02");
        assert_eq!(RedisKeys::new("x:").rate(&t), "x:rate:{team-a/alice}");
        assert_eq!(keys.token_rate(&t), "nlu:rate-tokens:{team-a/alice}");
        assert_eq!(
            keys.token_rate_sum(&t),
            "nlu:rate-tokens-sum:{team-a/alice}"
        );
        for key in keys.script_keys(&t, day).iter().chain(&keys.all(&t, day)) {
            let tag = key
                .split_once('{')
                .and_then(|(_, rest)| rest.split_once('}'));
            assert_eq!(tag.map(|(tag, _)| tag), Some("team-a/alice"), "{key}");
        }
    }

    #[test]
    fn all_keys_include_every_live_usage_day() {
        let keys = RedisKeys::default();
        let today = NaiveDate::from_ymd_opt(2026, 3, 1).unwrap();
        let all = keys.all(&alice(), today);
        let usage_of = |back: u64| keys.usage(&alice(), today - chrono::Days::new(back));
        for back in [0, 1, MAX_USAGE_RETENTION_DAYS] {
            assert!(all.contains(&usage_of(back)), "{back} days back");
        }
        assert!(!all.contains(&usage_of(MAX_USAGE_RETENTION_DAYS + 1)));
        assert_eq!(all.len(), 5 + 367, "bounded by the longest retention");
        assert!(all.contains(&"nlu:in-flight:{team-a/alice}".to_string()));
    }

    #[test]
    fn the_script_counts_refusals_under_the_declared_reasons_and_bounds_retention() {
        let table = QUOTA_SCRIPT
            .split_once("local refused = {")
            .and_then(|(_, rest)| rest.split_once('}'))
            .unwrap()
            .0;
        let named: Vec<&str> = table
            .split(',')
            .map(|entry| entry.split('\'').nth(1).unwrap())
            .collect();
        assert_eq!(named, REFUSAL_REASONS);
        assert!(QUOTA_SCRIPT.contains(&format!("> {MAX_USAGE_RETENTION_DAYS})")));
        assert!(QUOTA_SCRIPT.contains(&format!("* {} end", usage_ttl_secs(1))));
    }

    #[test]
    fn day_usage_reads_counters_and_refusals_by_reason() {
        let fields: HashMap<String, String> = [
            ("requests", "12"),
            ("tokens", "3400"),
            ("refused:requests_per_minute", "2"),
            ("refused:suspended", "1"),
            ("other", "x"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let day = DayUsage::from_fields(&fields);
        assert_eq!((day.requests, day.tokens), (12, 3400));
        assert_eq!(
            day.refused,
            BTreeMap::from([
                ("requests_per_minute".to_string(), 2),
                ("suspended".to_string(), 1)
            ])
        );
        assert!(DayUsage::from_fields(&HashMap::new()).is_empty());
    }

    #[test]
    fn prefixes_with_braces_are_refused() {
        assert_eq!(prefix("nlu:").unwrap(), "nlu:");
        assert!(prefix("nlu{x}:").is_err());
    }

    fn fields(record: &TenantRecord) -> HashMap<String, String> {
        record
            .to_fields()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect()
    }

    fn fields_of_none(record: &TenantRecord) -> String {
        let fields = fields(record);
        assert_eq!(TenantRecord::from_fields(&fields).unwrap(), *record);
        fields[field::IDENTITY].clone()
    }

    #[test]
    fn record_round_trips_through_hash_fields() {
        let record = TenantRecord {
            enabled: true,
            requests_per_day: 50,
            requests_per_minute: 5,
            tokens_per_day: 100_000,
            tokens_per_minute: 2_000,
            max_concurrent_requests: 4,
            scopes: vec![Scope::Embed, Scope::PredictTask(UninluTask::Ner)],
            services: vec!["gte".into(), "uninlu".into()],
            gen: 7,
            uid: "5f0c-uid".into(),
            usage_retention_days: 90,
            identity: Some("0c1f".into()),
        };
        let fields = fields(&record);
        assert_eq!(fields["enabled"], "1");
        assert_eq!(fields["scopes"], "embed,predict:ner");
        assert_eq!(fields["services"], "gte,uninlu");
        assert_eq!(fields["tokens_per_minute"], "2000");
        assert_eq!(fields["usage_retention_days"], "90");
        assert_eq!(fields["identity"], "0c1f");
        assert_eq!(TenantRecord::from_fields(&fields).unwrap(), record);
        let without = TenantRecord {
            identity: None,
            ..record.clone()
        };
        assert_eq!(fields_of_none(&without), "", "written empty, to clear an old one");
        let mut older = fields.clone();
        older.remove(field::USAGE_RETENTION_DAYS);
        assert_eq!(
            TenantRecord::from_fields(&older)
                .unwrap()
                .usage_retention_days,
            DEFAULT_USAGE_RETENTION_DAYS,
            "a record of an older operator keeps the default retention"
        );
    }

    #[test]
    fn records_are_read_as_strictly_as_the_script_reads_them() {
        let good = fields(&TenantRecord {
            uid: "5f0c-uid".into(),
            ..TenantRecord::default()
        });
        assert!(TenantRecord::from_fields(&good).is_ok());
        for name in [
            field::ENABLED,
            field::TOKENS_PER_DAY,
            field::MAX_CONCURRENT_REQUESTS,
            field::GEN,
            field::SCOPES,
            field::UID,
        ] {
            let mut partial = good.clone();
            partial.remove(name);
            assert!(
                TenantRecord::from_fields(&partial).is_err(),
                "{name} missing"
            );
        }
        for (name, value) in [
            (field::REQUESTS_PER_DAY, "ten"),
            (field::ENABLED, "yes"),
            (field::UID, ""),
            (field::USAGE_RETENTION_DAYS, "0"),
            (field::USAGE_RETENTION_DAYS, "367"),
        ] {
            let mut bad = good.clone();
            bad.insert(name.into(), value.into());
            assert!(TenantRecord::from_fields(&bad).is_err(), "{name} = {value}");
        }
    }

    fn reply(code: i64, req: [i64; 5], tok: [i64; 5]) -> Vec<i64> {
        std::iter::once(code)
            .chain(req)
            .chain(tok)
            .chain([3, 2])
            .collect()
    }

    #[test]
    fn script_replies_decode() {
        let usage = Usage {
            requests: Counts {
                per_day: 50,
                used_today: 3,
                per_minute: 5,
                used_last_minute: 2,
                minute_reset_ms: 900,
            },
            tokens: Counts {
                per_day: 0,
                used_today: 700,
                per_minute: 1000,
                used_last_minute: 300,
                minute_reset_ms: 100,
            },
            concurrency: Concurrency {
                limit: 3,
                in_flight: 2,
            },
        };
        let r = [50, 3, 5, 2, 900];
        let t = [0, 700, 1000, 300, 100];
        assert_eq!(
            QuotaOutcome::from_reply(&reply(0, r, t)).unwrap(),
            QuotaOutcome::Allowed(usage)
        );
        assert_eq!(
            QuotaOutcome::from_reply(&reply(7, r, t)).unwrap(),
            QuotaOutcome::RateLimited(usage)
        );
        assert_eq!(
            QuotaOutcome::from_reply(&reply(10, r, t)).unwrap(),
            QuotaOutcome::TokenRateLimited(usage)
        );
        assert_eq!(
            QuotaOutcome::from_reply(&reply(11, r, t)).unwrap(),
            QuotaOutcome::CostOverTokenLimit(usage)
        );
        assert_eq!(
            QuotaOutcome::from_reply(&reply(12, r, t)).unwrap(),
            QuotaOutcome::TooManyInFlight(usage)
        );
        assert_eq!(
            QuotaOutcome::from_reply(&reply(8, [0; 5], [0; 5])).unwrap(),
            QuotaOutcome::InvalidRecord
        );
        assert!(QuotaOutcome::from_reply(&reply(13, [0; 5], [0; 5])).is_err());
        assert!(QuotaOutcome::from_reply(&reply(0, [0, 0, 0, 0, -1], [0; 5])).is_err());
        assert!(QuotaOutcome::from_reply(&[0, 1]).is_err());
    }
}
