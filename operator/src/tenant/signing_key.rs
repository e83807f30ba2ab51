//! The operator's token signing keys, kept in one Secret in its own namespace.
//!
//! The Secret holds the active Ed25519 key (`signing-key.pem`, PKCS#8) and the public halves of
//! retired keys with the time after which no token they signed can still be valid
//! (`retired-keys.json`). Rotation is asked for by setting the annotation `nlu.dev/rotate` to a
//! new value (`nlu-operator rotate-key` does that); the operator answers by generating a new key,
//! retiring the old one and recording the handled value in `nlu.dev/rotated`. One writer (the
//! operator) makes every change, so replicas and the CLI never race over key material.
//!
//! A leaked key is dropped at once by a request whose `nlu.dev/rotate-revoke-old` annotation
//! holds the same value as `nlu.dev/rotate` (`nlu-operator rotate-key --revoke-old`): the new
//! key is then the only one published, every earlier token fails, and the Tenant controller
//! re-issues every token. A key Secret deleted while the operator runs is written again from its
//! memory; one missing at start-up while tokens are still valid is an error (never a silent new
//! key, which would break every token): restore it, or ask for `--revoke-old`, whose request
//! Secret carries no key.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use jsonwebtoken::jwk::{Jwk, JwkSet};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::ByteString;
use kube::api::{ObjectMeta, PostParams};
use kube::runtime::events::{Event, EventType};
use kube::{Api, Resource, ResourceExt};
use nlu_crds::access::SigningKey;
use nlu_crds::Tenant;
use serde::{Deserialize, Serialize};

/// Name of the key Secret in the operator namespace.
pub const SIGNING_KEY_SECRET: &str = "nlu-operator-signing-key";
/// Secret key of the active private key (PKCS#8 PEM).
pub const KEY_FIELD: &str = "signing-key.pem";
/// Secret key of the retired public keys (JSON list of [`RetiredKey`]).
pub const RETIRED_FIELD: &str = "retired-keys.json";
/// Set to a new value (any text, e.g. a timestamp) to ask for a rotation.
pub const ROTATE_ANNOTATION: &str = "nlu.dev/rotate";
/// The last `nlu.dev/rotate` value the operator acted on.
pub const ROTATED_ANNOTATION: &str = "nlu.dev/rotated";
/// Holds the `nlu.dev/rotate` value of a request that also drops every earlier key at once.
pub const REVOKE_OLD_ANNOTATION: &str = "nlu.dev/rotate-revoke-old";
/// Kept on top of the longest token lifetime before a retired key leaves the JWK Set: the
/// servers' clock-skew leeway plus time for clocks and caches to agree.
pub const RETIRE_MARGIN: Duration = Duration::from_secs(5 * 60);

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("signing key Secret {0}: {1}")]
    Invalid(String, String),
    #[error("signing key Secret {SIGNING_KEY_SECRET} is missing while {0} Tenant(s) hold tokens it signed; restore it from a backup, or run `nlu-operator rotate-key --revoke-old` to make a new key and re-issue every token")]
    Missing(usize),
    #[error(transparent)]
    Kube(#[from] kube::Error),
}

/// A public key no longer used for signing, published until `retire_after`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RetiredKey {
    pub jwk: Jwk,
    pub retire_after: DateTime<Utc>,
}

/// The active signing key and the retired keys still published.
pub struct KeyRing {
    pub signing: SigningKey,
    pub retired: Vec<RetiredKey>,
}

impl KeyRing {
    pub fn generate() -> Self {
        Self {
            signing: SigningKey::generate(),
            retired: Vec::new(),
        }
    }

