//! Operator configuration: every flag has an `NLU_OPERATOR_*` variable. [`OperatorConfig`] is
//! what the controllers read; [`RunArgs`] adds the process-level flags of `nlu-operator run`.

use std::net::SocketAddr;

use clap::{Args, ValueEnum};
use nlu_crds::access::redis_keys::{DEFAULT_USAGE_RETENTION_DAYS, MAX_USAGE_RETENTION_DAYS};
use nlu_crds::tenant::MAX_USAGE_HISTORY_DAYS;

/// Settings the controllers and pure builders read.
#[derive(Args, Clone, Debug, PartialEq)]
pub struct OperatorConfig {
    /// Default nlu-server image of the inference pods (an NluService may override it).
    #[arg(long, env = "NLU_OPERATOR_IMAGE", default_value = DEFAULT_IMAGE)]
    pub image: String,

    /// Only watch this namespace (default: all namespaces).
    #[arg(long, env = "NLU_OPERATOR_WATCH_NAMESPACE")]
    pub namespace: Option<String>,

    /// Namespace the operator runs in: holds its signing key and its leader-election Lease.
    #[arg(long, env = "NLU_OPERATOR_NAMESPACE", default_value = "nlu-system")]
    pub operator_namespace: String,

    /// Namespace of the ingress controller; the NetworkPolicy lets it reach the http port.
    #[arg(
        long,
        env = "NLU_OPERATOR_INGRESS_NAMESPACE",
        default_value = "ingress-nginx"
    )]
    pub ingress_namespace: String,

    /// Namespace of the Prometheus scraper; the NetworkPolicy lets it reach the metrics port.
    #[arg(
        long,
        env = "NLU_OPERATOR_MONITORING_NAMESPACE",
        default_value = "monitoring"
    )]
    pub monitoring_namespace: String,

    /// Secret (in each NluService's namespace, key `url`) holding the Redis URL, used when an
    /// NluService with auth on names no Redis of its own.
    #[arg(
        long,
        env = "NLU_OPERATOR_DEFAULT_REDIS_SECRET",
        default_value = "nlu-redis"
    )]
    pub default_redis_secret: String,

    /// TCP port of the Redis server(s), opened in the NetworkPolicy's egress rules.
    #[arg(long, env = "NLU_OPERATOR_REDIS_PORT", default_value_t = 6379)]
    pub redis_port: u16,

    /// Namespace of the pods of the operator's Redis (--redis-url, e.g. the chart's in-cluster
    /// Redis). With --redis-pod-labels, servers that use that Redis may reach only those pods
    /// (NetworkPolicy egress) instead of any address on --redis-port.
    #[arg(
        long,
        env = "NLU_OPERATOR_REDIS_NAMESPACE",
        requires = "redis_pod_labels"
    )]
    pub redis_namespace: Option<String>,

    /// Labels of those pods, `key=value,key=value` (see --redis-namespace).
    #[arg(long, env = "NLU_OPERATOR_REDIS_POD_LABELS", value_delimiter = ',', value_parser = label_pair, requires = "redis_namespace")]
    pub redis_pod_labels: Vec<(String, String)>,

    /// Redis URL the operator itself uses to write tenant records (Tenant controller):
    /// `redis://`, `rediss://`, or a Redis Cluster as `redis+cluster://host:port,host:port`
    /// (`rediss+cluster://` for TLS).
    #[arg(long, env = "NLU_OPERATOR_REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,

    /// PEM file of the CA certificates to trust for a TLS --redis-url (default: the
    /// system's roots); the servers' counterpart is `--redis-ca-file` too.
    #[arg(long, env = "NLU_OPERATOR_REDIS_CA_FILE")]
    pub redis_ca_file: Option<std::path::PathBuf>,

    /// PEM file of the CA certificates to trust when reading the tenants' identity providers
    /// (`Tenant.spec.identity`: their discovery documents and JWK Sets), instead of the
    /// system's roots. Proxies come from `HTTPS_PROXY`/`ALL_PROXY`/`NO_PROXY`.
    #[arg(long, env = "NLU_OPERATOR_IDENTITY_CA_FILE")]
    pub identity_ca_file: Option<std::path::PathBuf>,

    /// Identity providers a Tenant's `spec.identity.issuer` may name, comma-separated: an issuer
    /// URL, or a prefix ending in `/` that allows every issuer under it
    /// (`https://login.example.com/realms/`). The operator reads no other issuer (whoever may
    /// write a Tenant chooses the URL the operator fetches). Default: any.
    #[arg(long, env = "NLU_OPERATOR_ALLOWED_IDENTITY_ISSUERS", value_delimiter = ',', value_parser = list_entry)]
    pub allowed_identity_issuers: Vec<String>,

    /// Longest lifetime of a token the operator issues, whatever a Tenant's `spec.token.ttl`
    /// asks for (`90m`, `24h`, `720h`): bounds how long a token lives after a signing key leaks.
    /// Keep it at most the servers' `--max-token-lifetime`.
    #[arg(long, env = "NLU_OPERATOR_MAX_TOKEN_TTL", default_value = "8760h", value_parser = parse_duration)]
    pub max_token_ttl: std::time::Duration,

    /// Days each day's usage of a tenant (requests, tokens, refusals by reason) stays in Redis,
    /// 1 to 366: written into every tenant record, the servers' quota script sets it as the
    /// usage hash's lifetime. `nlu-operator usage` reads that far back.
    #[arg(long, env = "NLU_OPERATOR_USAGE_RETENTION_DAYS", default_value_t = DEFAULT_USAGE_RETENTION_DAYS, value_parser = clap::value_parser!(u64).range(1..=MAX_USAGE_RETENTION_DAYS))]
    pub usage_retention_days: u64,

    /// Days before today shown in `Tenant.status.usage.history`, 0 to 31 (no more than
    /// --usage-retention-days are kept).
    #[arg(long, env = "NLU_OPERATOR_USAGE_HISTORY_DAYS", default_value_t = 7, value_parser = clap::value_parser!(u64).range(0..=MAX_USAGE_HISTORY_DAYS))]
    pub usage_history_days: u64,

    /// Most tenants whose usage the operator exports as metrics (`nlu_operator_tenant_*`, one
    /// series per tenant and reason); tenants beyond it are counted in
    /// `nlu_operator_tenant_usage_unexported`. Bounds the metrics' cardinality; 0 exports none.
    #[arg(
        long,
        env = "NLU_OPERATOR_USAGE_METRICS_TENANTS",
        default_value_t = 1000
    )]
    pub usage_metrics_tenants: usize,

    /// Most Tenant reconciles running at once (1 to 1000). Unbounded, thousands of Tenants
    /// (an operator start, a key rotation) would send all their requests at once and the API
    /// server would time them out (docs/operator.md, "Sizing").
    #[arg(long, env = "NLU_OPERATOR_TENANT_CONCURRENCY", default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub tenant_concurrency: u16,

    /// Prefix of every Redis key (must match the servers' `--redis-prefix`).
    #[arg(long, env = "NLU_OPERATOR_REDIS_PREFIX", default_value = nlu_crds::access::redis_keys::DEFAULT_PREFIX, value_parser = nlu_crds::access::redis_keys::prefix)]
    pub redis_prefix: String,

    #[command(flatten)]
    pub policy: Policy,
}

