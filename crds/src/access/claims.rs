//! Token claims and the operations (scopes) they grant.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::AccessError;

/// An operation a tenant may call. Each model route of the server needs one operation
/// ([`crate::routes::Route::scope`]); `predict` also comes narrowed to one UniNLU task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(into = "&'static str", try_from = "String")]
pub enum Scope {
    /// UniNLU, every task: `POST /api/predict`, `/predict`.
    Predict,
    /// UniNLU requests of this task only (`predict:ner`, ...): the routes of `predict`, for the
    /// requests whose schema and text express the task (see [`UninluTask`]).
    PredictTask(UninluTask),
    /// Embeddings and similarity: `POST /v1/embeddings`, `/embed`, `/similarity`.
    Embed,
    /// Reranking: `POST /rerank`, `/v1/rerank`.
    Rerank,
}

/// The UniNLU tasks a tenant may be granted one by one (`predict:<task>`). Which task a
/// request is follows from its schema and text (the server's `uninlu::task`, documented in
/// docs/auth.md); a request whose task cannot be told needs `predict`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum UninluTask {
    /// Named entity recognition.
    Ner,
    /// Relation extraction.
    Relation,
    /// Event extraction.
    Event,
    /// Sentiment, attribute sentiment included.
    Sentiment,
    /// Text classification.
    Classification,
    /// Text matching.
    Match,
    /// Natural language inference.
    Nli,
    /// Machine reading comprehension.
    Mrc,
}

impl UninluTask {
    pub const ALL: [UninluTask; 8] = [
        UninluTask::Ner,
        UninluTask::Relation,
        UninluTask::Event,
        UninluTask::Sentiment,
        UninluTask::Classification,
        UninluTask::Match,
        UninluTask::Nli,
        UninluTask::Mrc,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            UninluTask::Ner => "ner",
            UninluTask::Relation => "relation",
            UninluTask::Event => "event",
            UninluTask::Sentiment => "sentiment",
            UninluTask::Classification => "classification",
            UninluTask::Match => "match",
            UninluTask::Nli => "nli",
            UninluTask::Mrc => "mrc",
        }
    }
}

impl fmt::Display for UninluTask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Scope {
    /// The scopes a token gets when its tenant names none: every operation, every task.
    pub const OPERATIONS: [Scope; 3] = [Scope::Predict, Scope::Embed, Scope::Rerank];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Predict => "predict",
            Scope::PredictTask(task) => match task {
                UninluTask::Ner => "predict:ner",
                UninluTask::Relation => "predict:relation",
                UninluTask::Event => "predict:event",
                UninluTask::Sentiment => "predict:sentiment",
                UninluTask::Classification => "predict:classification",
                UninluTask::Match => "predict:match",
                UninluTask::Nli => "predict:nli",
                UninluTask::Mrc => "predict:mrc",
            },
            Scope::Embed => "embed",
            Scope::Rerank => "rerank",
        }
    }

    /// The scopes that let a request through to a route of `operation`: the operation, and for
    /// `predict` each `predict:<task>` too, since the task is known only once the handler has
    /// read the request ([`Scope::granting`] then decides).
    pub fn reaching(operation: Scope) -> Vec<Scope> {
        let tasks = match operation {
            Scope::Predict => UninluTask::ALL.map(Scope::PredictTask).to_vec(),
            _ => Vec::new(),
        };
        [vec![operation], tasks].concat()
    }

    /// The scopes that grant a UniNLU request of `task`: `predict` always, `predict:<task>`
    /// when the task is known (`None`: the request's task cannot be told, so only the broad
    /// scope covers it).
    pub fn granting(task: Option<UninluTask>) -> Vec<Scope> {
        std::iter::once(Scope::Predict)
            .chain(task.map(Scope::PredictTask))
            .collect()
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
            other => UninluTask::ALL
                .into_iter()
                .map(Scope::PredictTask)
                .find(|scope| scope.as_str() == other)
                .ok_or_else(|| AccessError::UnknownScope(other.to_string())),
        }
    }
}

impl From<Scope> for &'static str {
    fn from(scope: Scope) -> Self {
        scope.as_str()
    }
}

impl TryFrom<String> for Scope {
    type Error = AccessError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
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

    /// Whether the token holds one of `scopes` (each of them would allow the call).
    pub fn grants(&self, scopes: &[Scope]) -> bool {
        self.scope.iter().any(|s| scopes.contains(s))
    }

    /// What the tenant record must still accept for this token to work.
    pub fn credential(&self) -> Credential {
        Credential {
            tid: self.tid.clone(),
            gen: self.gen,
            identity: None,
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
    /// For a token of the tenant's own identity provider ([`super::identity`]): the fingerprint
    /// of the identity mapping it matched. The record must hold the same one (`gen` is the
    /// operator's tokens' and is not compared), so changing or removing `spec.identity` refuses
    /// such tokens at once, before the servers' copy of the mapping follows.
    pub identity: Option<String>,
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
        let tasks = UninluTask::ALL.map(Scope::PredictTask);
        for scope in Scope::OPERATIONS.into_iter().chain(tasks) {
            assert_eq!(scope.as_str().parse::<Scope>().unwrap(), scope);
            let json = serde_json::to_value(scope).unwrap();
            assert_eq!(json, scope.as_str());
            assert_eq!(serde_json::from_value::<Scope>(json).unwrap(), scope);
        }
        assert_eq!(
            Scope::parse_list("predict:ner, predict:mrc").unwrap(),
            [
                Scope::PredictTask(UninluTask::Ner),
                Scope::PredictTask(UninluTask::Mrc)
            ]
        );
        assert_eq!(
            Scope::parse_list("rerank,embed").unwrap(),
            [Scope::Rerank, Scope::Embed]
        );
        for unknown in [
            "admin",
            "predict:",
            "predict:summary",
            "embed:ner",
            "Predict",
        ] {
            assert!(
                matches!(Scope::parse_list(&format!("predict,{unknown}")), Err(AccessError::UnknownScope(s)) if s == unknown),
                "{unknown}"
            );
        }
        assert!(serde_json::from_str::<Scope>(r#""predict:summary""#).is_err());
    }

    #[test]
    fn task_scopes_reach_the_predict_routes_and_grant_their_task_only() {
        let ner = Scope::PredictTask(UninluTask::Ner);
        let reaching = Scope::reaching(Scope::Predict);
        assert_eq!(reaching.len(), 9);
        assert!(reaching.contains(&Scope::Predict) && reaching.contains(&ner));
        assert_eq!(Scope::reaching(Scope::Embed), [Scope::Embed]);
        assert_eq!(
            Scope::granting(Some(UninluTask::Ner)),
            [Scope::Predict, ner]
        );
        assert_eq!(Scope::granting(None), [Scope::Predict]);
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
        assert!(claims.grants(&[Scope::Embed]) && !claims.grants(&[Scope::Predict]));
        assert!(claims.grants(&[Scope::Predict, Scope::Embed]));
    }
}
