//! The Tenant reconcile's decisions, pure. From what one reconcile observed (the Tenant, the
//! token Secret, the stored record, today's counts, the signing keys, the time) [`plan`] says
//! what to write: the access record, the token (kept, or a new one and why), the Secret, the
//! status, the Events, and when to look again. The controller observes, plans and carries the
//! plan out, so these security decisions are tested as a table, without an API or Redis.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::events::{Event, EventType};
use kube::ResourceExt;
use nlu_crds::access::{Credential, TenantRecord};
use nlu_crds::conditions::{is_true, SUSPENDED};
use nlu_crds::{Tenant, TenantStatus};

use super::controller::Error;
use super::redis_sync::{self, Stored};
use super::revocation::{self, generation};
use super::signing_key::KeyRing;
use super::status::{self, USAGE_REFRESH};
use super::token_secret::{
    self, grant_hash, reissue_reason, token_request, IssueReason, IssuedToken,
};
use crate::apply::NameTaken;
use crate::controller_kit::{event, status_change};
use crate::ownership::{holder, Holder, Mark};
use nlu_crds::access::redis_keys::DayUsage;

/// Ready's reason and the Warning Event when a Secret of the token's name is someone else's.
pub const SECRET_NAME_TAKEN: &str = "SecretNameTaken";

/// What one reconcile observed, before it wrote anything but a revocation's count.
pub struct Facts<'a> {
    /// The Tenant, a pending revocation already counted in its status (see [`revocation`]).
    pub tenant: &'a Tenant,
    /// The Secret of the token's name, if one exists.
    pub secret: Option<&'a Secret>,
    /// The stored record's uid and `gen`.
    pub stored: &'a Stored,
    /// What the servers counted on [`status::usage_days`]: today (UTC) first, then the days
    /// before, newest first.
    pub usage: &'a [DayUsage],
    /// `--usage-retention-days`, written into the record for the servers' quota script.
    pub usage_retention_days: u64,
    /// Whether the usage in status is older than [`USAGE_REFRESH`] (the controller keeps time).
    pub usage_stale: bool,
    /// The signing keys: the active one signs new tokens; a token whose key is no longer
    /// published does not verify any more.
    pub ring: &'a KeyRing,
    /// `status.url` of each of the tenant's services that has one, written next to the token.
    pub urls: BTreeMap<String, String>,
    pub now: Timestamp,
    /// `iss` of issued tokens.
    pub issuer: &'a str,
    /// `--max-token-ttl`: no token lives longer, whatever the Tenant asks.
    pub max_ttl: Duration,
    /// The `jti` of a token issued now: random, so drawn by the caller.
    pub jti: String,
    /// What the last read of the tenant's identity provider gave.
    pub identity: status::IdentityProvider,
}

/// Everything one reconcile writes.
pub struct Plan {
    /// The access record, written whole; its `gen` is never below the stored one.
    pub record: TenantRecord,
    pub token: TokenAction,
    /// The token Secret to apply; `None` when the observed one holds it already, or when it is
    /// someone else's.
    pub secret: Option<Secret>,
    /// The status to write; `None` when it would not change.
    pub status: Option<TenantStatus>,
    /// Whether that status shows newly read usage (the usage throttle starts again).
    pub shows_new_usage: bool,
    /// Events, published once the writes are done.
    pub events: Vec<Event>,
    /// When to reconcile again: for usage, or at the token's renewal if that comes first.
    pub requeue: Duration,
}

/// What happens to the tenant's token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenAction {
    /// The Secret's token grants what the Tenant asks, its key is published and its renewal
    /// time has not come.
    Keep,
    /// A new token, and why: none readable, another grant, its key retired, or renewal.
    Issue(IssueReason),
    /// The Secret's name is someone else's: no token is read from it or written into it.
    NameTaken,
}

/// A pending `nlu.dev/revoke` counted: the Tenant with the count in its status, and the Event
/// saying so. The controller writes that status before anything else, so the count survives
/// whatever fails next and each revoke value raises `gen` once.
pub fn revocation(tenant: &Tenant) -> Option<(Tenant, Event)> {
    let counted = revocation::handled(tenant, revocation::pending_revoke(tenant)?);
    let note = format!(
        "every token below generation {} stops working",
        generation(&counted)
    );
    Some((counted, event(EventType::Normal, "Revoked", note)))
}