    /// Reads the Secret's data; a missing or broken active key is an error (never replaced
    /// silently: that would invalidate every token at once).
    pub fn from_secret(secret: &Secret) -> Result<Self, KeyError> {
        let bad = |why: String| KeyError::Invalid(secret.name_any(), why);
        let data = secret.data.clone().unwrap_or_default();
        let pem = data
            .get(KEY_FIELD)
            .ok_or_else(|| bad(format!("no {KEY_FIELD}")))?;
        let pem =
            std::str::from_utf8(&pem.0).map_err(|_| bad(format!("{KEY_FIELD} is not text")))?;
        let signing = SigningKey::from_pkcs8_pem(pem).map_err(|e| bad(e.to_string()))?;
        let retired = match data.get(RETIRED_FIELD) {
            Some(json) => {
                serde_json::from_slice(&json.0).map_err(|e| bad(format!("{RETIRED_FIELD}: {e}")))?
            }
            None => Vec::new(),
        };
        Ok(Self { signing, retired })
    }

    pub fn to_secret_data(&self) -> BTreeMap<String, ByteString> {
        let retired = serde_json::to_vec(&self.retired).expect("retired keys serialize");
        BTreeMap::from([
            (
                KEY_FIELD.to_owned(),
                ByteString(self.signing.to_pkcs8_pem().into_bytes()),
            ),
            (RETIRED_FIELD.to_owned(), ByteString(retired)),
        ])
    }

    /// A fresh key signs from now on; the old one stays published until `retire_after`.
    pub fn rotate(self, retire_after: DateTime<Utc>) -> Self {
        let mut retired = self.retired;
        retired.push(RetiredKey {
            jwk: self.signing.public_jwk(),
            retire_after,
        });
        Self {
            signing: SigningKey::generate(),
            retired,
        }
    }

    /// Drops retired keys whose tokens have all expired; whether any was dropped.
    pub fn prune(&mut self, now: DateTime<Utc>) -> bool {
        let before = self.retired.len();
        self.retired.retain(|k| k.retire_after > now);
        self.retired.len() != before
    }

    /// When the next retired key can be dropped.
    pub fn next_retirement(&self) -> Option<DateTime<Utc>> {
        self.retired.iter().map(|k| k.retire_after).min()
    }

    /// What servers verify with: the active key first, then the retired ones.
    pub fn jwk_set(&self) -> JwkSet {
        let mut keys = vec![self.signing.public_jwk()];
        keys.extend(self.retired.iter().map(|k| k.jwk.clone()));
        JwkSet { keys }
    }

    /// The JWK Set as published (`jwks.json`).
    pub fn jwks_json(&self) -> String {
        serde_json::to_string(&self.jwk_set()).expect("a JWK Set serializes")
    }

    /// The key ids of every published key.
    pub fn kids(&self) -> Vec<String> {
        let retired = self
            .retired
            .iter()
            .filter_map(|k| k.jwk.common.key_id.clone());
        std::iter::once(self.signing.kid().to_owned())
            .chain(retired)
            .collect()
    }

    /// Whether tokens with this `kid` still verify.
    pub fn publishes(&self, kid: &str) -> bool {
        self.signing.kid() == kid
            || self
                .retired
                .iter()
                .any(|k| k.jwk.common.key_id.as_deref() == Some(kid))
    }
}

/// When a key retired at `now` may leave the JWK Set: after every token it may have signed has
/// expired. That is the later of the longest current TTL and the latest expiry in any status
/// (a TTL may have been shortened after a longer-lived token was issued), plus a margin.
pub fn retire_after(now: DateTime<Utc>, tenants: &[Arc<Tenant>]) -> DateTime<Utc> {
    let by_ttl = tenants
        .iter()
        .filter_map(|t| t.spec.token_ttl().ok())
        .filter_map(|ttl| chrono::Duration::from_std(ttl).ok())
        .map(|ttl| now + ttl);
    let latest = by_ttl
        .chain(token_expiries(tenants))
        .max()
        .unwrap_or(now)
        .max(now);
    latest + chrono::Duration::from_std(RETIRE_MARGIN).expect("margin fits")
}

/// A rotation asked for and not handled yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotation {
    /// The `nlu.dev/rotate` value, recorded in `nlu.dev/rotated` once handled.
    pub request: String,
    /// Drop every earlier key at once instead of keeping them until their tokens expire.
    pub revoke_old: bool,
}

