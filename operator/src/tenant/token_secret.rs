//! The tenant's Secret `<tenant>-token`: its JWT (`token`) and, for convenience, the URL of each
//! of its services (`url.<service>`). Nothing else: the private key never leaves the operator's
//! own Secret. Pure functions: what to grant, when to issue a new token, the Secret to apply.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::ByteString;
use kube::api::ObjectMeta;
use kube::{Resource, ResourceExt};
use nlu_crds::access::{Credential, QualifiedName, Scope, TokenRequest, UninluTask};
use nlu_crds::tenant::Scope as SpecScope;
use nlu_crds::Tenant;
use sha2::{Digest, Sha256};

/// Secret key of the JWT.
pub const TOKEN_FIELD: &str = "token";
/// Prefix of the Secret keys holding service URLs (`url.<service>`).
pub const URL_FIELD_PREFIX: &str = "url.";
/// Hash of what the token grants; a different hash means a new token.
pub const GRANT_HASH_ANNOTATION: &str = "nlu.dev/grant-hash";
/// `kid` of the key that signed the token.
pub const KID_ANNOTATION: &str = "nlu.dev/kid";
/// `iat` and `exp` of the token (Unix seconds), so renewal needs no token parsing.
pub const ISSUED_AT_ANNOTATION: &str = "nlu.dev/issued-at";
pub const EXPIRES_AT_ANNOTATION: &str = "nlu.dev/expires-at";

/// A new token is issued once this share of its lifetime has passed.
pub const RENEW_AT_FRACTION: f64 = 0.8;

/// Name of a tenant's token Secret.
pub fn secret_name(tenant: &str) -> String {
    format!("{tenant}-token")
}

/// What the tenant's token grants: its services as audiences, its scopes, lifetime, and the
/// credential (Tenant uid and `gen`) it is valid for.
pub fn token_request(
    tenant: &Tenant,
    issuer: &str,
    ttl: Duration,
    credential: &Credential,
) -> Result<TokenRequest, nlu_crds::access::AccessError> {
    let ns = tenant.namespace().unwrap_or_default();
    let mut audience = tenant
        .spec
        .services
        .iter()
        .map(|svc| QualifiedName::new(ns.clone(), svc.clone()))
        .collect::<Result<Vec<_>, _>>()?;
    audience.sort();
    audience.dedup();
    let mut scopes: Vec<Scope> = tenant.spec.scopes.iter().map(|s| scope(*s)).collect();
    scopes.sort();
    scopes.dedup();
    Ok(TokenRequest {
        issuer: issuer.to_owned(),
        tenant: QualifiedName::new(ns, tenant.name_any())?,
        audience,
        scopes,
        ttl,
        gen: credential.gen,
        tenant_uid: credential.tid.clone(),
    })
}

/// The API type's scope as the access contract's.
pub fn scope(s: SpecScope) -> Scope {
    match s {
        SpecScope::Predict => Scope::Predict,
        SpecScope::PredictNer => Scope::PredictTask(UninluTask::Ner),
        SpecScope::PredictRelation => Scope::PredictTask(UninluTask::Relation),
        SpecScope::PredictEvent => Scope::PredictTask(UninluTask::Event),
        SpecScope::PredictSentiment => Scope::PredictTask(UninluTask::Sentiment),
        SpecScope::PredictClassification => Scope::PredictTask(UninluTask::Classification),
        SpecScope::PredictMatch => Scope::PredictTask(UninluTask::Match),
        SpecScope::PredictNli => Scope::PredictTask(UninluTask::Nli),
        SpecScope::PredictMrc => Scope::PredictTask(UninluTask::Mrc),
        SpecScope::Embed => Scope::Embed,
        SpecScope::Rerank => Scope::Rerank,
    }
}

/// Hash of everything a token carries except its times and id.
pub fn grant_hash(req: &TokenRequest) -> String {
    let audience: Vec<String> = req.audience.iter().map(ToString::to_string).collect();
    let text = format!(
        "iss={}\nsub={}\naud={}\nscope={}\nttl={}\ngen={}\ntid={}",
        req.issuer,
        req.tenant,
        audience.join(","),
        Scope::join(&req.scopes),
        req.ttl.as_secs(),
        req.gen,
        req.tenant_uid
    );
    format!("{:x}", Sha256::digest(text.as_bytes()))
}

/// The token currently in the Secret, as its annotations describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedToken {
    pub token: String,
    pub kid: String,
    pub grant_hash: String,
    pub issued_at: i64,
    pub expires_at: i64,
}