/// What an NluService may ask for (`nlu_service::policy` decides; a refusal is `Degraded`
/// naming the flag). Lists are comma-separated; `*` in a list allows anything.
#[derive(Args, Clone, Debug, PartialEq)]
pub struct Policy {
    /// Image repositories `spec.image` may name (`<repository>:<tag>` or
    /// `<repository>@sha256:<digest>`); an entry ending in `/` allows every repository under it.
    /// Default: the repository of --image only.
    #[arg(long, env = "NLU_OPERATOR_ALLOWED_IMAGE_REPOSITORIES", value_delimiter = ',', value_parser = image_repository_entry)]
    pub allowed_image_repositories: Vec<String>,

    /// IngressClasses `spec.ingress.className` may name (unset, the cluster's default class, is
    /// always allowed). Default: any.
    #[arg(long, env = "NLU_OPERATOR_ALLOWED_INGRESS_CLASSES", value_delimiter = ',', value_parser = list_entry)]
    pub allowed_ingress_classes: Vec<String>,

    /// cert-manager issuers `spec.ingress.tls` may name: `<name>` or `ClusterIssuer/<name>` for
    /// a ClusterIssuer, `Issuer/<name>` for an Issuer of the service's namespace. Default: any.
    #[arg(long, env = "NLU_OPERATOR_ALLOWED_ISSUERS", value_delimiter = ',', value_parser = issuer_entry)]
    pub allowed_issuers: Vec<String>,

    /// Host names `spec.ingress.host` may be: a suffix itself or a name under it
    /// (`example.com` allows `example.com` and `nlu.example.com`); when set, the host is
    /// required. Default: any.
    #[arg(long, env = "NLU_OPERATOR_ALLOWED_HOST_SUFFIXES", value_delimiter = ',', value_parser = host_suffix_entry)]
    pub allowed_host_suffixes: Vec<String>,