/// The plan for what `f` observed. Errors: a Tenant that cannot have a token (no uid, a bad
/// TTL or name), or a key that cannot sign.
pub fn plan(f: &Facts) -> Result<Plan, Error> {
    let ttl = f
        .tenant
        .spec
        .token_ttl()
        .map_err(|e| Error::Invalid(format!("spec.token.ttl: {e}")))?
        .min(f.max_ttl);
    let tid = f
        .tenant
        .uid()
        .ok_or_else(|| Error::Invalid("the Tenant has no metadata.uid".into()))?;
    let credential = f.stored.never_lower(Credential {
        tid,
        gen: generation(f.tenant),
        identity: None,
    });
    let record = redis_sync::record(&f.tenant.spec, &credential, f.usage_retention_days);
    let events = Vec::from_iter(suspension_event(f.tenant));
    let secret_holder = holder(
        f.secret.map(|s| &s.metadata),
        Mark::ControlledBy(&credential.tid),
    );
    if secret_holder == Holder::Foreign {
        return Ok(name_taken(f, record, events));
    }
    let (token_action, token) = token(f, ttl, &credential)?;
    Ok(with_token(f, record, events, token_action, token))
}

/// The Secret of the token's name is someone else's: not adopted, Ready says so (with a
/// Warning Event when it starts saying so), checked again every minute; the record is still
/// written.
fn name_taken(f: &Facts, record: TenantRecord, mut events: Vec<Event>) -> Plan {
    let taken = NameTaken {
        kind: "Secret".into(),
        name: token_secret::secret_name(&f.tenant.name_any()),
    };
    let blocked =
        status::not_ready_status(f.tenant, SECRET_NAME_TAKEN, taken.to_string(), Time(f.now));
    let status = status_change(f.tenant.status.as_ref(), blocked);
    if status.is_some() {
        events.push(event(
            EventType::Warning,
            SECRET_NAME_TAKEN,
            taken.to_string(),
        ));
    }
    Plan {
        record,
        token: TokenAction::NameTaken,
        secret: None,
        status,
        shows_new_usage: false,
        events,
        requeue: USAGE_REFRESH,
    }
}

/// The Secret holding `token`, the status showing it and today's usage, and the next look:
/// for usage, or at the token's renewal if that comes first.
fn with_token(
    f: &Facts,
    record: TenantRecord,
    mut events: Vec<Event>,
    token_action: TokenAction,
    token: IssuedToken,
) -> Plan {
    let tenant = f.tenant;
    let secret_name = token_secret::secret_name(&tenant.name_any());
    if let TokenAction::Issue(reason) = token_action {
        let note = issued_note(record.gen, token.expires_at, &secret_name);
        events.push(event(EventType::Normal, reason.as_str(), note));
    }
    let desired = token_secret::secret(tenant, &token, &f.urls);
    let secret = match f.secret {
        Some(observed) if token_secret::up_to_date(observed, &desired) => None,
        _ => Some(desired),
    };
    let observed = status::Observed {
        secret_name,
        token_expires_at: token.expires_at,
        usage: status::usage(utc_day(f.now), f.usage, &record),
        usage_stale: f.usage_stale,
        identity: f.identity.clone(),
    };
    let ready = status::ready_status(tenant, &observed, Time(f.now));
    let shown_usage = tenant.status.as_ref().and_then(|s| s.usage.as_ref());
    let shows_new_usage = ready.usage.as_ref() != shown_usage;
    let until_renewal = u64::try_from(token.renew_at() - f.now.as_second()).unwrap_or(0);
    Plan {
        record,
        token: token_action,
        secret,
        status: status_change(tenant.status.as_ref(), ready),
        shows_new_usage,
        events,
        requeue: USAGE_REFRESH.min(Duration::from_secs(until_renewal.max(1))),
    }
}