impl IssuedToken {
    /// Reads the token of an existing Secret; `None` when anything is missing or unreadable
    /// (then a new token is issued).
    pub fn from_secret(secret: &Secret) -> Option<Self> {
        let a = secret.annotations();
        let token = secret.data.as_ref()?.get(TOKEN_FIELD)?;
        Some(Self {
            token: String::from_utf8(token.0.clone()).ok()?,
            kid: a.get(KID_ANNOTATION)?.clone(),
            grant_hash: a.get(GRANT_HASH_ANNOTATION)?.clone(),
            issued_at: a.get(ISSUED_AT_ANNOTATION)?.parse().ok()?,
            expires_at: a.get(EXPIRES_AT_ANNOTATION)?.parse().ok()?,
        })
    }

    /// When a new token should replace this one (80 % of its lifetime).
    pub fn renew_at(&self) -> i64 {
        let life = (self.expires_at - self.issued_at).max(0) as f64;
        self.issued_at + (life * RENEW_AT_FRACTION) as i64
    }
}

/// Why a new token is issued (the event reason).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IssueReason {
    /// No usable token yet.
    Missing,
    /// Services, scopes, TTL or generation changed.
    GrantChanged,
    /// Its key is no longer published.
    KeyRetired,
    /// 80 % of its lifetime has passed.
    Renewal,
}

impl IssueReason {
    pub fn as_str(self) -> &'static str {
        match self {
            IssueReason::Missing => "TokenIssued",
            IssueReason::GrantChanged => "TokenReissued",
            IssueReason::KeyRetired => "TokenReissuedKeyRetired",
            IssueReason::Renewal => "TokenRenewed",
        }
    }
}

/// Whether the current token must be replaced, and why.
pub fn reissue_reason(
    current: Option<&IssuedToken>,
    grant_hash: &str,
    key_published: impl Fn(&str) -> bool,
    now: i64,
) -> Option<IssueReason> {
    let Some(current) = current else {
        return Some(IssueReason::Missing);
    };
    if current.grant_hash != grant_hash {
        Some(IssueReason::GrantChanged)
    } else if !key_published(&current.kid) {
        Some(IssueReason::KeyRetired)
    } else if now >= current.renew_at() {
        Some(IssueReason::Renewal)
    } else {
        None
    }
}

