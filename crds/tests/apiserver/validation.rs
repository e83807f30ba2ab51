//! Every schema constraint and CEL rule of both CRDs, each broken once on a real server: the
//! object must be refused with a cause naming the field (and, for CEL rules, carrying our
//! message); numeric and length limits are also accepted exactly at the limit. A coverage check
//! keeps this table in step with the CRDs: a new constraint without a case fails it.

use std::collections::BTreeSet;

use http::StatusCode;
use serde_json::{json, Value};

use crate::common::{causes, create, create_ok, placed, replace, root, sample, with};

/// What the server must report for the field.
#[derive(Clone, Copy)]
enum Expect {
    Required,
    NotSupported,
    Duplicate,
    /// A built-in limit (minimum, maximum, minLength, minItems).
    Invalid,
    /// maxLength.
    TooLong,
    /// maxItems.
    TooMany,
    /// A `format` (date-time).
    Format,
    /// A CEL rule: FieldValueInvalid with the rule's message, taken from the site name.
    Rule,
}

struct Case {
    /// `<Kind> <path> <constraint>`, as [`constraint_sites`] names it.
    site: &'static str,
    /// Sample file the object starts from (valid as is).
    base: &'static str,
    /// JSON pointer edits, values as JSON text (`null` removes). Edits under `/status` go
    /// through the status subresource after the object was created.
    edits: &'static [(&'static str, &'static str)],
    /// The `field` of the expected cause.
    field: &'static str,
    expect: Expect,
    /// A value for the last edited pointer that sits exactly at the limit and must be accepted.
    at_limit: Option<&'static str>,
}

const UNINLU: &str = "nluservice-uninlu.yaml";
const GTE: &str = "nluservice-embedding.yaml";
/// The CEL rule of spec.ingress.path, shared with the server's --path-prefix (`serve::path_prefix`).
const INGRESS_PATH_RULE: &str =
    "NluService spec.ingress.path rule: path must be a path such as /uninlu: '/' then letters, digits and / . _ ~ -, without '..'";
/// `auth.mode: none` with an Ingress needs `auth.allowUnauthenticated: true`.
const UNAUTHENTICATED_RULE: &str = "NluService spec rule: auth.mode none behind an Ingress serves anyone who can reach the Ingress: set auth.allowUnauthenticated: true to mean it";
/// 257 and 256 characters: one over and exactly at spec.ingress.path's maxLength.
const LONG_PATH: &str = "\"/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"";
const LONG_PATH_AT_LIMIT: &str = "\"/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"";
/// A SHA-256 as `spec.model.source.sha256` takes it, and the same in upper case (refused).
const SHA256_LOWER: &str = r#""9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d08e1d5d5f1ab""#;
const SHA256_UPPER: &str = r#""9F86D081884C7D659A2FEAA0C55AD015A3BF4F1B2B0B822CD15D08E1D5D5F1AB""#;
/// 254 and 253 characters: one over and exactly at a Kubernetes name's (and ConfigMap key's) maxLength.
const LONG_NAME: &str = r#""aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa""#;
const LONG_NAME_AT_LIMIT: &str = r#""aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa""#;
const TENANT: &str = "tenant.yaml";
/// 32 and 31 days: one over and exactly at status.usage.history's maxItems
/// (`nlu_crds::tenant::MAX_USAGE_HISTORY_DAYS`, checked in `history_limit_is_the_flag_bound`).
const LONG_HISTORY: &str = r#"[{"date":"2026-11-01","requests":1,"tokens":0},{"date":"2026-11-01","requests":1,"tokens":0},{"date":"2026-11-01","requests":1,"tokens":0},{"date":"2026-11-01","requests":1,"tokens":0},{"date":"2026-11-01","requests":1,"tokens":0},{"date":"2026-11-01","requests":1,"tokens":0},{"date":"2026-11-01","requests":1,"tokens":0},{"date":"2026-11-01","requests":1,"tokens":0},{"date":"2026-11-01","requests":1,"tokens":0},{"date":"2026-11-01","requests":1,"tokens":0},{"date":"2026-11-01","requests":1,"tokens":0},{"date":"2026-11-01","requests":1,"tokens":0},{"date":"2026-11-01","requests":1,"tokens":0},{"date":"2026-11-01","requests":1,"tokens":0},{"date":"2026-11-01","requests":1,"tokens":0},{"date":"2026-11-01","requests":1,"tokens":0},{"date":"2026-11-01","requests":1,"tokens":0},{"date":"2026-11-01","requests":1,"tokens":0},{"date":"2026-11-01","requests":1,"tokens":0},{"date":"2026-11-01","requests":1,"tokens":0},{"date":"2026-11-01","requests":1,"tokens":0},{"date":"2026-11-01","requests":1,"tokens":0},{"date":"2026-11-01","requests":1,"tokens":0},{"date":"2026-11-01","requests":1,"tokens":0},{"date":"2026-11-01","requests":1,"tokens":0},{"date":"2026-11-01","requests":1,"tokens":0},{"date":"2026-11-01","requests":1,"tokens":0},{"date":"2026-11-01","requests":1,"tokens":0},{"date":"2026-11-01","requests":1,"tokens":0},{"date":"2026-11-01","requests":1,"tokens":0},{"date":"2026-11-01","requests":1,"tokens":0},{"date":"2026-11-01","requests":1,"tokens":0}]"#;
const LONG_HISTORY_AT_LIMIT: &str = r#"[{"date":"2026-11-01","requests":1,"tokens":0},{"date":"2026-11-01","requests":1,"tokens":0},{"date":"2026-11-01","requests":1,"tokens":0},{"date":"2026-11-01","requests":1,"tokens":0},{"date":"2026-11-01","requests":1,"tokens":0},{"date":"2026-11-01","requests":1,"tokens":0},{"date":"2026-11-01","requests":1,"tokens":0},{"date":"2026-11-01","requests":1,"tokens":0},{"date":"2026-11-01","requests":1,"tokens":0},{"date":"2026-11-01","requests":1,"tokens":0},{"date":"2026-11-01","requests":1,"tokens":0},{"date":"2026-11-01","requests":1,"tokens":0},{"date":"2026-11-01","requests":1,"tokens":0},{"date":"2026-11-01","requests":1,"tokens":0},{"date":"2026-11-01","requests":1,"tokens":0},{"date":"2026-11-01","requests":1,"tokens":0},{"date":"2026-11-01","requests":1,"tokens":0},{"date":"2026-11-01","requests":1,"tokens":0},{"date":"2026-11-01","requests":1,"tokens":0},{"date":"2026-11-01","requests":1,"tokens":0},{"date":"2026-11-01","requests":1,"tokens":0},{"date":"2026-11-01","requests":1,"tokens":0},{"date":"2026-11-01","requests":1,"tokens":0},{"date":"2026-11-01","requests":1,"tokens":0},{"date":"2026-11-01","requests":1,"tokens":0},{"date":"2026-11-01","requests":1,"tokens":0},{"date":"2026-11-01","requests":1,"tokens":0},{"date":"2026-11-01","requests":1,"tokens":0},{"date":"2026-11-01","requests":1,"tokens":0},{"date":"2026-11-01","requests":1,"tokens":0},{"date":"2026-11-01","requests":1,"tokens":0}]"#;
const PER_DAY_RULE: &str =
    "Tenant spec.quota rule: requestsPerDay must be from 0 (unlimited) to 999999999999999";