/// The token the Secret is to hold: the current one, or one minted now by the active key.
fn token(
    f: &Facts,
    ttl: Duration,
    credential: &Credential,
) -> Result<(TokenAction, IssuedToken), Error> {
    let current = f.secret.and_then(IssuedToken::from_secret);
    let request = token_request(f.tenant, f.issuer, ttl, credential)?;
    let hash = grant_hash(&request);
    let now = f.now.as_second();
    let reason = reissue_reason(current.as_ref(), &hash, |kid| f.ring.publishes(kid), now);
    match (reason, current) {
        (None, Some(current)) => Ok((TokenAction::Keep, current)),
        (reason, _) => {
            let claims = request.claims_at(now, f.jti.clone());
            let token = IssuedToken {
                token: f.ring.signing.mint(&claims)?,
                kid: f.ring.signing.kid().to_owned(),
                grant_hash: hash,
                issued_at: claims.iat,
                expires_at: claims.exp,
            };
            let reason = reason.unwrap_or(IssueReason::Missing);
            Ok((TokenAction::Issue(reason), token))
        }
    }
}

/// `Suspended` or `Resumed` when `spec.suspended` differs from what the status shows.
fn suspension_event(tenant: &Tenant) -> Option<Event> {
    let shown = tenant
        .status
        .as_ref()
        .is_some_and(|s| is_true(&s.conditions, SUSPENDED));
    let (reason, note) = match (tenant.spec.suspended, shown) {
        (true, false) => ("Suspended", "every request of this tenant is refused (403)"),
        (false, true) => ("Resumed", "requests of this tenant are served again"),
        _ => return None,
    };
    Some(event(EventType::Normal, reason, note.into()))
}

fn issued_note(gen: u64, expires_at: i64, secret: &str) -> String {
    let expires = chrono::DateTime::from_timestamp(expires_at, 0)
        .map(|t| t.to_rfc3339())
        .unwrap_or_default();
    format!("new token (generation {gen}) in Secret {secret}, expires {expires}")
}