    /// Whether `spec.nodeSelector` and `spec.tolerations` may be set (`false`: services are
    /// scheduled where the cluster's defaults put them).
    #[arg(long, env = "NLU_OPERATOR_ALLOW_SCHEDULING_OVERRIDES", action = clap::ArgAction::Set, default_value_t = true)]
    pub allow_scheduling_overrides: bool,
}

impl Default for Policy {
    /// The flag defaults: the operator's own image repository, anything else allowed.
    fn default() -> Self {
        Self {
            allowed_image_repositories: Vec::new(),
            allowed_ingress_classes: Vec::new(),
            allowed_issuers: Vec::new(),
            allowed_host_suffixes: Vec::new(),
            allow_scheduling_overrides: true,
        }
    }
}

/// One `key=value` label of --redis-pod-labels.
fn label_pair(s: &str) -> Result<(String, String), String> {
    match s.trim().split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err(format!("{s:?} is not key=value")),
    }
}

/// One entry of a policy list: trimmed, not empty.
fn list_entry(s: &str) -> Result<String, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("an empty entry (two commas, or a trailing one)".into());
    }
    Ok(s.to_owned())
}

/// A repository (`ghcr.io/nlu-dev/nlu-server`), a prefix of repositories ending in `/`, or `*`;
/// never a tag or digest, which would read as a pin the check does not make.
fn image_repository_entry(s: &str) -> Result<String, String> {
    let s = list_entry(s)?;
    let repository = s.strip_suffix('/').unwrap_or(&s);
    if s == "*" || crate::nlu_service::policy::image_repository(repository) == Some(repository) {
        return Ok(s);
    }
    Err(format!(
        "{s:?} is not an image repository such as ghcr.io/nlu-dev/nlu-server (no tag or digest)"
    ))
}

/// `<name>`, `ClusterIssuer/<name>`, `Issuer/<name>` or `*`.
fn issuer_entry(s: &str) -> Result<String, String> {
    let s = list_entry(s)?;
    match s.split_once('/') {
        Some(("ClusterIssuer" | "Issuer", name)) if !name.is_empty() && !name.contains('/') => {
            Ok(s)
        }
        None => Ok(s),
        _ => Err(format!(
            "{s:?} is not <name>, ClusterIssuer/<name> or Issuer/<name>"
        )),
    }
}

/// A DNS suffix, lower-cased, without a leading dot; or `*`.
fn host_suffix_entry(s: &str) -> Result<String, String> {
    let s = list_entry(s)?.to_ascii_lowercase();
    let suffix = s.strip_prefix('.').unwrap_or(&s);
    let label_ok =
        |l: &str| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if s == "*" || suffix.split('.').all(label_ok) {
        return Ok(suffix.to_owned());
    }
    Err(format!("{s:?} is not a DNS name such as example.com"))
}

/// Image used when neither `--image` nor the NluService names one.
pub const DEFAULT_IMAGE: &str = "ghcr.io/nlu-dev/nlu-server:0.1.0";

impl Default for OperatorConfig {
    /// The flag defaults, for tests and benches.
    fn default() -> Self {
        Self {
            image: DEFAULT_IMAGE.into(),
            namespace: None,
            operator_namespace: "nlu-system".into(),
            ingress_namespace: "ingress-nginx".into(),
            monitoring_namespace: "monitoring".into(),
            default_redis_secret: "nlu-redis".into(),
            redis_port: 6379,
            redis_namespace: None,
            redis_pod_labels: Vec::new(),
            redis_url: None,
            redis_ca_file: None,
            identity_ca_file: None,
            allowed_identity_issuers: Vec::new(),
            redis_prefix: nlu_crds::access::redis_keys::DEFAULT_PREFIX.into(),
            max_token_ttl: nlu_crds::tenant::MAX_TOKEN_TTL,
            usage_retention_days: DEFAULT_USAGE_RETENTION_DAYS,
            usage_history_days: 7,
            usage_metrics_tenants: 1000,
            tenant_concurrency: 16,
            policy: Policy::default(),
        }
    }
}

/// A duration as Kubernetes writes them (`90m`, `24h`), at least a second.
fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let d: std::time::Duration = s
        .parse::<kube::core::Duration>()
        .map_err(|e| format!("{s:?}: {e}"))?
        .into();
    if d < std::time::Duration::from_secs(1) {
        return Err(format!("{s:?} is shorter than a second"));
    }
    Ok(d)
}

/// Log line format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line (for log collectors).
    Json,
    /// Human-readable lines.
    Text,
}