/// The pending rotation request, if the `nlu.dev/rotate` value was not handled yet.
pub fn rotation_request(secret: &Secret) -> Option<Rotation> {
    let annotations = secret.annotations();
    let asked = annotations.get(ROTATE_ANNOTATION)?;
    (annotations.get(ROTATED_ANNOTATION) != Some(asked)).then(|| Rotation {
        request: asked.clone(),
        revoke_old: annotations.get(REVOKE_OLD_ANNOTATION) == Some(asked),
    })
}

/// How many Tenants hold a token that is still valid at `now` (by their status).
pub fn tokens_at_stake(tenants: &[Arc<Tenant>], now: DateTime<Utc>) -> usize {
    token_expiries(tenants)
        .filter(|expires| *expires > now)
        .count()
}

/// When the Tenants' current tokens expire, as their status records it.
fn token_expiries(tenants: &[Arc<Tenant>]) -> impl Iterator<Item = DateTime<Utc>> + '_ {
    tenants
        .iter()
        .filter_map(|t| t.status.as_ref()?.token_expires_at.as_ref())
        .filter_map(|t| DateTime::from_timestamp(t.0.as_second(), 0))
}

/// What [`sync`] did, for events and logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyChange {
    Unchanged,
    Created,
    Rotated {
        old_kid: String,
        new_kid: String,
    },
    /// Every earlier key was dropped at once (`--revoke-old`).
    Revoked {
        old_kids: Vec<String>,
        new_kid: String,
    },
    /// The deleted Secret was written again from the operator's memory.
    Restored,
    Pruned,
}

/// Brings the key Secret up to date: creates it when absent (and no valid token depends on a
/// lost key), performs a requested rotation and drops retired keys past their time. `tenants`
/// is `None` while their token lifetimes are not known yet: a rotation that keeps the old key
/// then waits, since that key's retirement time depends on them. `current`: the ring the
/// operator holds, written back when the Secret was deleted. A conflict (someone wrote in
/// between) is returned as an error; the caller retries from a fresh read.
pub async fn sync(
    api: &Api<Secret>,
    now: DateTime<Utc>,
    tenants: Option<&[Arc<Tenant>]>,
    current: Option<&Arc<KeyRing>>,
) -> Result<(Arc<KeyRing>, KeyChange), KeyError> {
    let Some(mut secret) = api.get_opt(SIGNING_KEY_SECRET).await? else {
        if let Some(ring) = current {
            api.create(&PostParams::default(), &key_secret(ring))
                .await?;
            return Ok((ring.clone(), KeyChange::Restored));
        }
        let at_stake = tenants.map_or(0, |t| tokens_at_stake(t, now));
        if at_stake > 0 {
            return Err(KeyError::Missing(at_stake));
        }
        let ring = KeyRing::generate();
        api.create(&PostParams::default(), &key_secret(&ring))
            .await?;
        return Ok((Arc::new(ring), KeyChange::Created));
    };
    let rotation = rotation_request(&secret);
    let (mut ring, mut change) = match (&rotation, tenants) {
        // A key that leaked, or one lost with its Secret: nothing earlier is kept.
        (
            Some(Rotation {
                revoke_old: true, ..
            }),
            _,
        ) => {
            let old_kids = KeyRing::from_secret(&secret)
                .map(|old| old.kids())
                .unwrap_or_default();
            let ring = KeyRing::generate();
            let new_kid = ring.signing.kid().to_owned();
            (ring, KeyChange::Revoked { old_kids, new_kid })
        }
        (Some(_), Some(tenants)) => {
            let ring = KeyRing::from_secret(&secret)?;
            let old_kid = ring.signing.kid().to_owned();
            let ring = ring.rotate(retire_after(now, tenants));
            let new_kid = ring.signing.kid().to_owned();
            (ring, KeyChange::Rotated { old_kid, new_kid })
        }
        _ => (KeyRing::from_secret(&secret)?, KeyChange::Unchanged),
    };
    if change != KeyChange::Unchanged {
        let request = rotation.map(|r| r.request).unwrap_or_default();
        secret
            .annotations_mut()
            .insert(ROTATED_ANNOTATION.to_owned(), request);
    }
    if ring.prune(now) && change == KeyChange::Unchanged {
        change = KeyChange::Pruned;
    }
    if change != KeyChange::Unchanged {
        secret.data = Some(ring.to_secret_data());
        // Replace carries the resourceVersion read above: a concurrent write fails with 409.
        api.replace(SIGNING_KEY_SECRET, &PostParams::default(), &secret)
            .await?;
    }
    Ok((Arc::new(ring), change))
}