const PER_MINUTE_RULE: &str =
    "Tenant spec.quota rule: requestsPerMinute must be from 0 (unlimited) to 999999999999999";
const TOKENS_PER_DAY_RULE: &str =
    "Tenant spec.quota rule: tokensPerDay must be from 0 (unlimited) to 999999999999999";
const TOKENS_PER_MINUTE_RULE: &str =
    "Tenant spec.quota rule: tokensPerMinute must be from 0 (unlimited) to 999999999999999";
const TTL_RULE: &str = "Tenant spec.token.ttl rule: ttl must be a duration from 5m to 8760h (the servers' default --max-token-lifetime), e.g. 720h";

/// A valid `spec.identity`, which the identity cases start from.
const IDENTITY: &str = r#"{"issuer": "https://idp.example", "audience": "nlu-api", "claims": [{"claim": "azp", "equals": "app"}]}"#;
const ISSUER_RULE: &str = "Tenant spec.identity rule: issuer must be an https:// URL (http:// only on the loopback address, for development)";
const CLAIM_RULE: &str = "Tenant spec.identity rule: each claim condition needs exactly one of equals and contains";

const fn case(
    site: &'static str,
    base: &'static str,
    edits: &'static [(&'static str, &'static str)],
    field: &'static str,
    expect: Expect,
) -> Case {
    Case {
        site,
        base,
        edits,
        field,
        expect,
        at_limit: None,
    }
}

const fn limit(
    site: &'static str,
    base: &'static str,
    edits: &'static [(&'static str, &'static str)],
    field: &'static str,
    at_limit: &'static str,
) -> Case {
    Case {
        site,
        base,
        edits,
        field,
        expect: Expect::Invalid,
        at_limit: Some(at_limit),
    }
}

use Expect::*;