/// The UTC day usage counters are kept by.
pub fn utc_day(now: Timestamp) -> chrono::NaiveDate {
    chrono::DateTime::from_timestamp(now.as_second(), 0)
        .unwrap_or_default()
        .date_naive()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tenant::token_secret::RENEW_AT_FRACTION;
    use chrono::TimeZone;
    use nlu_crds::conditions::READY;

    /// The first reconcile's time, and the default TTL (720h) in seconds.
    const T0: i64 = 1_800_000_000;
    const TTL: i64 = 720 * 3600;
    /// When a token issued at T0 is renewed.
    const RENEWAL: i64 = T0 + (TTL as f64 * RENEW_AT_FRACTION) as i64;

    /// Everything a reconcile observes, as the table's rows change it.
    struct World {
        tenant: Tenant,
        secret: Option<Secret>,
        stored: Stored,
        usage: Vec<DayUsage>,
        usage_stale: bool,
        ring: KeyRing,
        now: i64,
        max_ttl: Duration,
    }

    impl World {
        /// A Tenant seen for the first time: no Secret, nothing in Redis.
        fn new() -> Self {
            let spec = serde_json::json!({"services": ["gte"]});
            let mut tenant = Tenant::new("acme", serde_json::from_value(spec).unwrap());
            tenant.metadata.namespace = Some("team".into());
            tenant.metadata.uid = Some("uid-acme".into());
            tenant.metadata.generation = Some(1);
            Self {
                tenant,
                secret: None,
                stored: Stored::default(),
                usage: vec![DayUsage::default()],
                usage_stale: true,
                ring: KeyRing::generate(),
                now: T0,
                max_ttl: nlu_crds::tenant::MAX_TOKEN_TTL,
            }
        }

        /// After a first reconcile at [`T0`] whose plan was carried out.
        fn settled() -> Self {
            let mut world = Self::new();
            world.settle();
            world
        }

        fn facts<'a>(&'a self, tenant: &'a Tenant) -> Facts<'a> {
            Facts {
                tenant,
                secret: self.secret.as_ref(),
                stored: &self.stored,
                usage: &self.usage,
                usage_retention_days: 35,
                usage_stale: self.usage_stale,
                ring: &self.ring,
                urls: BTreeMap::new(),
                now: Timestamp::from_second(self.now).unwrap(),
                issuer: "nlu-operator",
                max_ttl: self.max_ttl,
                jti: "jti-1".into(),
                identity: status::IdentityProvider::None,
            }
        }

        /// What the controller does: counts a pending revocation, then plans. Returns the
        /// Tenant planned for, every Event (the revocation's first) and the plan.
        fn reconcile(&self) -> (Tenant, Vec<Event>, Plan) {
            let (tenant, mut events) = match revocation(&self.tenant) {
                Some((counted, revoked)) => (counted, vec![revoked]),
                None => (self.tenant.clone(), Vec::new()),
            };
            let mut plan = plan(&self.facts(&tenant)).unwrap();
            events.append(&mut plan.events);
            (tenant, events, plan)
        }

        /// Carries out a reconcile's plan: the writes land.
        fn settle(&mut self) {
            let (tenant, _, plan) = self.reconcile();
            self.tenant = tenant;
            if let Some(status) = plan.status {
                self.tenant.status = Some(status);
            }
            if plan.secret.is_some() {
                self.secret = plan.secret;
            }
            self.stored = Stored {
                uid: Some(plan.record.uid),
                gen: Some(plan.record.gen.to_string()),
            };
        }

        fn secret_mut(&mut self) -> &mut Secret {
            self.secret
                .as_mut()
                .expect("a settled world has its Secret")
        }
    }

    /// One row's result: the token decision, the record's `gen`, the Events, Ready of the status
    /// to write (`None`: no write), whether the Secret is written, whether new usage is shown,
    /// and the requeue in seconds.
    #[derive(Debug, PartialEq)]
    struct Outcome {
        token: TokenAction,
        gen: u64,
        events: Vec<String>,
        ready: Option<(bool, String)>,
        secret: bool,
        new_usage: bool,
        requeue: u64,
    }

    fn outcome(
        token: TokenAction,
        gen: u64,
        events: &[&str],
        ready: Option<(bool, &str)>,
        secret: bool,
        new_usage: bool,
        requeue: u64,
    ) -> Outcome {
        Outcome {
            token,
            gen,
            events: events.iter().map(|e| e.to_string()).collect(),
            ready: ready.map(|(ok, reason)| (ok, reason.to_owned())),
            secret,
            new_usage,
            requeue,
        }
    }

    fn observe(world: &World) -> Outcome {
        let (_, events, plan) = world.reconcile();
        let ready = plan.status.as_ref().map(|s| {
            let c = s.conditions.iter().find(|c| c.type_ == READY).unwrap();
            (c.status == "True", c.reason.clone())
        });
        Outcome {
            token: plan.token,
            gen: plan.record.gen,
            events: events.into_iter().map(|e| e.reason).collect(),
            ready,
            secret: plan.secret.is_some(),
            new_usage: plan.shows_new_usage,
            requeue: plan.requeue.as_secs(),
        }
    }

    #[test]
    fn token_record_status_and_events_for_every_situation() {
        use IssueReason::*;
        use TokenAction::*;
        let ready = Some((true, "TokenIssued"));
        let taken = Some((false, SECRET_NAME_TAKEN));
        #[rustfmt::skip]
        let rows: &[(&str, fn(&mut World), Outcome)] = &[
            ("first reconcile: no Secret, nothing in Redis",
             |w| *w = World::new(),
             outcome(Issue(Missing), 1, &["TokenIssued"], ready, true, true, 60)),
            ("nothing changed",
             |w| w.now += 10,
             outcome(Keep, 1, &[], None, false, false, 60)),
            ("the Secret's token annotations are unreadable",
             |w| w.secret_mut().metadata.annotations = None,
             outcome(Issue(Missing), 1, &["TokenIssued"], None, true, false, 60)),
            ("renewal comes in 30 s (days later: a new day's usage)",
             |w| w.now = RENEWAL - 30,
             outcome(Keep, 1, &[], ready, false, true, 30)),
            ("80 % of the lifetime passed",
             |w| w.now = RENEWAL,
             outcome(Issue(Renewal), 1, &["TokenRenewed"], ready, true, true, 60)),
            ("the key was rotated: the old one is still published",
             |w| {
                 let ring = std::mem::replace(&mut w.ring, KeyRing::generate());
                 w.ring = ring.rotate(chrono::Utc.timestamp_opt(T0 + TTL, 0).unwrap());
             },
             outcome(Keep, 1, &[], None, false, false, 60)),
            ("the key that signed it is no longer published (--revoke-old)",
             |w| w.ring = KeyRing::generate(),
             outcome(Issue(KeyRetired), 1, &["TokenReissuedKeyRetired"], None, true, false, 60)),
            ("another service granted",
             |w| w.tenant.spec.services.push("uninlu".into()),
             outcome(Issue(GrantChanged), 1, &["TokenReissued"], None, true, false, 60)),
            ("spec.token.generation raised",
             |w| w.tenant.spec.token = Some(serde_json::from_value(serde_json::json!({"generation": 2})).unwrap()),
             outcome(Issue(GrantChanged), 2, &["TokenReissued"], None, true, false, 60)),
            ("a new nlu.dev/revoke value",
             |w| { w.tenant.annotations_mut().insert(revocation::REVOKE_ANNOTATION.into(), "now".into()); },
             outcome(Issue(GrantChanged), 2, &["Revoked", "TokenReissued"], None, true, false, 60)),
            ("a revoke value already counted",
             |w| { w.tenant.annotations_mut().insert(revocation::REVOKE_ANNOTATION.into(), "now".into()); w.settle() },
             outcome(Keep, 2, &[], None, false, false, 60)),
            ("Redis holds a higher gen of this Tenant (the Tenant was edited down)",
             |w| w.stored.gen = Some("5".into()),
             outcome(Issue(GrantChanged), 5, &["TokenReissued"], None, true, false, 60)),
            ("Redis holds a higher gen of an earlier Tenant of the name",
             |w| w.stored = Stored { uid: Some("uid-earlier".into()), gen: Some("9".into()) },
             outcome(Keep, 1, &[], None, false, false, 60)),
            ("suspended",
             |w| w.tenant.spec.suspended = true,
             outcome(Keep, 1, &["Suspended"], ready, false, false, 60)),
            ("resumed",
             |w| { w.tenant.spec.suspended = true; w.settle(); w.tenant.spec.suspended = false },
             outcome(Keep, 1, &["Resumed"], ready, false, false, 60)),
            ("--max-token-ttl below the Tenant's TTL",
             |w| w.max_ttl = Duration::from_secs(50),
             outcome(Issue(GrantChanged), 1, &["TokenReissued"], ready, true, false, 40)),
            ("usage counted, shown less than a minute ago",
             |w| { w.usage[0].requests = 3; w.usage_stale = false },
             outcome(Keep, 1, &[], None, false, false, 60)),
            ("usage counted, shown a minute ago",
             |w| w.usage[0].requests = 3,
             outcome(Keep, 1, &[], ready, false, true, 60)),
            ("a Secret of the name that someone else made",
             |w| w.secret = Some(Secret { metadata: kube::api::ObjectMeta { name: Some("acme-token".into()), ..Default::default() }, ..Default::default() }),
             outcome(NameTaken, 1, &["SecretNameTaken"], taken, false, false, 60)),
            ("the Secret of an earlier Tenant of the name",
             |w| w.secret_mut().metadata.owner_references.as_mut().unwrap()[0].uid = "uid-earlier".into(),
             outcome(NameTaken, 1, &["SecretNameTaken"], taken, false, false, 60)),
            ("a Secret someone else made, already reported",
             |w| { w.secret_mut().metadata.owner_references = None; w.settle() },
             outcome(NameTaken, 1, &[], None, false, false, 60)),
        ];
        for (what, change, expected) in rows {
            let mut world = World::settled();
            change(&mut world);
            assert_eq!(&observe(&world), expected, "{what}");
        }
    }

    #[test]
    fn an_issued_token_is_signed_by_the_active_key_for_the_whole_grant() {
        let mut world = World::new();
        world.stored = Stored {
            uid: Some("uid-acme".into()),
            gen: Some("3".into()),
        };
        let (_, _, plan) = world.reconcile();
        let secret = plan.secret.unwrap();
        let issued = IssuedToken::from_secret(&secret).unwrap();
        assert_eq!(issued.kid, world.ring.signing.kid());
        assert_eq!((issued.issued_at, issued.expires_at), (T0, T0 + TTL));
        let record = plan.record;
        assert_eq!((record.gen, record.uid.as_str()), (3, "uid-acme"));
        let status = plan.status.unwrap();
        assert_eq!(status.token_secret_name.as_deref(), Some("acme-token"));
        assert_eq!(
            status.token_expires_at,
            Timestamp::from_second(T0 + TTL).ok().map(Time)
        );
    }

    #[test]
    fn a_tenant_without_uid_gets_no_token() {
        let mut world = World::new();
        world.tenant.metadata.uid = None;
        let result = plan(&world.facts(&world.tenant));
        assert!(matches!(result, Err(Error::Invalid(_))));
    }
}
