//! The operator-server contract of a pod: the `nlu-server serve` command line the operator
//! writes and the server parses, and the metric names the operator's children refer to.
//!
//! Kube-free, so the server builds it. The shared enums are defined here once: the CRD derives
//! their schema (feature `crd`), the server's command line derives their flag values (feature
//! `cli`); serde names and flag values are the same lowercase/kebab words.
//! `inference-server/tests/contract/serve_flags.rs` parses every operator snapshot's arguments
//! with the server's own parser, so a flag renamed on one side only fails a test.

use serde::{Deserialize, Serialize};

/// Prefix of every metric the server exports.
pub const METRICS_PREFIX: &str = "nlu";
/// The in-flight requests gauge, as registered under [`METRICS_PREFIX`].
pub const IN_FLIGHT_REQUESTS: &str = "in_flight_requests";

/// The exported (Prometheus) name of a server metric registered as `name`.
pub fn exported_metric(name: &str) -> String {
    format!("{METRICS_PREFIX}_{name}")
}

/// Default of `--max-batch-tokens`: token positions in one model batch.
pub const DEFAULT_MAX_BATCH_TOKENS: usize = 16_384;
/// Default of `--max-queue-tokens`: token positions of the requests in flight.
pub const DEFAULT_MAX_QUEUE_TOKENS: usize = 524_288;

/// What a server's memory comes to, for a base-size model (hidden 768, the largest this
/// project ships). Estimates from the tensor shapes, not measurements (docs/server.md, "Memory
/// and abandoned work").
pub mod memory {
    /// The model's weights and the runtime: also what the operator requests.
    pub const BASE_BYTES: u64 = 1 << 30;
    /// Activations per position of a running batch (the attention scores and the 4x
    /// intermediate layer dominate).
    pub const BATCH_BYTES_PER_TOKEN: u64 = 64 << 10;
    /// What a position in flight holds between batches: its hidden state (768 x 4 bytes).
    pub const IN_FLIGHT_BYTES_PER_TOKEN: u64 = 3 << 10;

    /// The most memory a server needs with these batching settings (`None`: the default), in
    /// MiB rounded up: the limit the operator puts on the container.
    pub fn limit_mib(max_batch_tokens: Option<i32>, max_queue_tokens: Option<i32>) -> u64 {
        let tokens = |set: Option<i32>, default: usize| {
            set.map_or(default as u64, |n| u64::try_from(n).unwrap_or(0))
        };
        let bytes = BASE_BYTES
            + tokens(max_batch_tokens, super::DEFAULT_MAX_BATCH_TOKENS) * BATCH_BYTES_PER_TOKEN
            + tokens(max_queue_tokens, super::DEFAULT_MAX_QUEUE_TOKENS) * IN_FLIGHT_BYTES_PER_TOKEN;
        bytes.div_ceil(1 << 20)
    }
}

/// Model downloads (`nlu-server download`, the init container of a downloaded model): the size
/// cap, the checksum's form, and the volume sizes the operator derives from them.
pub mod download {
    /// Default of `--max-download-bytes`: what one download may write. A hub model's files
    /// together; a `--url` archive, and again its unpacked contents. Base and large BERT models
    /// are 0.4 to 1.3 GB.
    pub const DEFAULT_MAX_BYTES: u64 = 4 << 30;
    /// What `spec.model.source.sha256` and `--sha256` accept: a SHA-256 as 64 lowercase hex
    /// digits (what `sha256sum` prints and the hubs show for a file).
    pub const SHA256_PATTERN: &str = "^[0-9a-f]{64}$";
    /// Room on the model volume besides the download itself (markers, the tokenizer and
    /// config files of a hub model are counted in the cap already).
    pub const VOLUME_SLACK_MIB: u64 = 64;
    /// `sizeLimit` of the pods' `/tmp` volume, in MiB: the server writes nothing big there.
    pub const TMP_VOLUME_MIB: u64 = 64;

    /// Whether `value` matches [`SHA256_PATTERN`].
    pub fn is_sha256(value: &str) -> bool {
        value.len() == 64
            && value
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    }

