//! `Tenant`: "this customer may call these services and operations, this much". The operator
//! issues its token into a Secret, writes its record to Redis and reports usage.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use crate::access::identity::ClaimMatch;

/// Desired access of one customer.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "nlu.dev",
    version = "v1alpha1",
    kind = "Tenant",
    namespaced,
    status = "TenantStatus",
    shortname = "nlt",
    category = "nlu",
    cel,
    doc = "A customer of the inference services: its token (in the Secret named in status), scopes and quotas.",
    printcolumn = r#"{"name":"Quota","type":"integer","description":"Requests per day (0 = unlimited)","jsonPath":".spec.quota.requestsPerDay"}"#,
    printcolumn = r#"{"name":"Usage","type":"integer","description":"Requests counted today (UTC)","jsonPath":".status.usage.requests"}"#,
    printcolumn = r#"{"name":"Tokens","type":"integer","description":"Tokens charged today (UTC)","jsonPath":".status.usage.tokens"}"#,
    printcolumn = r#"{"name":"Suspended","type":"boolean","jsonPath":".spec.suspended"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct TenantSpec {
    /// Names of the NluServices in this namespace the tenant may call.
    #[schemars(length(min = 1))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub services: Vec<String>,

    /// Operations allowed: `predict` (UniNLU, every task), `embed` (embeddings, similarity) and
    /// `rerank`; or UniNLU narrowed to tasks: `predict:ner`, `predict:relation`,
    /// `predict:event`, `predict:sentiment`, `predict:classification`, `predict:match`,
    /// `predict:nli`, `predict:mrc` (a request's task is told from its schema and text; one
    /// whose task cannot be told needs `predict`: docs/auth.md). Empty: all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub scopes: Vec<Scope>,

    /// Request and token limits. Unset: unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota: Option<Quota>,

    /// Refuse every request of this tenant at once (403), without revoking its token.
    #[serde(default)]
    pub suspended: bool,

    /// The tenant's bearer token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<TokenSpec>,

    /// Tokens of the tenant's own identity provider (an OIDC issuer: Keycloak, Dex, Azure AD,
    /// ...) accepted beside the operator's token, under the same scopes, quota and record
    /// (docs/auth.md, "Federated tokens").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<IdentitySpec>,
}

/// Which tokens of an identity provider speak for this tenant: those `issuer` signed, carrying
/// `audience`, whose claims satisfy every one of `claims`. A token that matches the mappings of
/// two Tenants is refused.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    cel,
    validation = Rule::new("self.issuer.startsWith('https://') || self.issuer.matches('^http://(127[.]0[.]0[.]1|localhost|[[]::1[]])(:[0-9]+)?(/.*)?$')").message("issuer must be an https:// URL (http:// only on the loopback address, for development)").field_path(".issuer"),
    validation = Rule::new("self.claims.all(c, has(c.equals) != has(c.contains))").message("each claim condition needs exactly one of equals and contains").field_path(".claims")
)]
pub struct IdentitySpec {
    /// The issuer URL, exactly as its tokens carry it in `iss`; the operator reads
    /// `<issuer>/.well-known/openid-configuration` and the JWK Set it names.
    #[schemars(length(min = 9, max = 512))]
    pub issuer: String,
    /// The audience (`aud`) the tokens must carry, e.g. the client id of the API in the
    /// identity provider.
    #[schemars(length(min = 1, max = 256))]
    pub audience: String,
    /// Conditions on the tokens' claims that select this tenant, all of which must hold, e.g.
    /// `{claim: azp, equals: billing-app}` or `{claim: groups, contains: nlu-team-a}`.
    #[schemars(length(min = 1, max = 16))]
    pub claims: Vec<ClaimMatch>,
}

/// An operation a token may be used for.
#[derive(
    JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord,
)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// `POST /api/predict` and `/predict` (UniNLU), every task.
    Predict,
    /// UniNLU named entity recognition only.
    #[serde(rename = "predict:ner")]
    PredictNer,
    /// UniNLU relation extraction only.
    #[serde(rename = "predict:relation")]
    PredictRelation,
    /// UniNLU event extraction only.
    #[serde(rename = "predict:event")]
    PredictEvent,
    /// UniNLU sentiment (attribute sentiment included) only.
    #[serde(rename = "predict:sentiment")]
    PredictSentiment,
    /// UniNLU text classification only.
    #[serde(rename = "predict:classification")]
    PredictClassification,
    /// UniNLU text matching only.
    #[serde(rename = "predict:match")]
    PredictMatch,
    /// UniNLU natural language inference only.
    #[serde(rename = "predict:nli")]
    PredictNli,
    /// UniNLU reading comprehension only.
    #[serde(rename = "predict:mrc")]
    PredictMrc,
    /// `POST /v1/embeddings`, `/embed`, `/similarity`.
    Embed,
    /// `POST /rerank`, `/v1/rerank`.
    Rerank,
}

