//! The Tenant's status, computed from what the reconcile saw. Pure, so tests can check every
//! condition and the write throttle without an API.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use std::collections::BTreeMap;

use chrono::{Days, NaiveDate};
use nlu_crds::access::redis_keys::DayUsage;
use nlu_crds::access::TenantRecord;
use nlu_crds::conditions::{
    condition, set_condition, IDENTITY_PROVIDER_READY, QUOTA_EXCEEDED, READY, SUSPENDED,
};
use nlu_crds::tenant::{Usage, UsageDay};
use nlu_crds::{Tenant, TenantStatus};

/// Usage in status changes at most this often (each change is an API write).
pub const USAGE_REFRESH: Duration = Duration::from_secs(60);

/// What the reconcile observed.
pub struct Observed {
    pub secret_name: String,
    /// `exp` of the token in the Secret, Unix seconds.
    pub token_expires_at: i64,
    /// Today's usage as counted in Redis.
    pub usage: Usage,
    /// Whether the usage shown now is older than [`USAGE_REFRESH`] (tracked by the controller).
    pub usage_stale: bool,
    pub identity: IdentityProvider,
}

/// What the operator's reads of the tenant's identity provider (`spec.identity`) gave.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IdentityProvider {
    /// The Tenant names none.
    None,
    /// Not read yet.
    Pending,
    /// Read; this many keys the servers accept.
    Read(usize),
    /// The last read failed, for this reason.
    Failing(String),
}

/// The tenant's [`IdentityProvider`] from the last read of each issuer (absent: not read yet).
pub fn identity_provider(
    tenant: &Tenant,
    reads: &BTreeMap<String, Result<usize, String>>,
) -> IdentityProvider {
    let Some(identity) = &tenant.spec.identity else {
        return IdentityProvider::None;
    };
    match reads.get(&identity.issuer) {
        None => IdentityProvider::Pending,
        Some(Ok(keys)) => IdentityProvider::Read(*keys),
        Some(Err(why)) => IdentityProvider::Failing(why.clone()),
    }
}

/// The `IdentityProviderReady` condition, `None` without an identity provider.
fn identity_condition(
    identity: &IdentityProvider,
    generation: Option<i64>,
    now: Time,
) -> Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    let (ready, reason, message) = match identity {
        IdentityProvider::None => return None,
        IdentityProvider::Pending => (false, "Pending", "its keys are not read yet".to_owned()),
        IdentityProvider::Read(0) => (
            false,
            "NoUsableKeys",
            "its JWK Set has no RS256 (2048 bits or more), ES256 or EdDSA signing key with a kid: \
             its tokens are refused"
                .to_owned(),
        ),
        IdentityProvider::Read(keys) => (true, "KeysRead", format!("{keys} signing keys read")),
        IdentityProvider::Failing(why) => (
            false,
            "ReadFailed",
            format!("{why}; its tokens work with the keys read before, if any"),
        ),
    };
    Some(condition(
        IDENTITY_PROVIDER_READY,
        ready,
        reason,
        message,
        generation,
        now,
    ))
}

/// The status after a successful reconcile. Usage is only replaced when the shown value is
/// stale, a new day started or none is shown yet, so a busy tenant does not cause a status write
/// per request burst.
pub fn ready_status(tenant: &Tenant, observed: &Observed, now: Time) -> TenantStatus {
    let mut status = tenant.status.clone().unwrap_or_default();
    let generation = tenant.metadata.generation;
    let shown = status.usage.take();
    let usage = match shown {
        Some(shown) if !observed.usage_stale && shown.date == observed.usage.date => shown,
        _ => observed.usage.clone(),
    };
    let exceeded = usage.remaining == Some(0) || usage.tokens_remaining == Some(0);
    let suspended = tenant.spec.suspended;
    match identity_condition(&observed.identity, generation, now.clone()) {
        Some(identity) => set_condition(&mut status.conditions, identity),
        None => status
            .conditions
            .retain(|c| c.type_ != IDENTITY_PROVIDER_READY),
    }
    let c = &mut status.conditions;
    set_condition(
        c,
        condition(
            READY,
            true,
            "TokenIssued",
            format!(
                "token in Secret {}; access record written",
                observed.secret_name
            ),
            generation,
            now.clone(),
        ),
    );
    set_condition(
        c,
        if suspended {
            condition(
                SUSPENDED,
                true,
                "Suspended",
                "every request is refused (403)",
                generation,
                now.clone(),
            )
        } else {
            condition(SUSPENDED, false, "Active", "", generation, now.clone())
        },
    );
    set_condition(
        c,
        if exceeded {
            condition(
                QUOTA_EXCEEDED,
                true,
                "DailyQuotaUsed",
                format!(
                    "the daily {} quota for {} is used up",
                    if usage.remaining == Some(0) {
                        "request"
                    } else {
                        "token"
                    },
                    usage.date
                ),
                generation,
                now,
            )
        } else {
            condition(QUOTA_EXCEEDED, false, "WithinQuota", "", generation, now)
        },
    );
    status.usage = Some(usage);
    status.observed_generation = generation;
    status.token_secret_name = Some(observed.secret_name.clone());
    status.token_expires_at = k8s_openapi::jiff::Timestamp::from_second(observed.token_expires_at)
        .ok()
        .map(Time);
    status
}