    /// `sizeLimit` of the model volume in MiB for a download capped at `max_bytes`: an archive
    /// and its unpacked folder lie there together until the archive is removed, so twice the cap.
    pub fn model_volume_mib(max_bytes: u64, archive: bool) -> u64 {
        let copies = if archive { 2 } else { 1 };
        (max_bytes.saturating_mul(copies)).div_ceil(1 << 20) + VOLUME_SLACK_MIB
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn checksums_are_64_lowercase_hex_digits() {
            assert!(is_sha256(&"0a".repeat(32)));
            assert!(!is_sha256(&"0A".repeat(32)));
            assert!(!is_sha256(&"0a".repeat(31)));
            assert!(!is_sha256(&format!("{}g", "0".repeat(63))));
        }

        #[test]
        fn the_model_volume_holds_the_download_and_an_archive_twice() {
            assert_eq!(model_volume_mib(DEFAULT_MAX_BYTES, false), 4096 + 64);
            assert_eq!(model_volume_mib(DEFAULT_MAX_BYTES, true), 8192 + 64);
            assert_eq!(model_volume_mib(1, false), 1 + 64);
        }
    }
}

/// The inference task of a service.
#[cfg_attr(feature = "crd", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Task {
    /// Universal NLU (NER, relations, events, sentiment, classification, matching, NLI, MRC).
    Uninlu,
    /// Sentence embeddings and similarity.
    Embedding,
    /// Reranking: a cross-encoder scores (query, passage) pairs.
    Rerank,
}

impl Task {
    /// The word of the `--task` flag and of `spec.model.task`.
    pub fn as_str(self) -> &'static str {
        match self {
            Task::Uninlu => "uninlu",
            Task::Embedding => "embedding",
            Task::Rerank => "rerank",
        }
    }
}

/// Number format of the weight matrices (`--dtype`, `spec.model.dtype`): `f32` (the default,
/// every CPU), `bf16` (CPUs with AMX-BF16) or `int8` (CPUs with AVX2; UniNLU spans near the
/// threshold may differ from f32's). Activations stay f32 between layers. Where the CPU lacks
/// what a format needs, the server logs a warning and runs f32; its `/info` and the
/// `nlu_model_info` metric say which runs.
#[cfg_attr(feature = "crd", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Dtype {
    /// 32-bit floats: the reference, on every CPU.
    #[default]
    F32,
    /// bfloat16 weights, products summed in f32, on CPUs with AMX-BF16 (Intel Sapphire Rapids
    /// and later); embeddings within cosine 0.999 of f32.
    Bf16,
    /// 8-bit weights (per output column) and 7-bit activations (per row), sums in i32, on CPUs
    /// with AVX2 (AVX-512 VNNI where present); embeddings within cosine 0.999 of f32. UniNLU
    /// spans near the 0.5 threshold can differ from f32's (docs/server.md, "int8").
    Int8,
}

impl Dtype {
    /// The word of the `--dtype` flag and of `spec.model.dtype`.
    pub fn as_str(self) -> &'static str {
        match self {
            Dtype::F32 => "f32",
            Dtype::Bf16 => "bf16",
            Dtype::Int8 => "int8",
        }
    }
}

impl std::fmt::Display for Dtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Embedding pooling over token states.
#[cfg_attr(feature = "crd", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Pooling {
    /// The `[CLS]` token's state (GTE).
    Cls,
    /// Mean of the token states, padding excluded (sentence-transformers).
    Mean,
}

/// Authentication mode.
#[cfg_attr(feature = "crd", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// Bearer JWTs signed by the operator, checked against Redis quotas.
    #[default]
    Jwt,
    /// No authentication: anyone who reaches the service may call it.
    None,
}

/// Behaviour while the quota backend is unreachable.
#[cfg_attr(feature = "crd", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum FailurePolicy {
    /// Refuse requests (503) and report not ready.
    #[default]
    FailClosed,
    /// Serve requests under a local per-pod rate limit.
    FailOpen,
}

/// Log line format.
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line (for log collectors).
    Json,
}

impl FailurePolicy {
    /// The word of the `--redis-failure-policy` flag.
    pub fn flag_value(self) -> &'static str {
        match self {
            FailurePolicy::FailClosed => "fail-closed",
            FailurePolicy::FailOpen => "fail-open",
        }
    }
}

