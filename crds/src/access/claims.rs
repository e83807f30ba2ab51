//! Token claims and the operations (scopes) they grant.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::AccessError;

/// An operation a tenant may call. Each model route of the server needs exactly one
/// ([`crate::routes::Route::scope`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// UniNLU extraction: `POST /api/predict`.
    Predict,
    /// Embeddings and similarity: `POST /v1/embeddings`, `/embed`, `/similarity`.
    Embed,
    /// Reranking: `POST /rerank`, `/v1/rerank`.
    Rerank,
}

impl Scope {
    pub const ALL: [Scope; 3] = [Scope::Predict, Scope::Embed, Scope::Rerank];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Predict => "predict",
            Scope::Embed => "embed",
            Scope::Rerank => "rerank",
        }
    }

    /// Parses a comma-separated list (`predict,embed`); blanks are ignored.
    pub fn parse_list(s: &str) -> Result<Vec<Scope>, AccessError> {
        s.split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(str::parse)
            .collect()
    }

    /// Joins scopes as the comma-separated form used in Redis records.
    pub fn join(scopes: &[Scope]) -> String {
        scopes
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Scope {
    type Err = AccessError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "predict" => Ok(Scope::Predict),
            "embed" => Ok(Scope::Embed),
            "rerank" => Ok(Scope::Rerank),
            other => Err(AccessError::UnknownScope(other.to_string())),
        }
    }
}

/// A namespaced Kubernetes object name, written `namespace/name` (tenants and services).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QualifiedName {
    pub namespace: String,
    pub name: String,
}

impl QualifiedName {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Result<Self, AccessError> {
        let (namespace, name) = (namespace.into(), name.into());
        if is_dns_name(&namespace) && is_dns_name(&name) {
            Ok(Self { namespace, name })
        } else {
            Err(AccessError::InvalidName(format!("{namespace}/{name}")))
        }
    }
}

/// Lowercase DNS-1123 subdomain, as Kubernetes requires for namespaces and object names.
fn is_dns_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric())
}

impl fmt::Display for QualifiedName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

impl FromStr for QualifiedName {
    type Err = AccessError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (ns, name) = s
            .split_once('/')
            .ok_or_else(|| AccessError::InvalidName(s.to_string()))?;
        Self::new(ns, name).map_err(|_| AccessError::InvalidName(s.to_string()))
    }
}

/// The claims of a tenant token. All are required; unknown scopes make the token invalid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Who issued the token (the operator, or `nlu-server token`).
    pub iss: String,
    /// The tenant, `namespace/name`.
    pub sub: String,
    /// The services the token is for, each `namespace/name`.
    pub aud: Vec<String>,
    /// Expiry, seconds since the Unix epoch.
    pub exp: i64,
    /// Issued at, seconds since the Unix epoch.
    pub iat: i64,
    /// Not valid before, seconds since the Unix epoch.
    pub nbf: i64,
    /// Unique token id (for audit logs).
    pub jti: String,
    /// Credential generation: tokens below the tenant record's `gen` are revoked.
    pub gen: u64,
    /// The `metadata.uid` of the Tenant the token was issued for: the record holds it, so a
    /// token of a deleted Tenant does not work for a new one of the same name.
    pub tid: String,
    /// Operations granted; the record's `scopes` can narrow them further.
    pub scope: Vec<Scope>,
}

impl Claims {
    /// The tenant this token speaks for.
    pub fn tenant(&self) -> Result<QualifiedName, AccessError> {
        self.sub.parse()
    }

    pub fn grants(&self, scope: Scope) -> bool {
        self.scope.contains(&scope)
    }

    /// What the tenant record must still accept for this token to work.
    pub fn credential(&self) -> Credential {
        Credential {
            tid: self.tid.clone(),
            gen: self.gen,
        }
    }
}

/// Which incarnation of a tenant (`tid`, its Tenant's uid) and which credential generation a
/// token speaks for; the quota script refuses it as revoked unless the record has the same uid
/// and a `gen` no higher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    pub tid: String,
    pub gen: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_lists_round_trip_and_reject_unknown() {
        let scopes = Scope::parse_list(" predict, embed ,").unwrap();
        assert_eq!(scopes, vec![Scope::Predict, Scope::Embed]);
        assert_eq!(Scope::join(&scopes), "predict,embed");
        assert!(Scope::parse_list("").unwrap().is_empty());
        for scope in Scope::ALL {
            assert_eq!(scope.as_str().parse::<Scope>().unwrap(), scope);
        }
        assert_eq!(
            Scope::parse_list("rerank,embed").unwrap(),
            [Scope::Rerank, Scope::Embed]
        );
        assert!(
            matches!(Scope::parse_list("predict,admin"), Err(AccessError::UnknownScope(s)) if s == "admin")
        );
    }

    #[test]
    fn qualified_names_parse_and_validate() {
        let q: QualifiedName = "team-a/alice".parse().unwrap();
        assert_eq!((q.namespace.as_str(), q.name.as_str()), ("team-a", "alice"));
        assert_eq!(q.to_string(), "team-a/alice");
        for bad in [
            "alice",
            "/alice",
            "ns/",
            "ns/a/b",
            "NS/alice",
            "ns/al ice",
            "ns/-a",
            "ns/a,b",
        ] {
            assert!(bad.parse::<QualifiedName>().is_err(), "{bad}");
        }
    }

    #[test]
    fn claims_serialize_with_contract_field_names() {
        let claims = Claims {
            iss: "nlu-operator".into(),
            sub: "ns/t".into(),
            aud: vec!["ns/svc".into()],
            exp: 20,
            iat: 10,
            nbf: 10,
            jti: "j".into(),
            gen: 3,
            tid: "uid-alice".into(),
            scope: vec![Scope::Embed],
        };
        let json = serde_json::to_value(&claims).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"iss":"nlu-operator","sub":"ns/t","aud":["ns/svc"],"exp":20,"iat":10,
                               "nbf":10,"jti":"j","gen":3,"tid":"uid-alice","scope":["embed"]})
        );
        assert_eq!(serde_json::from_value::<Claims>(json).unwrap(), claims);
        assert!(claims.grants(Scope::Embed) && !claims.grants(Scope::Predict));
    }
}