/// The status when the access record could not be written: Ready turns False with the reason;
/// everything else is left as it was.
pub fn not_ready_status(tenant: &Tenant, reason: &str, message: String, now: Time) -> TenantStatus {
    let mut status = tenant.status.clone().unwrap_or_default();
    set_condition(
        &mut status.conditions,
        condition(
            READY,
            false,
            reason,
            message,
            tenant.metadata.generation,
            now,
        ),
    );
    status
}

/// The days whose usage the reconcile reads: `today` first, then `history_days` days before
/// it, newest first (the order [`usage`] takes them in).
pub fn usage_days(today: NaiveDate, history_days: u64) -> Vec<NaiveDate> {
    (0..=history_days)
        .filter_map(|back| today.checked_sub_days(Days::new(back)))
        .collect()
}

/// Usage from the counts of [`usage_days`] (`days[0]` today, `days[i]` `i` days before) and
/// the record's daily limits (`0` = unlimited: no `remaining`). Past days with nothing counted
/// are left out of the history.
pub fn usage(today: NaiveDate, days: &[DayUsage], record: &TenantRecord) -> Usage {
    let counted = days.first().cloned().unwrap_or_default();
    let left = |limit: u64, used: u64| (limit > 0).then(|| count(limit.saturating_sub(used)));
    let history = usage_days(today, days.len().saturating_sub(1) as u64)
        .into_iter()
        .zip(days)
        .skip(1)
        .filter(|(_, day)| !day.is_empty())
        .map(|(date, day)| UsageDay {
            date: date_text(date),
            requests: count(day.requests),
            tokens: count(day.tokens),
            refused: refused(day),
        })
        .collect();
    Usage {
        date: date_text(today),
        requests: count(counted.requests),
        remaining: left(record.requests_per_day, counted.requests),
        tokens: count(counted.tokens),
        tokens_remaining: left(record.tokens_per_day, counted.tokens),
        refused: refused(&counted),
        history,
    }
}