#[rustfmt::skip]
const CASES: &[Case] = &[
    // NluService: spec
    case("NluService spec required", UNINLU, &[("/spec", "null")], "spec", Required),
    case("NluService spec.model required", UNINLU, &[("/spec/model", "null")], "spec.model", Required),
    case("NluService spec rule: set either replicas or autoscaling, not both: with autoscaling the HPA owns the replica count",
        UNINLU, &[("/spec/replicas", "2")], "spec.replicas", Rule),
    limit("NluService spec.replicas minimum", GTE, &[("/spec/replicas", "-1")], "spec.replicas", "0"),
    case("NluService spec.resources.claims[].name required", GTE, &[("/spec/resources/claims", r#"[{"request": "r"}]"#)],
        "spec.resources.claims[0].name", Required),
    // model
    case("NluService spec.model.task required", UNINLU, &[("/spec/model/task", "null")], "spec.model.task", Required),
    case("NluService spec.model.task enum", UNINLU, &[("/spec/model/task", r#""ner""#)], "spec.model.task", NotSupported),
    case("NluService spec.model.source required", UNINLU, &[("/spec/model/source", "null")], "spec.model.source", Required),
    case("NluService spec.model.source rule: exactly one of huggingFace, modelScope, pvc or url must be set",
        UNINLU, &[("/spec/model/source/url", r#""https://example.com/m.tar.gz""#)], "spec.model.source", Rule),
    case("NluService spec.model.source rule: exactly one of huggingFace, modelScope, pvc or url must be set",
        UNINLU, &[("/spec/model/source", "{}")], "spec.model.source", Rule),
    case("NluService spec.model.source.huggingFace.repo required", UNINLU, &[("/spec/model/source", r#"{"huggingFace": {"revision": "main"}}"#)],
        "spec.model.source.huggingFace.repo", Required),
    limit("NluService spec.model.source.huggingFace.repo minLength", UNINLU, &[("/spec/model/source", r#"{"huggingFace": {"repo": ""}}"#)],
        "spec.model.source.huggingFace.repo", r#"{"huggingFace": {"repo": "a"}}"#),
    case("NluService spec.model.source.modelScope.id required", UNINLU, &[("/spec/model/source", r#"{"modelScope": {"revision": "v1"}}"#)],
        "spec.model.source.modelScope.id", Required),
    limit("NluService spec.model.source.modelScope.id minLength", UNINLU, &[("/spec/model/source", r#"{"modelScope": {"id": ""}}"#)],
        "spec.model.source.modelScope.id", r#"{"modelScope": {"id": "m"}}"#),
    case("NluService spec.model.source.pvc.claimName required", UNINLU, &[("/spec/model/source", r#"{"pvc": {"path": "m"}}"#)],
        "spec.model.source.pvc.claimName", Required),
    limit("NluService spec.model.source.pvc.claimName minLength", UNINLU, &[("/spec/model/source", r#"{"pvc": {"claimName": ""}}"#)],
        "spec.model.source.pvc.claimName", r#"{"pvc": {"claimName": "m"}}"#),
    Case { at_limit: Some(r#"{"pvc": {"claimName": "m", "path": "models/gte"}}"#),
        ..case("NluService spec.model.source.pvc.path rule: path must be relative to the volume root and must not contain '..'",
        UNINLU, &[("/spec/model/source", r#"{"pvc": {"claimName": "m", "path": "/models"}}"#)], "spec.model.source.pvc.path", Rule) },
    case("NluService spec.model.source.pvc.path rule: path must be relative to the volume root and must not contain '..'",
        UNINLU, &[("/spec/model/source", r#"{"pvc": {"claimName": "m", "path": "a/../b"}}"#)], "spec.model.source.pvc.path", Rule),
    Case { at_limit: Some(r#"{"url": "https://example.com/m.tar.gz"}"#),
        ..case("NluService spec.model.source.url rule: url must be an http(s) URL",
        UNINLU, &[("/spec/model/source", r#"{"url": "ftp://example.com/m.tar.gz"}"#)], "spec.model.source.url", Rule) },
    // sha256: 64 lowercase hex digits, and only for a downloaded source.
    limit("NluService spec.model.source.sha256 pattern", UNINLU, &[("/spec/model/source/sha256", SHA256_UPPER)],
        "spec.model.source.sha256", SHA256_LOWER),
    limit("NluService spec.model.source.sha256 pattern", UNINLU, &[("/spec/model/source/sha256", r#""abc""#)],
        "spec.model.source.sha256", SHA256_LOWER),
    case("NluService spec.model.source rule: sha256 checks a download: set it with huggingFace, modelScope or url, not pvc",
        GTE, &[("/spec/model/source/sha256", SHA256_LOWER)], "spec.model.source.sha256", Rule),
    limit("NluService spec.model.maxSequenceLength minimum", UNINLU, &[("/spec/model/maxSequenceLength", "7")], "spec.model.maxSequenceLength", "8"),
    limit("NluService spec.model.maxSequenceLength maximum", UNINLU, &[("/spec/model/maxSequenceLength", "8193")], "spec.model.maxSequenceLength", "8192"),
    // taskPresets: a ConfigMap key, for UniNLU only.
    case("NluService spec.model rule: taskPresets is for the uninlu task", GTE, &[("/spec/model/taskPresets", r#"{"configMap": "p"}"#)],
        "spec.model.taskPresets", Rule),
    case("NluService spec.model.taskPresets.configMap required", UNINLU, &[("/spec/model/taskPresets", r#"{"key": "p.json"}"#)],
        "spec.model.taskPresets.configMap", Required),
    limit("NluService spec.model.taskPresets.configMap minLength", UNINLU, &[("/spec/model/taskPresets", r#"{"configMap": ""}"#)],
        "spec.model.taskPresets.configMap", r#"{"configMap": "p"}"#),
    Case { expect: TooLong, at_limit: Some(LONG_NAME_AT_LIMIT),
        ..case("NluService spec.model.taskPresets.configMap maxLength", UNINLU,
        &[("/spec/model/taskPresets", r#"{"configMap": "p"}"#), ("/spec/model/taskPresets/configMap", LONG_NAME)],
        "spec.model.taskPresets.configMap", TooLong) },
    limit("NluService spec.model.taskPresets.key minLength", UNINLU, &[("/spec/model/taskPresets", r#"{"configMap": "p", "key": ""}"#)],
        "spec.model.taskPresets.key", r#"{"configMap": "p", "key": "p.json"}"#),
    Case { expect: TooLong, at_limit: Some(LONG_NAME_AT_LIMIT),
        ..case("NluService spec.model.taskPresets.key maxLength", UNINLU,
        &[("/spec/model/taskPresets", r#"{"configMap": "p"}"#), ("/spec/model/taskPresets/key", LONG_NAME)],
        "spec.model.taskPresets.key", TooLong) },
    limit("NluService spec.model.taskPresets.key pattern", UNINLU, &[("/spec/model/taskPresets", r#"{"configMap": "p", "key": "../x"}"#)],
        "spec.model.taskPresets.key", r#"{"configMap": "p", "key": "my_presets-1.json"}"#),
    limit("NluService spec.model.taskPresets.key pattern", UNINLU, &[("/spec/model/taskPresets", r#"{"configMap": "p", "key": ".."}"#)],
        "spec.model.taskPresets.key", r#"{"configMap": "p", "key": "p.json"}"#),
    case("NluService spec.model.pooling enum", GTE, &[("/spec/model/pooling", r#""max""#)], "spec.model.pooling", NotSupported),
    Case { at_limit: Some(r#""int8""#),
        ..case("NluService spec.model.dtype enum", GTE, &[("/spec/model/dtype", r#""fp16""#)], "spec.model.dtype", NotSupported) },
    // autoscaling
    case("NluService spec.autoscaling.minReplicas required", UNINLU, &[("/spec/autoscaling/minReplicas", "null")],
        "spec.autoscaling.minReplicas", Required),
    case("NluService spec.autoscaling.maxReplicas required", UNINLU, &[("/spec/autoscaling/maxReplicas", "null")],
        "spec.autoscaling.maxReplicas", Required),
    limit("NluService spec.autoscaling.minReplicas minimum", UNINLU, &[("/spec/autoscaling/minReplicas", "0")], "spec.autoscaling.minReplicas", "1"),
    limit("NluService spec.autoscaling.maxReplicas minimum", UNINLU, &[("/spec/autoscaling/minReplicas", "1"), ("/spec/autoscaling/maxReplicas", "0")],
        "spec.autoscaling.maxReplicas", "1"),
    Case { at_limit: Some("6"),
        ..case("NluService spec.autoscaling rule: minReplicas must not exceed maxReplicas",
        UNINLU, &[("/spec/autoscaling/minReplicas", "7")], "spec.autoscaling.minReplicas", Rule) },
    limit("NluService spec.autoscaling.targetCPUUtilizationPercentage minimum", UNINLU, &[("/spec/autoscaling/targetCPUUtilizationPercentage", "0")],
        "spec.autoscaling.targetCPUUtilizationPercentage", "1"),
    limit("NluService spec.autoscaling.targetCPUUtilizationPercentage maximum", UNINLU, &[("/spec/autoscaling/targetCPUUtilizationPercentage", "101")],
        "spec.autoscaling.targetCPUUtilizationPercentage", "100"),
    limit("NluService spec.autoscaling.targetInflightRequests minimum", UNINLU, &[("/spec/autoscaling/targetInflightRequests", "0")],
        "spec.autoscaling.targetInflightRequests", "1"),
    // batching
    limit("NluService spec.batching.maxBatchTokens minimum", UNINLU, &[("/spec/batching/maxBatchTokens", "15")], "spec.batching.maxBatchTokens", "16"),
    limit("NluService spec.batching.maxBatchRequests minimum", UNINLU, &[("/spec/batching/maxBatchRequests", "0")], "spec.batching.maxBatchRequests", "1"),
    limit("NluService spec.batching.maxWaitMillis minimum", UNINLU, &[("/spec/batching/maxWaitMillis", "-1")], "spec.batching.maxWaitMillis", "0"),
    limit("NluService spec.batching.maxWaitMillis maximum", UNINLU, &[("/spec/batching/maxWaitMillis", "1001")], "spec.batching.maxWaitMillis", "1000"),
    limit("NluService spec.batching.maxQueueTokens minimum", UNINLU, &[("/spec/batching/maxQueueTokens", "0")], "spec.batching.maxQueueTokens", "1"),
    // ingress
    case("NluService spec.ingress rule: tls needs a host", UNINLU, &[("/spec/ingress/host", "null")], "spec.ingress.host", Rule),
    case("NluService spec.ingress rule: tls needs a host", UNINLU, &[("/spec/ingress/host", r#""""#)], "spec.ingress.host", Rule),
    Case { at_limit: Some(r#""/api""#),
        ..case(INGRESS_PATH_RULE, UNINLU, &[("/spec/ingress/path", r#""api""#)], "spec.ingress.path", Rule) },
    case(INGRESS_PATH_RULE, UNINLU, &[("/spec/ingress/path", r#""/a/../b""#)], "spec.ingress.path", Rule),
    case(INGRESS_PATH_RULE, UNINLU, &[("/spec/ingress/path", r#""/a?x=1""#)], "spec.ingress.path", Rule),
    case(INGRESS_PATH_RULE, UNINLU, &[("/spec/ingress/path", r#""/a#top""#)], "spec.ingress.path", Rule),
    case(INGRESS_PATH_RULE, UNINLU, &[("/spec/ingress/path", r#""/a(.*)""#)], "spec.ingress.path", Rule),
    case(INGRESS_PATH_RULE, UNINLU, &[("/spec/ingress/path", r#""/a;b""#)], "spec.ingress.path", Rule),
    case(INGRESS_PATH_RULE, UNINLU, &[("/spec/ingress/path", r#""/${host}""#)], "spec.ingress.path", Rule),
    Case { expect: TooLong, at_limit: Some(LONG_PATH_AT_LIMIT),
        ..case("NluService spec.ingress.path maxLength", UNINLU, &[("/spec/ingress/path", LONG_PATH)], "spec.ingress.path", TooLong) },
    case("NluService spec.ingress.tls rule: set at most one of clusterIssuer or issuer", UNINLU, &[("/spec/ingress/tls/issuer", r#""ca""#)],
        "spec.ingress.tls", Rule),
    // auth
    Case { at_limit: Some(r#"{"mode": "none", "allowUnauthenticated": true}"#),
        ..case(UNAUTHENTICATED_RULE, UNINLU, &[("/spec/auth", r#"{"mode": "none"}"#)], "spec.auth", Rule) },
    case(UNAUTHENTICATED_RULE, UNINLU, &[("/spec/auth", r#"{"mode": "none", "allowUnauthenticated": false}"#)], "spec.auth", Rule),
    case("NluService spec.auth.mode enum", GTE, &[("/spec/auth/mode", r#""basic""#)], "spec.auth.mode", NotSupported),
    case("NluService spec.auth.failurePolicy enum", GTE, &[("/spec/auth/failurePolicy", r#""Sometimes""#)], "spec.auth.failurePolicy", NotSupported),
    case("NluService spec.auth.redis rule: exactly one of url or secretRef must be set",
        GTE, &[("/spec/auth/redis", r#"{"url": "redis://r:6379", "secretRef": {"name": "r"}}"#)], "spec.auth.redis", Rule),
    case("NluService spec.auth.redis rule: exactly one of url or secretRef must be set", GTE, &[("/spec/auth/redis", "{}")],
        "spec.auth.redis", Rule),
    Case { at_limit: Some(r#"{"url": "rediss+cluster://redis-0.example:6380,redis-1.example:6380"}"#),
        ..case("NluService spec.auth.redis.url rule: url must start with redis://, rediss://, redis+cluster:// or rediss+cluster://", GTE, &[("/spec/auth/redis", r#"{"url": "http://redis:6379"}"#)],
        "spec.auth.redis.url", Rule) },
    case("NluService spec.auth.redis.secretRef.name required", GTE, &[("/spec/auth/redis", r#"{"secretRef": {"key": "url"}}"#)],
        "spec.auth.redis.secretRef.name", Required),
    limit("NluService spec.auth.redis.secretRef.name minLength", GTE, &[("/spec/auth/redis", r#"{"secretRef": {"name": ""}}"#)],
        "spec.auth.redis.secretRef.name", r#"{"secretRef": {"name": "r"}}"#),
    // NluService: status (written through /status)
    case("NluService status.conditions listType map", UNINLU, &[("/status/conditions", DUPLICATE_READY)], "status.conditions[1]", Duplicate),
    case("NluService status.conditions[].type required", UNINLU, &[("/status/conditions/0/type", "null")], "status.conditions[0].type", Required),
    case("NluService status.conditions[].status required", UNINLU, &[("/status/conditions/0/status", "null")], "status.conditions[0].status", Required),
    case("NluService status.conditions[].reason required", UNINLU, &[("/status/conditions/0/reason", "null")], "status.conditions[0].reason", Required),
    case("NluService status.conditions[].message required", UNINLU, &[("/status/conditions/0/message", "null")], "status.conditions[0].message", Required),
    case("NluService status.conditions[].lastTransitionTime required", UNINLU, &[("/status/conditions/0/lastTransitionTime", "null")],
        "status.conditions[0].lastTransitionTime", Required),
    case("NluService status.conditions[].lastTransitionTime format date-time", UNINLU, &[("/status/conditions/0/lastTransitionTime", r#""yesterday""#)],
        "status.conditions[0].lastTransitionTime", Format),
    // Tenant: spec
    case("Tenant spec required", TENANT, &[("/spec", "null")], "spec", Required),
    case("Tenant spec.services required", TENANT, &[("/spec/services", "null")], "spec.services", Required),
    limit("Tenant spec.services minItems", TENANT, &[("/spec/services", "[]")], "spec.services", r#"["uninlu"]"#),
    case("Tenant spec.services listType set", TENANT, &[("/spec/services", r#"["uninlu", "uninlu"]"#)], "spec.services[1]", Duplicate),
    case("Tenant spec.scopes listType set", TENANT, &[("/spec/scopes", r#"["embed", "embed"]"#)], "spec.scopes[1]", Duplicate),
    // Every value of the enum is accepted, the per-task scopes of UniNLU included.
    Case { at_limit: Some(r#"["predict", "predict:ner", "predict:relation", "predict:event", "predict:sentiment",
                            "predict:classification", "predict:match", "predict:nli", "predict:mrc", "embed", "rerank"]"#),
        ..case("Tenant spec.scopes[] enum", TENANT, &[("/spec/scopes", r#"["predict:ner", "predict:summary"]"#)], "spec.scopes[1]", NotSupported) },
    Case { at_limit: Some("0"),
        ..case(PER_DAY_RULE, TENANT, &[("/spec/quota/requestsPerDay", "-1")], "spec.quota.requestsPerDay", Rule) },
    Case { at_limit: Some("999999999999999"),
        ..case(PER_DAY_RULE, TENANT, &[("/spec/quota/requestsPerDay", "1000000000000000")], "spec.quota.requestsPerDay", Rule) },
    Case { at_limit: Some("0"),
        ..case(PER_MINUTE_RULE, TENANT, &[("/spec/quota/requestsPerMinute", "-1")], "spec.quota.requestsPerMinute", Rule) },
    Case { at_limit: Some("999999999999999"),
        ..case(PER_MINUTE_RULE, TENANT, &[("/spec/quota/requestsPerMinute", "1000000000000000")], "spec.quota.requestsPerMinute", Rule) },
    Case { at_limit: Some("0"),
        ..case(TOKENS_PER_DAY_RULE, TENANT, &[("/spec/quota/tokensPerDay", "-1")], "spec.quota.tokensPerDay", Rule) },
    Case { at_limit: Some("999999999999999"),
        ..case(TOKENS_PER_DAY_RULE, TENANT, &[("/spec/quota/tokensPerDay", "1000000000000000")], "spec.quota.tokensPerDay", Rule) },
    Case { at_limit: Some("0"),
        ..case(TOKENS_PER_MINUTE_RULE, TENANT, &[("/spec/quota/tokensPerMinute", "-1")], "spec.quota.tokensPerMinute", Rule) },
    Case { at_limit: Some("999999999999999"),
        ..case(TOKENS_PER_MINUTE_RULE, TENANT, &[("/spec/quota/tokensPerMinute", "1000000000000000")], "spec.quota.tokensPerMinute", Rule) },
    limit("Tenant spec.quota.maxConcurrentRequests minimum", TENANT, &[("/spec/quota/maxConcurrentRequests", "-1")], "spec.quota.maxConcurrentRequests", "0"),
    limit("Tenant spec.quota.maxConcurrentRequests maximum", TENANT, &[("/spec/quota/maxConcurrentRequests", "1000001")], "spec.quota.maxConcurrentRequests", "1000000"),
    limit("Tenant spec.token.generation minimum", TENANT, &[("/spec/token/generation", "0")], "spec.token.generation", "1"),
    limit("Tenant spec.token.generation maximum", TENANT, &[("/spec/token/generation", "1000000000000000")], "spec.token.generation", "999999999999999"),
    Case { at_limit: Some(r#""5m""#),
        ..case(TTL_RULE, TENANT, &[("/spec/token/ttl", r#""4m59s""#)], "spec.token.ttl", Rule) },
    Case { at_limit: Some(r#""8760h""#),
        ..case(TTL_RULE, TENANT, &[("/spec/token/ttl", r#""8760h1s""#)], "spec.token.ttl", Rule) },
    // Tenant: spec.identity
    case("Tenant spec.identity.issuer required", TENANT, &[("/spec/identity", IDENTITY), ("/spec/identity/issuer", "null")], "spec.identity.issuer", Required),
    case("Tenant spec.identity.audience required", TENANT, &[("/spec/identity", IDENTITY), ("/spec/identity/audience", "null")], "spec.identity.audience", Required),
    case("Tenant spec.identity.claims required", TENANT, &[("/spec/identity", IDENTITY), ("/spec/identity/claims", "null")], "spec.identity.claims", Required),
    case("Tenant spec.identity.claims[].claim required", TENANT, &[("/spec/identity", IDENTITY), ("/spec/identity/claims/0/claim", "null")], "spec.identity.claims[0].claim", Required),
    limit("Tenant spec.identity.issuer minLength", TENANT, &[("/spec/identity", IDENTITY), ("/spec/identity/issuer", r#""https://""#)], "spec.identity.issuer", r#""https://a""#),
    Case { expect: TooLong, ..limit("Tenant spec.identity.issuer maxLength", TENANT, &[("/spec/identity", IDENTITY), ("/spec/identity/issuer", r#""https://aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa""#)], "spec.identity.issuer", r#""https://aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa""#) },
    limit("Tenant spec.identity.audience minLength", TENANT, &[("/spec/identity", IDENTITY), ("/spec/identity/audience", r#""""#)], "spec.identity.audience", r#""a""#),
    Case { expect: TooLong, ..limit("Tenant spec.identity.audience maxLength", TENANT, &[("/spec/identity", IDENTITY), ("/spec/identity/audience", r#""aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa""#)], "spec.identity.audience", r#""aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa""#) },
    limit("Tenant spec.identity.claims minItems", TENANT, &[("/spec/identity", IDENTITY), ("/spec/identity/claims", "[]")], "spec.identity.claims", r#"[{"claim": "azp", "equals": "app"}]"#),
    Case { expect: TooMany, ..limit("Tenant spec.identity.claims maxItems", TENANT, &[("/spec/identity", IDENTITY), ("/spec/identity/claims", r#"[{"claim":"azp","equals":"a"},{"claim":"azp","equals":"a"},{"claim":"azp","equals":"a"},{"claim":"azp","equals":"a"},{"claim":"azp","equals":"a"},{"claim":"azp","equals":"a"},{"claim":"azp","equals":"a"},{"claim":"azp","equals":"a"},{"claim":"azp","equals":"a"},{"claim":"azp","equals":"a"},{"claim":"azp","equals":"a"},{"claim":"azp","equals":"a"},{"claim":"azp","equals":"a"},{"claim":"azp","equals":"a"},{"claim":"azp","equals":"a"},{"claim":"azp","equals":"a"},{"claim":"azp","equals":"a"}]"#)], "spec.identity.claims", r#"[{"claim":"azp","equals":"a"},{"claim":"azp","equals":"a"},{"claim":"azp","equals":"a"},{"claim":"azp","equals":"a"},{"claim":"azp","equals":"a"},{"claim":"azp","equals":"a"},{"claim":"azp","equals":"a"},{"claim":"azp","equals":"a"},{"claim":"azp","equals":"a"},{"claim":"azp","equals":"a"},{"claim":"azp","equals":"a"},{"claim":"azp","equals":"a"},{"claim":"azp","equals":"a"},{"claim":"azp","equals":"a"},{"claim":"azp","equals":"a"},{"claim":"azp","equals":"a"}]"#) },
    limit("Tenant spec.identity.claims[].claim minLength", TENANT, &[("/spec/identity", IDENTITY), ("/spec/identity/claims/0/claim", r#""""#)], "spec.identity.claims[0].claim", r#""a""#),
    Case { expect: TooLong, ..limit("Tenant spec.identity.claims[].claim maxLength", TENANT, &[("/spec/identity", IDENTITY), ("/spec/identity/claims/0/claim", r#""ccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc""#)], "spec.identity.claims[0].claim", r#""cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc""#) },
    Case { expect: TooLong, ..limit("Tenant spec.identity.claims[].equals maxLength", TENANT, &[("/spec/identity", IDENTITY), ("/spec/identity/claims/0/equals", r#""vvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvv""#)], "spec.identity.claims[0].equals", r#""vvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvv""#) },
    Case { expect: TooLong, ..limit("Tenant spec.identity.claims[].contains maxLength", TENANT, &[("/spec/identity", IDENTITY), ("/spec/identity/claims/0/equals", "null"), ("/spec/identity/claims/0/contains", r#""vvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvv""#)], "spec.identity.claims[0].contains", r#""vvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvv""#) },
    Case { at_limit: Some(r#""http://127.0.0.1:5556/dex""#),
        ..case(ISSUER_RULE, TENANT, &[("/spec/identity", IDENTITY), ("/spec/identity/issuer", r#""http://idp.example""#)], "spec.identity.issuer", Rule) },
    Case { at_limit: Some(r#""http://[::1]""#),
        ..case(ISSUER_RULE, TENANT, &[("/spec/identity", IDENTITY), ("/spec/identity/issuer", r#""http://127.0.0.1.evil.example""#)], "spec.identity.issuer", Rule) },
    Case { at_limit: Some(r#"[{"claim": "groups", "contains": "team"}]"#),
        ..case(CLAIM_RULE, TENANT, &[("/spec/identity", IDENTITY), ("/spec/identity/claims", r#"[{"claim": "azp", "equals": "a", "contains": "a"}]"#)], "spec.identity.claims", Rule) },
    Case { at_limit: Some(r#"[{"claim": "azp", "equals": "a"}]"#),
        ..case(CLAIM_RULE, TENANT, &[("/spec/identity", IDENTITY), ("/spec/identity/claims", r#"[{"claim": "azp"}]"#)], "spec.identity.claims", Rule) },
    // Tenant: status
    case("Tenant status.conditions listType map", TENANT, &[("/status/conditions", DUPLICATE_READY)], "status.conditions[1]", Duplicate),
    case("Tenant status.conditions[].type required", TENANT, &[("/status/conditions/0/type", "null")], "status.conditions[0].type", Required),
    case("Tenant status.conditions[].status required", TENANT, &[("/status/conditions/0/status", "null")], "status.conditions[0].status", Required),
    case("Tenant status.conditions[].reason required", TENANT, &[("/status/conditions/0/reason", "null")], "status.conditions[0].reason", Required),
    case("Tenant status.conditions[].message required", TENANT, &[("/status/conditions/0/message", "null")], "status.conditions[0].message", Required),
    case("Tenant status.conditions[].lastTransitionTime required", TENANT, &[("/status/conditions/0/lastTransitionTime", "null")],
        "status.conditions[0].lastTransitionTime", Required),
    case("Tenant status.conditions[].lastTransitionTime format date-time", TENANT, &[("/status/conditions/0/lastTransitionTime", r#""yesterday""#)],
        "status.conditions[0].lastTransitionTime", Format),
    case("Tenant status.tokenExpiresAt format date-time", TENANT, &[("/status/tokenExpiresAt", r#""next month""#)], "status.tokenExpiresAt", Format),
    case("Tenant status.usage.date required", TENANT, &[("/status/usage/date", "null")], "status.usage.date", Required),
    case("Tenant status.usage.requests required", TENANT, &[("/status/usage/requests", "null")], "status.usage.requests", Required),
    case("Tenant status.usage.history[].date required", TENANT, &[("/status/usage/history/0/date", "null")], "status.usage.history[0].date", Required),
    case("Tenant status.usage.history[].requests required", TENANT, &[("/status/usage/history/0/requests", "null")], "status.usage.history[0].requests", Required),
    Case { expect: TooMany, at_limit: Some(LONG_HISTORY_AT_LIMIT),
        ..case("Tenant status.usage.history maxItems", TENANT, &[("/status/usage/history", LONG_HISTORY)], "status.usage.history", TooMany) },
    case("Tenant status.usage.history[].tokens required", TENANT, &[("/status/usage/history/0/tokens", "null")], "status.usage.history[0].tokens", Required),
];

/// Sites exercised by other tests of this binary (not refusals of a single object).
const COVERED_ELSEWHERE: &[&str] = &[
    // storage::tenant_generation_cannot_be_lowered
    "Tenant spec.token.generation rule: generation can only be raised (lowering it would revive revoked tokens)",
    // storage::server_fills_defaults
    "Tenant spec.suspended default",
    "NluService status.conditions default",
    "Tenant status.conditions default",
    "Tenant status.usage.tokens default",
];

const DUPLICATE_READY: &str = r#"[
    {"type": "Ready", "status": "True", "reason": "Up", "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"},
    {"type": "Ready", "status": "False", "reason": "Down", "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}]"#;

/// A valid status the status cases start from.
fn valid_status() -> Value {
    json!({
        "conditions": [{"type": "Ready", "status": "True", "reason": "Up", "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}],
        "tokenExpiresAt": "2026-12-01T00:00:00Z",
        "usage": {"date": "2026-11-23", "requests": 1,
                  "history": [{"date": "2026-11-22", "requests": 3, "tokens": 40, "refused": {"scope": 1}}]},
    })
}

const NAMESPACE: &str = "validation";

#[tokio::test]
async fn every_constraint_rejects_a_violation_with_its_field_and_message() {
    let Some(server) = nlu_testkit::api_server() else {
        return;
    };
    let client = server.client().await;
    let mut failures = Vec::new();
    for (index, case) in CASES.iter().enumerate() {
        if let Err(failure) = run(&client, index, case).await {
            failures.push(format!("{}: {failure}", case.site));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        CASES.len(),
        failures.join("\n")
    );
}

async fn run(client: &kube::Client, index: usize, case: &Case) -> Result<(), String> {
    let name = format!("case-{index}");
    let base = placed(sample(case.base), NAMESPACE, &name);
    let (status_edits, spec_edits): (Vec<_>, Vec<_>) = case
        .edits
        .iter()
        .partition(|(pointer, _)| pointer.starts_with("/status"));
    let object = edited(base, &spec_edits);
    let last = case.edits.last().expect("a case edits something").0;

    if status_edits.is_empty() {
        check(case, create(client, &object).await)?;
        if let Some(value) = case.at_limit {
            let at_limit = with(
                placed(object, NAMESPACE, &format!("{name}-limit")),
                last,
                parse(value),
            );
            let (code, answer) = create(client, &at_limit).await;
            expect_ok(code, StatusCode::CREATED, &answer)?;
        }
    } else {
        let created = create_ok(client, &object).await;
        let bad = edited(
            with(created.clone(), "/status", valid_status()),
            &status_edits,
        );
        check(case, replace(client, &bad, Some("status")).await)?;
        if let Some(value) = case.at_limit {
            let (code, answer) =
                replace(client, &with(bad, last, parse(value)), Some("status")).await;
            expect_ok(code, StatusCode::OK, &answer)?;
        }
    }
    Ok(())
}

fn edited(object: Value, edits: &[&(&str, &str)]) -> Value {
    edits.iter().fold(object, |object, (pointer, value)| {
        with(object, pointer, parse(value))
    })
}

fn parse(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("case value {text:?}: {e}"))
}

fn expect_ok(code: StatusCode, want: StatusCode, answer: &Value) -> Result<(), String> {
    if code == want {
        Ok(())
    } else {
        Err(format!(
            "the value at the limit was refused ({code}): {}",
            answer["message"]
        ))
    }
}

/// The refusal must be a 422 with a cause for the case's field, of the expected kind.
fn check(case: &Case, (code, answer): (StatusCode, Value)) -> Result<(), String> {
    if code != StatusCode::UNPROCESSABLE_ENTITY {
        return Err(format!("expected 422, got {code}: {answer}"));
    }
    let (reason, message) = match case.expect {
        Required => ("FieldValueRequired", None),
        NotSupported => ("FieldValueNotSupported", None),
        Duplicate => ("FieldValueDuplicate", None),
        Invalid => ("FieldValueInvalid", None),
        TooLong => ("FieldValueTooLong", None),
        TooMany => ("FieldValueTooMany", None),
        Format => ("FieldValueTypeInvalid", None),
        Rule => (
            "FieldValueInvalid",
            Some(case.site.split_once(" rule: ").expect("rule site").1),
        ),
    };
    let causes = causes(&answer);
    let found = causes.iter().any(|(r, field, text)| {
        r == reason && field == case.field && message.is_none_or(|m| text.contains(m))
    });
    if found {
        Ok(())
    } else {
        Err(format!(
            "no {reason} cause for {}{}; causes: {causes:?}",
            case.field,
            message.map(|m| format!(" with {m:?}")).unwrap_or_default()
        ))
    }
}

#[test]
fn history_limit_is_the_flag_bound() {
    let max = nlu_crds::tenant::MAX_USAGE_HISTORY_DAYS;
    let days = |text| parse(text).as_array().map_or(0, Vec::len) as u64;
    assert_eq!(days(LONG_HISTORY_AT_LIMIT), max);
    assert_eq!(days(LONG_HISTORY), max + 1);
}

#[test]
fn every_constraint_of_the_crds_has_a_case() {
    let mut in_crds = BTreeSet::new();
    for file in ["nluservices.nlu.dev.yaml", "tenants.nlu.dev.yaml"] {
        let text = std::fs::read_to_string(root().join("manifests/crds").join(file)).unwrap();
        let crd: Value = serde_yaml::from_str(&text).unwrap();
        let kind = crd["spec"]["names"]["kind"].as_str().unwrap().to_owned();
        constraint_sites(
            &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"],
            &kind,
            "",
            &mut in_crds,
        );
    }
    let tested: BTreeSet<String> = CASES
        .iter()
        .map(|c| c.site)
        .chain(COVERED_ELSEWHERE.iter().copied())
        .map(String::from)
        .collect();
    let untested: Vec<_> = in_crds.difference(&tested).collect();
    let stale: Vec<_> = tested.difference(&in_crds).collect();
    assert!(
        untested.is_empty(),
        "constraints without a case: {untested:#?}"
    );
    assert!(
        stale.is_empty(),
        "cases for constraints the CRDs no longer have: {stale:#?}"
    );
}

/// Names every constraint of a schema node and its children: `<Kind> <path> <constraint>`.
/// Types alone are not listed (every case would break them), nor integer formats (not enforced).
fn constraint_sites(node: &Value, kind: &str, path: &str, out: &mut BTreeSet<String>) {
    let mut add = |what: String| {
        out.insert(format!("{kind} {path} {what}"));
    };
    for keyword in [
        "minimum",
        "maximum",
        "minLength",
        "maxLength",
        "minItems",
        "maxItems",
        "pattern",
        "enum",
        "default",
    ] {
        if node.get(keyword).is_some() {
            add(keyword.to_owned());
        }
    }
    if node["format"] == "date-time" {
        add("format date-time".to_owned());
    }
    if node
        .get("x-kubernetes-list-type")
        .is_some_and(|t| t != "atomic")
    {
        add(format!(
            "listType {}",
            node["x-kubernetes-list-type"].as_str().unwrap_or_default()
        ));
    }
    for rule in node["x-kubernetes-validations"]
        .as_array()
        .into_iter()
        .flatten()
    {
        add(format!(
            "rule: {}",
            rule["message"]
                .as_str()
                .unwrap_or_else(|| panic!("{kind} {path}: a CEL rule without a message"))
        ));
    }
    let child = |name: &str| {
        if path.is_empty() {
            name.to_owned()
        } else {
            format!("{path}.{name}")
        }
    };
    for required in node["required"].as_array().into_iter().flatten() {
        out.insert(format!(
            "{kind} {} required",
            child(required.as_str().unwrap())
        ));
    }
    for (name, property) in node["properties"].as_object().into_iter().flatten() {
        constraint_sites(property, kind, &child(name), out);
    }
    if let Some(items) = node.get("items") {
        constraint_sites(items, kind, &format!("{path}[]"), out);
    }
    if let Some(values) = node.get("additionalProperties").filter(|v| v.is_object()) {
        constraint_sites(values, kind, &format!("{path}{{}}"), out);
    }
}