/// The Secret to apply: owned by the Tenant (deleted with it), holding only the token and the
/// service URLs.
pub fn secret(tenant: &Tenant, token: &IssuedToken, urls: &BTreeMap<String, String>) -> Secret {
    let mut data = BTreeMap::from([(
        TOKEN_FIELD.to_owned(),
        ByteString(token.token.clone().into_bytes()),
    )]);
    for (service, url) in urls {
        data.insert(
            format!("{URL_FIELD_PREFIX}{service}"),
            ByteString(url.clone().into_bytes()),
        );
    }
    Secret {
        metadata: ObjectMeta {
            name: Some(secret_name(&tenant.name_any())),
            namespace: tenant.namespace(),
            owner_references: tenant.controller_owner_ref(&()).map(|r| vec![r]),
            labels: Some(BTreeMap::from([
                (
                    "app.kubernetes.io/managed-by".to_owned(),
                    crate::context::OPERATOR_NAME.to_owned(),
                ),
                ("nlu.dev/tenant".to_owned(), tenant.name_any()),
            ])),
            annotations: Some(BTreeMap::from([
                (GRANT_HASH_ANNOTATION.to_owned(), token.grant_hash.clone()),
                (KID_ANNOTATION.to_owned(), token.kid.clone()),
                (ISSUED_AT_ANNOTATION.to_owned(), token.issued_at.to_string()),
                (
                    EXPIRES_AT_ANNOTATION.to_owned(),
                    token.expires_at.to_string(),
                ),
            ])),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".into()),
        data: Some(data),
        ..Secret::default()
    }
}

/// Whether `observed` already holds what `desired` would write (then no API write is needed).
pub fn up_to_date(observed: &Secret, desired: &Secret) -> bool {
    let has_all = |want: &Option<BTreeMap<String, String>>, have: &BTreeMap<String, String>| {
        want.iter().flatten().all(|(k, v)| have.get(k) == Some(v))
    };
    observed.data == desired.data
        && has_all(&desired.metadata.annotations, observed.annotations())
        && has_all(&desired.metadata.labels, observed.labels())
        && observed.owner_references() == desired.owner_references()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(spec: serde_json::Value) -> Tenant {
        let mut t = Tenant::new("acme", serde_json::from_value(spec).unwrap());
        t.metadata.namespace = Some("team".into());
        t.metadata.uid = Some("uid-1".into());
        t
    }

    fn issued(hash: &str, iat: i64, exp: i64) -> IssuedToken {
        IssuedToken {
            token: "t".into(),
            kid: "k".into(),
            grant_hash: hash.into(),
            issued_at: iat,
            expires_at: exp,
        }
    }

    fn credential(gen: u64) -> Credential {
        Credential {
            tid: "uid-acme".into(),
            gen,
            identity: None,
        }
    }

    #[test]
    fn request_names_services_as_audiences_in_the_tenant_namespace() {
        let t = tenant(
            serde_json::json!({"services": ["uninlu", "gte", "gte"], "scopes": ["embed", "predict:ner"]}),
        );
        let req = token_request(&t, "iss", Duration::from_secs(60), &credential(3)).unwrap();
        let aud: Vec<String> = req.audience.iter().map(ToString::to_string).collect();
        assert_eq!(aud, ["team/gte", "team/uninlu"]);
        assert_eq!(req.tenant.to_string(), "team/acme");
        assert_eq!(
            req.scopes,
            [Scope::PredictTask(UninluTask::Ner), Scope::Embed]
        );
        assert_eq!((req.gen, req.tenant_uid.as_str()), (3, "uid-acme"));
    }

    #[test]
    fn every_contract_scope_is_a_spec_scope_of_the_same_name() {
        let tasks = UninluTask::ALL.map(Scope::PredictTask);
        for contract in Scope::OPERATIONS.into_iter().chain(tasks) {
            let spec: SpecScope = serde_json::from_value(contract.as_str().into()).unwrap();
            assert_eq!(scope(spec), contract);
        }
    }

    #[test]
    fn grant_hash_changes_with_every_granted_field_only() {
        let t = tenant(serde_json::json!({"services": ["gte"]}));
        let base = token_request(&t, "iss", Duration::from_secs(60), &credential(1)).unwrap();
        let h = grant_hash(&base);
        assert_eq!(h, grant_hash(&base.clone()));
        let variants = [
            TokenRequest {
                gen: 2,
                ..base.clone()
            },
            TokenRequest {
                ttl: Duration::from_secs(61),
                ..base.clone()
            },
            TokenRequest {
                tenant_uid: "uid-acme-recreated".into(),
                ..base.clone()
            },
            TokenRequest {
                scopes: vec![Scope::Predict],
                ..base.clone()
            },
            TokenRequest {
                audience: vec!["team/other".parse().unwrap()],
                ..base.clone()
            },
            TokenRequest {
                issuer: "other".into(),
                ..base.clone()
            },
        ];
        for v in variants {
            assert_ne!(grant_hash(&v), h, "{v:?}");
        }
    }

    #[test]
    fn reissues_when_missing_changed_unpublished_or_at_80_percent() {
        let published = |kid: &str| kid == "k";
        assert_eq!(
            reissue_reason(None, "h", published, 0),
            Some(IssueReason::Missing)
        );
        let cur = issued("h", 1000, 2000);
        assert_eq!(cur.renew_at(), 1800);
        assert_eq!(
            reissue_reason(Some(&cur), "h2", published, 1001),
            Some(IssueReason::GrantChanged)
        );
        assert_eq!(
            reissue_reason(Some(&cur), "h", |_| false, 1001),
            Some(IssueReason::KeyRetired)
        );
        assert_eq!(reissue_reason(Some(&cur), "h", published, 1799), None);
        assert_eq!(
            reissue_reason(Some(&cur), "h", published, 1800),
            Some(IssueReason::Renewal)
        );
    }

    #[test]
    fn secret_holds_only_token_and_urls_and_is_owned_by_the_tenant() {
        let t = tenant(serde_json::json!({"services": ["gte"]}));
        let urls = BTreeMap::from([("gte".to_owned(), "https://gte.example.com".to_owned())]);
        let s = secret(&t, &issued("h", 1, 2), &urls);
        let keys: Vec<&String> = s.data.as_ref().unwrap().keys().collect();
        assert_eq!(keys, ["token", "url.gte"]);
        assert_eq!(s.metadata.name.as_deref(), Some("acme-token"));
        let owner = &s.owner_references()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
            ("Tenant", "uid-1", Some(true))
        );
        assert_eq!(IssuedToken::from_secret(&s), Some(issued("h", 1, 2)));
        assert!(up_to_date(&s, &s));
        let other = secret(&t, &issued("h", 1, 2), &BTreeMap::new());
        assert!(!up_to_date(&s, &other));
    }
}