/// A count as the CRD's integers hold it.
fn count(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn refused(day: &DayUsage) -> BTreeMap<String, i64> {
    day.refused
        .iter()
        .map(|(reason, n)| (reason.clone(), count(*n)))
        .collect()
}

fn date_text(date: NaiveDate) -> String {
    date.format("%Y-%m-%d").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use nlu_crds::conditions::is_true;

    fn at(secs: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(secs).unwrap())
    }

    fn day(d: u32) -> chrono::NaiveDate {
        chrono::NaiveDate::from_ymd_opt(2026, 11, d).unwrap()
    }

    fn tenant(suspended: bool) -> Tenant {
        let spec = serde_json::json!({"services": ["gte"], "suspended": suspended});
        let mut t = Tenant::new("acme", serde_json::from_value(spec).unwrap());
        t.metadata.generation = Some(3);
        t
    }

    /// Limits of 10 requests and 1,000 tokens a day.
    fn limits() -> TenantRecord {
        TenantRecord {
            requests_per_day: 10,
            tokens_per_day: 1_000,
            ..TenantRecord::default()
        }
    }

    /// Today's counts, no days before.
    fn counted(requests: u64, tokens: u64) -> Vec<DayUsage> {
        vec![DayUsage {
            requests,
            tokens,
            ..DayUsage::default()
        }]
    }

    fn observed(requests: u64, d: u32, stale: bool) -> Observed {
        Observed {
            secret_name: "acme-token".into(),
            token_expires_at: 5_000,
            usage: usage(day(d), &counted(requests, 0), &limits()),
            usage_stale: stale,
            identity: IdentityProvider::None,
        }
    }

    #[test]
    fn usage_counts_remaining_only_with_a_limit() {
        let u = usage(day(1), &counted(3, 400), &limits());
        assert_eq!(
            (u.remaining, u.tokens, u.tokens_remaining),
            (Some(7), 400, Some(600))
        );
        let over = usage(day(1), &counted(12, 1_500), &limits());
        assert_eq!((over.remaining, over.tokens_remaining), (Some(0), Some(0)));
        let unlimited = usage(day(1), &counted(3, 400), &TenantRecord::default());
        assert_eq!(
            (unlimited.remaining, unlimited.tokens_remaining),
            (None, None)
        );
        assert_eq!(unlimited.date, "2026-11-01");
    }

    #[test]
    fn history_shows_the_days_before_with_anything_counted_newest_first() {
        assert_eq!(usage_days(day(3), 2), [day(3), day(2), day(1)]);
        let refused = DayUsage {
            refused: BTreeMap::from([("requests_per_minute".to_string(), 2)]),
            ..DayUsage::default()
        };
        let days = [
            DayUsage::default(),
            counted(4, 90).remove(0),
            DayUsage::default(),
            refused,
        ];
        let u = usage(day(4), &days, &limits());
        assert_eq!((u.date.as_str(), u.requests), ("2026-11-04", 0));
        assert_eq!(
            u.history,
            [
                UsageDay {
                    date: "2026-11-03".into(),
                    requests: 4,
                    tokens: 90,
                    refused: BTreeMap::new(),
                },
                UsageDay {
                    date: "2026-11-01".into(),
                    requests: 0,
                    tokens: 0,
                    refused: BTreeMap::from([("requests_per_minute".to_string(), 2)]),
                },
            ]
        );
    }

    #[test]
    fn used_up_tokens_alone_raise_quota_exceeded() {
        let mut o = observed(1, 1, true);
        o.usage = usage(day(1), &counted(1, 1_000), &limits());
        let s = ready_status(&tenant(false), &o, at(100));
        assert!(is_true(&s.conditions, QUOTA_EXCEEDED));
        let c = s
            .conditions
            .iter()
            .find(|c| c.type_ == QUOTA_EXCEEDED)
            .unwrap();
        assert!(c.message.contains("token quota"), "{}", c.message);
    }

    #[test]
    fn ready_status_reports_token_usage_and_conditions() {
        let s = ready_status(&tenant(true), &observed(10, 1, true), at(100));
        assert_eq!(s.observed_generation, Some(3));
        assert_eq!(s.token_secret_name.as_deref(), Some("acme-token"));
        assert_eq!(s.token_expires_at, Some(at(5_000)));
        assert_eq!(s.usage, Some(usage(day(1), &counted(10, 0), &limits())));
        assert!(is_true(&s.conditions, READY));
        assert!(is_true(&s.conditions, SUSPENDED));
        assert!(is_true(&s.conditions, QUOTA_EXCEEDED));
    }

    #[test]
    fn the_identity_providers_last_read_shows_as_a_condition_of_its_own() {
        let mut t = tenant(false);
        let issuer = "https://idp.example";
        t.spec.identity = Some(
            serde_json::from_value(serde_json::json!({"issuer": issuer, "audience": "api",
                "claims": [{"claim": "azp", "equals": "app"}]}))
            .unwrap(),
        );
        let reads = |read: Option<Result<usize, String>>| {
            BTreeMap::from_iter(read.map(|r| (issuer.to_owned(), r)))
        };
        let condition_after = |t: &Tenant, read: Option<Result<usize, String>>| {
            let seen = Observed {
                identity: identity_provider(t, &reads(read)),
                ..observed(1, 1, true)
            };
            let status = ready_status(t, &seen, at(100));
            assert!(
                is_true(&status.conditions, READY),
                "Ready does not depend on it"
            );
            let found = status
                .conditions
                .iter()
                .find(|c| c.type_ == IDENTITY_PROVIDER_READY)
                .map(|c| (c.status.clone(), c.reason.clone()));
            (found, status)
        };
        let shown = |status: &str, reason: &str| Some((status.to_owned(), reason.to_owned()));
        assert_eq!(condition_after(&t, None).0, shown("False", "Pending"));
        assert_eq!(
            condition_after(&t, Some(Ok(2))).0,
            shown("True", "KeysRead")
        );
        assert_eq!(
            condition_after(&t, Some(Ok(0))).0,
            shown("False", "NoUsableKeys")
        );
        let (failing, status) = condition_after(&t, Some(Err("GET x: refused".into())));
        assert_eq!(failing, shown("False", "ReadFailed"));
        t.status = Some(status);
        t.spec.identity = None;
        assert_eq!(
            condition_after(&t, None).0,
            None,
            "removed with spec.identity"
        );
    }

    #[test]
    fn unchanged_inputs_give_an_equal_status_and_fresh_usage_waits() {
        let mut t = tenant(false);
        t.status = Some(ready_status(&t, &observed(1, 1, true), at(100)));
        let again = ready_status(&t, &observed(1, 1, false), at(200));
        assert_eq!(Some(&again), t.status.as_ref(), "nothing changed: no write");
        let busy = ready_status(&t, &observed(5, 1, false), at(200));
        assert_eq!(
            busy.usage.unwrap().requests,
            1,
            "usage shown less than a minute ago is kept"
        );
        let stale = ready_status(&t, &observed(5, 1, true), at(200));
        assert_eq!(stale.usage.unwrap().requests, 5);
        let next_day = ready_status(&t, &observed(0, 2, false), at(200));
        assert_eq!(next_day.usage.unwrap().date, "2026-11-02");
    }

    #[test]
    fn failure_turns_only_ready_false() {
        let mut t = tenant(false);
        t.status = Some(ready_status(&t, &observed(1, 1, true), at(100)));
        let s = not_ready_status(&t, "RedisUnavailable", "down".into(), at(200));
        assert!(!is_true(&s.conditions, READY));
        assert_eq!(s.usage, t.status.as_ref().unwrap().usage);
        assert_eq!(s.conditions.len(), 3);
    }
}
