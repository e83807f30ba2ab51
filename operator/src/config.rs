//! Operator configuration: every flag has an `NLU_OPERATOR_*` variable. [`OperatorConfig`] is
//! what the controllers read; [`RunArgs`] adds the process-level flags of `nlu-operator run`.

use std::net::SocketAddr;

use clap::{Args, ValueEnum};

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

    /// Redis URL the operator itself uses to write tenant records (Tenant controller):
    /// `redis://`, `rediss://`, or a Redis Cluster as `redis+cluster://host:port,host:port`
    /// (`rediss+cluster://` for TLS).
    #[arg(long, env = "NLU_OPERATOR_REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,

    /// PEM file of the CA certificates to trust for a TLS --redis-url (default: the
    /// system's roots); the servers' counterpart is `--redis-ca-file` too.
    #[arg(long, env = "NLU_OPERATOR_REDIS_CA_FILE")]
    pub redis_ca_file: Option<std::path::PathBuf>,

    /// Longest lifetime of a token the operator issues, whatever a Tenant's `spec.token.ttl`
    /// asks for (`90m`, `24h`, `720h`): bounds how long a token lives after a signing key leaks.
    /// Keep it at most the servers' `--max-token-lifetime`.
    #[arg(long, env = "NLU_OPERATOR_MAX_TOKEN_TTL", default_value = "8760h", value_parser = parse_duration)]
    pub max_token_ttl: std::time::Duration,

    /// Prefix of every Redis key (must match the servers' `--redis-prefix`).
    #[arg(long, env = "NLU_OPERATOR_REDIS_PREFIX", default_value = nlu_crds::access::redis_keys::DEFAULT_PREFIX, value_parser = nlu_crds::access::redis_keys::prefix)]
    pub redis_prefix: String,
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
            redis_url: None,
            redis_ca_file: None,
            redis_prefix: nlu_crds::access::redis_keys::DEFAULT_PREFIX.into(),
            max_token_ttl: nlu_crds::tenant::MAX_TOKEN_TTL,
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
}