impl Pooling {
    /// The word of the `--pooling` flag.
    pub fn as_str(self) -> &'static str {
        match self {
            Pooling::Cls => "cls",
            Pooling::Mean => "mean",
        }
    }
}

impl LogFormat {
    /// The word of the `--log-format` flag.
    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
}

/// What the operator sets on `nlu-server serve`; everything else keeps the server's default.
/// Numbers are the CRD's `i32`s, which the API server has already range-checked.
/// The Redis URL is not here: it reaches the pod as `NLU_REDIS_URL` ([`REDIS_URL_ENV`]) so it
/// never shows in the pod's arguments.
#[derive(Clone, Debug, PartialEq)]
pub struct ServeFlags {
    /// Model folder inside the pod.
    pub model: String,
    pub task: Task,
    /// `host:port` to listen on.
    pub listen: String,
    /// `host:port` of the private /metrics listener (`None`: /metrics on `listen`).
    pub metrics_listen: Option<String>,
    pub log_format: LogFormat,
    pub max_input_length: Option<i32>,
    pub pooling: Option<Pooling>,
    /// `None`: the server's default, f32.
    pub dtype: Option<Dtype>,
    pub max_batch_tokens: Option<i32>,
    pub max_batch_requests: Option<i32>,
    pub max_wait_millis: Option<i32>,
    pub max_queue_tokens: Option<i32>,
    /// `None`: `--auth none`.
    pub jwt: Option<JwtFlags>,
    /// The Ingress path the server is published under, when not `/`.
    pub path_prefix: Option<String>,
    pub playground: bool,
    /// UniNLU task types file inside the pod (`None`: the built-in ones).
    pub task_presets: Option<String>,
}

/// The flags of `--auth jwt`.
#[derive(Clone, Debug, PartialEq)]
pub struct JwtFlags {
    /// JWK Set file inside the pod.
    pub jwks: String,
    /// The tenants' identity providers' keys and mappings (`identities.json`) inside the pod.
    pub identities: Option<String>,
    /// `namespace/name` of the service (the tokens' audience).
    pub service_id: String,
    pub redis_prefix: String,
    pub redis_failure_policy: FailurePolicy,
}

/// Longest `--path-prefix` and `spec.ingress.path`.
pub const MAX_PATH_PREFIX: usize = 256;