/// A new key Secret holding `ring`.
fn key_secret(ring: &KeyRing) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(SIGNING_KEY_SECRET.into()),
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/managed-by".to_owned(),
                crate::context::OPERATOR_NAME.to_owned(),
            )])),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".into()),
        data: Some(ring.to_secret_data()),
        ..Secret::default()
    }
}

/// The event for a change of the key Secret, if it deserves one.
pub fn key_event(change: &KeyChange) -> Option<Event> {
    let (reason, note) = match change {
        KeyChange::Unchanged => return None,
        KeyChange::Created => ("KeyCreated", "generated the token signing key".to_owned()),
        KeyChange::Rotated { old_kid, new_kid } => (
            "KeyRotated",
            format!("tokens are now signed with key {new_kid}; key {old_kid} stays published until its tokens expire"),
        ),
        KeyChange::Revoked { old_kids, new_kid } => (
            "KeysRevoked",
            format!("tokens are now signed with key {new_kid}; earlier keys ({}) are dropped at once and every token is re-issued", old_kids.join(", ")),
        ),
        KeyChange::Restored => ("KeyRestored", format!("the key Secret {SIGNING_KEY_SECRET} was deleted; it is written again from the operator's memory")),
        KeyChange::Pruned => ("KeyRetired", "dropped retired keys whose tokens have all expired".to_owned()),
    };
    let type_ = match change {
        KeyChange::Restored => EventType::Warning,
        _ => EventType::Normal,
    };
    Some(event(type_, reason, note))
}

/// The Warning Event of a key Secret missing while tokens it signed are valid.
pub fn missing_event(error: &KeyError) -> Event {
    event(EventType::Warning, "SigningKeyMissing", error.to_string())
}

/// An Event about the key Secret.
fn event(type_: EventType, reason: &str, note: String) -> Event {
    Event {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: "Sign".into(),
        secondary: None,
    }
}

/// Reference for events about the key Secret.
pub fn secret_ref(namespace: &str) -> k8s_openapi::api::core::v1::ObjectReference {
    let mut secret = Secret::default();
    secret.metadata.name = Some(SIGNING_KEY_SECRET.into());
    secret.metadata.namespace = Some(namespace.into());
    secret.object_ref(&())
}