/// Flags of `nlu-operator run`.
#[derive(Args, Clone, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub operator: OperatorConfig,

    /// Address of the admin server (/healthz, /readyz, /metrics).
    #[arg(
        long,
        env = "NLU_OPERATOR_ADMIN_LISTEN",
        default_value = "0.0.0.0:8081"
    )]
    pub admin_listen: SocketAddr,

    /// Run the controllers only while holding a Lease, so several replicas can stand by.
    #[arg(long, env = "NLU_OPERATOR_LEADER_ELECT")]
    pub leader_elect: bool,

    /// Name of the leader-election Lease in the operator namespace.
    #[arg(long, env = "NLU_OPERATOR_LEASE_NAME", default_value = "nlu-operator")]
    pub lease_name: String,

    /// Identity in the Lease (default: the pod name from $HOSTNAME).
    #[arg(long, env = "NLU_OPERATOR_IDENTITY")]
    pub identity: Option<String>,

    /// Log line format.
    #[arg(
        long,
        env = "NLU_OPERATOR_LOG_FORMAT",
        value_enum,
        default_value = "json"
    )]
    pub log_format: LogFormat,
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        config: OperatorConfig,
    }

    /// The defaults are written twice (clap's text, `Default` for tests): they must agree.
    #[test]
    fn flag_defaults_are_the_default_config() {
        let parsed = Cli::try_parse_from(["nlu-operator"]).unwrap().config;
        assert_eq!(parsed, OperatorConfig::default());
        assert!(Cli::try_parse_from(["nlu-operator", "--max-token-ttl", "0s"]).is_err());
        let capped = Cli::try_parse_from(["nlu-operator", "--max-token-ttl", "24h"]).unwrap();
        assert_eq!(capped.config.max_token_ttl.as_secs(), 24 * 3600);
    }

    /// The chart passes both Redis pod flags as rendered; one without the other is refused.
    #[test]
    fn redis_pods_are_a_namespace_and_labels_together() {
        let parsed = Cli::try_parse_from([
            "nlu-operator",
            "--redis-namespace=nlu-system",
            "--redis-pod-labels=app.kubernetes.io/name=nlu-operator,app.kubernetes.io/component=redis",
        ])
        .unwrap()
        .config;
        assert_eq!(parsed.redis_namespace.as_deref(), Some("nlu-system"));
        assert_eq!(
            parsed.redis_pod_labels,
            [
                (
                    "app.kubernetes.io/name".to_owned(),
                    "nlu-operator".to_owned()
                ),
                ("app.kubernetes.io/component".to_owned(), "redis".to_owned())
            ]
        );
        assert!(Cli::try_parse_from(["nlu-operator", "--redis-namespace=x"]).is_err());
        assert!(Cli::try_parse_from(["nlu-operator", "--redis-pod-labels=a=b"]).is_err());
        assert!(Cli::try_parse_from([
            "nlu-operator",
            "--redis-namespace=x",
            "--redis-pod-labels=novalue"
        ])
        .is_err());
    }

    #[test]
    fn policy_flags_are_comma_lists_checked_at_start() {
        let parse = |args: &[&str]| {
            Cli::try_parse_from(["nlu-operator"].iter().chain(args)).map(|c| c.config.policy)
        };
        let policy = parse(&[
            "--allowed-image-repositories=registry.internal/nlu/, ghcr.io/x/nlu-server",
            "--allowed-ingress-classes=nginx,internal",
            "--allowed-issuers=letsencrypt,Issuer/team-ca,ClusterIssuer/ca",
            "--allowed-host-suffixes=.Example.com,nlu.internal",
            "--allow-scheduling-overrides=false",
        ])
        .unwrap();
        assert_eq!(
            policy,
            Policy {
                allowed_image_repositories: vec![
                    "registry.internal/nlu/".into(),
                    "ghcr.io/x/nlu-server".into()
                ],
                allowed_ingress_classes: vec!["nginx".into(), "internal".into()],
                allowed_issuers: vec![
                    "letsencrypt".into(),
                    "Issuer/team-ca".into(),
                    "ClusterIssuer/ca".into()
                ],
                allowed_host_suffixes: vec!["example.com".into(), "nlu.internal".into()],
                allow_scheduling_overrides: false,
            }
        );
        for bad in [
            "--allowed-image-repositories=ghcr.io/x/nlu-server:1.0",
            "--allowed-image-repositories=ghcr.io/x/nlu-server@sha256:00",
            "--allowed-image-repositories=a,,b",
            "--allowed-issuers=Certificate/x",
            "--allowed-issuers=Issuer/",
            "--allowed-host-suffixes=*.example.com",
            "--allowed-host-suffixes=exa mple.com",
            "--allow-scheduling-overrides=maybe",
        ] {
            assert!(parse(&[bad]).is_err(), "{bad} accepted");
        }
    }
}