/// `--path-prefix` (and `spec.ingress.path`, whose CEL rule says the same): an absolute path
/// such as `/uninlu` of letters, digits and `/ . _ ~ -`, without `..` (nothing an ingress
/// controller could read as a regular expression, a variable or a query); returned without its
/// trailing slashes. At most [`MAX_PATH_PREFIX`] bytes (the CRD's `maxLength`).
pub fn path_prefix(value: &str) -> Result<String, String> {
    if value.len() > MAX_PATH_PREFIX {
        return Err(format!(
            "{value:?} is longer than {MAX_PATH_PREFIX} characters"
        ));
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || "/._~-".contains(c);
    if !value.starts_with('/') || value.contains("..") || !value.chars().all(allowed) {
        return Err(format!(
            "{value:?} must be a path such as /uninlu: '/' then letters, digits and / . _ ~ -, without '..'"
        ));
    }
    Ok(value.trim_end_matches('/').to_owned())
}

/// The environment variable the server reads its Redis URL from.
pub const REDIS_URL_ENV: &str = "NLU_REDIS_URL";

impl ServeFlags {
    /// The arguments after the binary's name, starting with `serve`.
    pub fn to_args(&self) -> Vec<String> {
        let mut args: Vec<String> = vec!["serve".into()];
        let mut flag = |name: &str, value: Option<String>| {
            if let Some(value) = value {
                args.push(format!("--{name}"));
                args.push(value);
            }
        };
        let number = |n: Option<i32>| n.map(|n| n.to_string());
        flag("model", Some(self.model.clone()));
        flag("task", Some(self.task.as_str().into()));
        flag("listen", Some(self.listen.clone()));
        flag("metrics-listen", self.metrics_listen.clone());
        flag("log-format", Some(self.log_format.as_str().into()));
        flag("max-input-length", number(self.max_input_length));
        flag("pooling", self.pooling.map(|p| p.as_str().into()));
        flag("dtype", self.dtype.map(|d| d.as_str().into()));
        flag("max-batch-tokens", number(self.max_batch_tokens));
        flag("max-batch-requests", number(self.max_batch_requests));
        flag("max-wait-millis", number(self.max_wait_millis));
        flag("max-queue-tokens", number(self.max_queue_tokens));
        match &self.jwt {
            None => flag("auth", Some("none".into())),
            Some(jwt) => {
                flag("auth", Some("jwt".into()));
                flag("jwks", Some(jwt.jwks.clone()));
                flag("identities", jwt.identities.clone());
                flag("service-id", Some(jwt.service_id.clone()));
                flag("redis-prefix", Some(jwt.redis_prefix.clone()));
                flag(
                    "redis-failure-policy",
                    Some(jwt.redis_failure_policy.flag_value().into()),
                );
            }
        }
        flag("path-prefix", self.path_prefix.clone());
        flag("task-presets", self.task_presets.clone());
        if !self.playground {
            args.push("--no-playground".into());
        }
        args
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_memory_limit_grows_with_batch_and_queue() {
        // 1 GiB + 16384 x 64 KiB + 524288 x 3 KiB.
        assert_eq!(memory::limit_mib(None, None), 1024 + 1024 + 1536);
        assert_eq!(memory::limit_mib(Some(1024), Some(1024)), 1024 + 64 + 3);
        assert_eq!(
            memory::limit_mib(Some(1), Some(1)),
            1025,
            "rounded up to a MiB"
        );
    }

    #[test]
    fn exported_in_flight_metric_name() {
        assert_eq!(
            exported_metric(IN_FLIGHT_REQUESTS),
            "nlu_in_flight_requests"
        );
    }

    #[test]
    fn args_of_a_jwt_service() {
        let flags = ServeFlags {
            model: "/models".into(),
            task: Task::Embedding,
            listen: "0.0.0.0:8080".into(),
            metrics_listen: Some("0.0.0.0:9090".into()),
            log_format: LogFormat::Json,
            max_input_length: None,
            pooling: Some(Pooling::Mean),
            dtype: Some(Dtype::Int8),
            max_batch_tokens: None,
            max_batch_requests: Some(8),
            max_wait_millis: None,
            max_queue_tokens: None,
            jwt: Some(JwtFlags {
                jwks: "/etc/nlu/jwks/jwks.json".into(),
                identities: Some("/etc/nlu/jwks/identities.json".into()),
                service_id: "ns/svc".into(),
                redis_prefix: "nlu".into(),
                redis_failure_policy: FailurePolicy::FailOpen,
            }),
            path_prefix: Some("/gte".into()),
            playground: false,
            task_presets: Some("/etc/nlu/task-presets/p.json".into()),
        };
        let expected = "serve --model /models --task embedding --listen 0.0.0.0:8080 --metrics-listen 0.0.0.0:9090 \
            --log-format json --pooling mean --dtype int8 --max-batch-requests 8 --auth jwt \
            --jwks /etc/nlu/jwks/jwks.json --identities /etc/nlu/jwks/identities.json --service-id ns/svc --redis-prefix nlu \
            --redis-failure-policy fail-open --path-prefix /gte --task-presets /etc/nlu/task-presets/p.json \
            --no-playground";
        assert_eq!(flags.to_args().join(" "), expected);
    }

    #[test]
    fn path_prefixes_are_plain_absolute_paths() {
        assert_eq!(path_prefix("/uninlu/").as_deref(), Ok("/uninlu"));
        assert_eq!(path_prefix("/a/b").as_deref(), Ok("/a/b"));
        assert_eq!(path_prefix("/").as_deref(), Ok(""));
        assert_eq!(
            path_prefix("/v1.0/gte_a~b-c").as_deref(),
            Ok("/v1.0/gte_a~b-c")
        );
        for bad in [
            "uninlu", "", "/a/../b", "/a?x=1", "/a#top", "/a(.*)", "/a$1", "/a b", "/a;b", "/{a}",
            "/ü",
        ] {
            assert!(path_prefix(bad).is_err(), "{bad:?} accepted");
        }
    }
}