#[cfg(test)]
mod tests {
    use super::*;
    use nlu_crds::access::jwks::ed25519_keys;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(secs, 0).unwrap()
    }

    /// A Tenant with token TTL `ttl` whose status says its token expires at `expires`.
    fn tenant(ttl: &str, expires: Option<i64>) -> Arc<Tenant> {
        let spec: nlu_crds::TenantSpec =
            serde_json::from_value(serde_json::json!({"services": ["s"], "token": {"ttl": ttl}}))
                .unwrap();
        let mut t = Tenant::new("t", spec);
        t.status = expires.map(|e| nlu_crds::TenantStatus {
            token_expires_at: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::from_second(e).unwrap(),
            )),
            ..Default::default()
        });
        Arc::new(t)
    }

    fn secret_of(ring: &KeyRing, annotations: &[(&str, &str)]) -> Secret {
        let mut s = Secret {
            data: Some(ring.to_secret_data()),
            ..Secret::default()
        };
        s.metadata.name = Some(SIGNING_KEY_SECRET.into());
        s.metadata.annotations = Some(
            annotations
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        s
    }

    #[test]
    fn round_trips_through_the_secret_and_never_publishes_private_parts() {
        let ring = KeyRing::generate().rotate(at(1_000));
        let again = KeyRing::from_secret(&secret_of(&ring, &[])).unwrap();
        assert_eq!(again.signing.kid(), ring.signing.kid());
        assert_eq!(again.retired, ring.retired);
        let jwks = ring.jwks_json();
        assert!(!jwks.contains("\"d\""), "no private component in {jwks}");
        assert_eq!(ed25519_keys(jwks.as_bytes()).unwrap().len(), 2);
    }

    #[test]
    fn broken_or_missing_key_is_an_error_not_a_new_key() {
        let mut s = secret_of(&KeyRing::generate(), &[]);
        s.data
            .as_mut()
            .unwrap()
            .insert(KEY_FIELD.into(), ByteString(b"garbage".to_vec()));
        assert!(KeyRing::from_secret(&s).is_err());
        s.data.as_mut().unwrap().remove(KEY_FIELD);
        assert!(KeyRing::from_secret(&s).is_err());
    }

    #[test]
    fn rotation_keeps_the_old_key_published_until_retire_after() {
        let ring = KeyRing::generate();
        let old = ring.signing.kid().to_owned();
        let mut ring = ring.rotate(at(500));
        assert_ne!(ring.signing.kid(), old);
        assert!(ring.publishes(&old));
        assert!(!ring.prune(at(499)));
        assert_eq!(ring.next_retirement(), Some(at(500)));
        assert!(ring.prune(at(500)));
        assert!(!ring.publishes(&old));
        assert_eq!(ring.jwk_set().keys.len(), 1);
    }

    #[test]
    fn rotation_requests_are_handled_once() {
        let ring = KeyRing::generate();
        let asked = |request: &str, revoke_old| {
            Some(Rotation {
                request: request.into(),
                revoke_old,
            })
        };
        assert_eq!(rotation_request(&secret_of(&ring, &[])), None);
        assert_eq!(
            rotation_request(&secret_of(&ring, &[(ROTATE_ANNOTATION, "t1")])),
            asked("t1", false)
        );
        let handled = [(ROTATE_ANNOTATION, "t1"), (ROTATED_ANNOTATION, "t1")];
        assert_eq!(rotation_request(&secret_of(&ring, &handled)), None);
        let again = [(ROTATE_ANNOTATION, "t2"), (ROTATED_ANNOTATION, "t1")];
        assert_eq!(
            rotation_request(&secret_of(&ring, &again)),
            asked("t2", false)
        );
        // Revoking applies to the request it names only, not to a later plain one.
        let revoke = [(ROTATE_ANNOTATION, "t3"), (REVOKE_OLD_ANNOTATION, "t3")];
        assert_eq!(
            rotation_request(&secret_of(&ring, &revoke)),
            asked("t3", true)
        );
        let later = [(ROTATE_ANNOTATION, "t4"), (REVOKE_OLD_ANNOTATION, "t3")];
        assert_eq!(
            rotation_request(&secret_of(&ring, &later)),
            asked("t4", false)
        );
    }

    #[test]
    fn only_unexpired_tokens_are_at_stake() {
        let tenants = [
            tenant("1h", None),
            tenant("1h", Some(999)),
            tenant("1h", Some(1_001)),
            tenant("1h", Some(5_000)),
        ];
        assert_eq!(tokens_at_stake(&tenants, at(1_000)), 2);
        assert_eq!(tokens_at_stake(&tenants, at(5_000)), 0);
    }

    #[test]
    fn retirement_waits_for_the_longest_ttl_or_latest_issued_expiry() {
        let now = at(1_000_000);
        let margin = RETIRE_MARGIN.as_secs() as i64;
        assert_eq!(retire_after(now, &[]), at(1_000_000 + margin));
        let ttl_wins = [tenant("1h", None), tenant("2h", Some(1_000_100))];
        assert_eq!(retire_after(now, &ttl_wins), at(1_000_000 + 7200 + margin));
        // A token issued under a longer TTL that was since shortened.
        let status_wins = [tenant("1h", Some(1_000_000 + 86_400))];
        assert_eq!(
            retire_after(now, &status_wins),
            at(1_000_000 + 86_400 + margin)
        );
    }
}