/// Request and token limits of a tenant. `0` means unlimited.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    cel,
    // The ceiling is `redis_keys::MAX_LIMIT`: what the quota script compares exactly.
    validation = Rule::new("!has(self.requestsPerDay) || (self.requestsPerDay >= 0 && self.requestsPerDay <= 999999999999999)").message("requestsPerDay must be from 0 (unlimited) to 999999999999999").field_path(".requestsPerDay"),
    validation = Rule::new("!has(self.requestsPerMinute) || (self.requestsPerMinute >= 0 && self.requestsPerMinute <= 999999999999999)").message("requestsPerMinute must be from 0 (unlimited) to 999999999999999").field_path(".requestsPerMinute"),
    validation = Rule::new("!has(self.tokensPerDay) || (self.tokensPerDay >= 0 && self.tokensPerDay <= 999999999999999)").message("tokensPerDay must be from 0 (unlimited) to 999999999999999").field_path(".tokensPerDay"),
    validation = Rule::new("!has(self.tokensPerMinute) || (self.tokensPerMinute >= 0 && self.tokensPerMinute <= 999999999999999)").message("tokensPerMinute must be from 0 (unlimited) to 999999999999999").field_path(".tokensPerMinute")
)]
pub struct Quota {
    /// Requests per UTC day. `0` or unset: unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_per_day: Option<i64>,
    /// Requests per minute (sliding window, no burst across window edges). `0` or unset: unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_per_minute: Option<i64>,
    /// Tokens per UTC day: the token positions the model runs for the tenant's requests
    /// (embeddings: the inputs' tokens; UniNLU: the text's windows and every prompt over them,
    /// charged level by level). `0` or unset: unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_day: Option<i64>,
    /// Tokens per minute (sliding window, no burst across window edges). A request costing more
    /// than this can never run (413). `0` or unset: unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_minute: Option<i64>,
    /// Most requests of the tenant in flight at once, over all servers of the namespace; one
    /// more gets 429 `too_many_in_flight` at once. A place is freed when its request ends, or
    /// after the server's `--request-timeout` if the server died. `0` or unset: unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1000000))]
    pub max_concurrent_requests: Option<i64>,
}

/// Token settings.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct TokenSpec {
    /// Lifetime of an issued token as a duration (`90m`, `24h`, `720h`), at least `5m`.
    /// A new token is issued at 80 % of it. Default `720h`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("duration(self) >= duration('5m') && duration(self) <= duration('8760h')").message("ttl must be a duration from 5m to 8760h (the servers' default --max-token-lifetime), e.g. 720h"))]
    pub ttl: Option<String>,
    /// Credential generation. Raise it to revoke every token issued before; it cannot go down.
    /// At most 999999999999999 (15 digits, compared exactly everywhere).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 999_999_999_999_999i64))]
    #[x_kube(validation = Rule::new("self >= oldSelf").message("generation can only be raised (lowering it would revive revoked tokens)"))]
    pub generation: Option<i64>,
}

/// Observed state of a tenant.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct TenantStatus {
    /// Ready, Suspended, QuotaExceeded; IdentityProviderReady with `spec.identity` (whether the
    /// identity provider's keys were read, and why not).
    #[serde(default)]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Secret (same namespace) holding the tenant's token under the key `token`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_secret_name: Option<String>,
    /// When the current token expires; a new one is issued before that.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_expires_at: Option<Time>,
    /// Requests and tokens counted today, refreshed at most once a minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// Revocations acted on: each new value of the `nlu.dev/revoke` annotation counts once. Kept
    /// in status, which only the operator writes, so the credential generation
    /// (`spec.token.generation` + this) cannot be lowered by editing the Tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revocations: Option<i64>,
    /// The last `nlu.dev/revoke` value acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoke_handled: Option<String>,
}

/// Today's usage of a tenant.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Usage {
    /// UTC day the counts are for, `YYYY-MM-DD`.
    pub date: String,
    /// Requests allowed so far that day.
    pub requests: i64,
    /// Requests left that day; absent when unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remaining: Option<i64>,
    /// Tokens charged so far that day.
    #[serde(default)]
    pub tokens: i64,
    /// Tokens left that day; absent when unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_remaining: Option<i64>,
    /// Requests refused so far that day, by reason (`suspended`, `revoked`, `scope`, `service`,
    /// `requests_per_day`, `requests_per_minute`, `tokens_per_day`, `tokens_per_minute`,
    /// `cost_over_limit`, `concurrency`); reasons with none are absent.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub refused: BTreeMap<String, i64>,
    /// The days before, newest first: the operator's `--usage-history-days` (7 by default, at
    /// most 31) of them, those with anything counted. Older days stay in Redis for
    /// `--usage-retention-days`: `nlu-operator usage` prints them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_USAGE_HISTORY_DAYS))]
    pub history: Vec<UsageDay>,
}

/// Most days before today `status.usage.history` holds (the operator's `--usage-history-days`
/// goes up to it, the schema's `maxItems`): keeps the status small whatever the retention.
pub const MAX_USAGE_HISTORY_DAYS: u64 = 31;

/// One past UTC day of a tenant's usage.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct UsageDay {
    /// The UTC day, `YYYY-MM-DD`.
    pub date: String,
    /// Requests allowed that day.
    pub requests: i64,
    /// Tokens charged that day.
    pub tokens: i64,
    /// Requests refused that day, by reason (as in `usage.refused`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub refused: BTreeMap<String, i64>,
}

/// Longest `spec.token.ttl` the CRD allows (8760h), and the operator's default
/// `--max-token-ttl`.
pub const MAX_TOKEN_TTL: std::time::Duration = std::time::Duration::from_secs(8760 * 3600);

/// Default token lifetime when `spec.token.ttl` is unset.
pub const DEFAULT_TOKEN_TTL: std::time::Duration = std::time::Duration::from_secs(720 * 3600);

impl TenantSpec {
    /// The token lifetime (`token.ttl`, else the default). The text is kept as the user wrote
    /// it (a typed duration would re-serialise `720h` as `2592000s`) and parsed here.
    pub fn token_ttl(&self) -> Result<std::time::Duration, kube::core::duration::ParseError> {
        match self.token.as_ref().and_then(|t| t.ttl.as_deref()) {
            Some(text) => Ok(text.parse::<kube::core::Duration>()?.into()),
            None => Ok(DEFAULT_TOKEN_TTL),
        }
    }

    /// The credential generation (`1` when unset).
    pub fn token_generation(&self) -> i64 {
        self.token.as_ref().and_then(|t| t.generation).unwrap_or(1)
    }
}
