//! Command line and environment: every flag has an `NLU_*` variable, validated once at start.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::batching::{BatchLimits, Settings};
use crate::duration_flag::parse_duration;
use crate::engine::EngineConfig;
use crate::model::{self, Dtype, HubConfig};

// The flag values the operator writes are the contract crate's enums (one definition each).
pub use nlu_crds::serve::{LogFormat, Pooling, Task};

#[derive(Debug, Parser)]
#[command(
    name = "nlu-server",
    version,
    about = "CPU inference server for SiameseUniNLU and GTE embeddings"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Load a model and serve it over HTTP.
    Serve(Box<ServeArgs>),
    /// Download a model (Hugging Face, ModelScope or a .tar.gz URL) and print its local folder.
    Download(DownloadArgs),
    /// Write a new Ed25519 signing key (signing-key.pem) and its public JWK Set (jwks.json),
    /// to run --auth jwt without the operator.
    Keygen(crate::cli_auth::KeygenArgs),
    /// Print a tenant token signed with a key from `keygen`.
    Token(crate::cli_auth::TokenArgs),
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Model folder (config.json, weights, tokenizer) or hub id such as thenlper/gte-base-zh.
    #[arg(long, env = "NLU_MODEL")]
    pub model: String,

    /// Name reported in /info and in OpenAI responses (default: the hub id, or the folder's name).
    #[arg(long, env = "NLU_SERVED_MODEL_NAME")]
    pub served_model_name: Option<String>,

    /// What the model does.
    #[arg(long, env = "NLU_TASK", value_enum)]
    pub task: Task,

    /// Address and port to listen on.
    #[arg(long, env = "NLU_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Serve /metrics on this address only (plain HTTP), not on --listen: keeps tenant ids and
    /// traffic off the port an Ingress publishes. Unset: /metrics is served on --listen.
    #[arg(long, env = "NLU_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,

    /// Where hub ids are downloaded to (default: ~/.cache/nlu-server/models).
    #[arg(long, env = "NLU_MODEL_CACHE_DIR")]
    pub model_cache_dir: Option<PathBuf>,

    /// Hugging Face compatible hub for hub ids (default: $HF_ENDPOINT or https://huggingface.co).
    #[arg(long, env = "NLU_HUB_ENDPOINT")]
    pub hub_endpoint: Option<String>,

    /// Most bytes a hub id's download may write (its files together); more fails the start.
    #[arg(long, env = "NLU_MAX_DOWNLOAD_BYTES", default_value_t = nlu_crds::serve::download::DEFAULT_MAX_BYTES)]
    pub max_download_bytes: u64,

    /// Embedding pooling; default from the model folder's 1_Pooling/config.json.
    #[arg(long, env = "NLU_POOLING", value_enum)]
    pub pooling: Option<Pooling>,

    /// Number format of the weight matrices: `f32`; `bf16` (products accumulated in f32) on
    /// CPUs with AMX-BF16 (Intel Sapphire Rapids and later), several times faster with
    /// embeddings within cosine 0.999 of f32; or `int8` (weights per column, activations per
    /// row, i32 sums) on CPUs with AVX2 (AVX-512 VNNI where present), about twice f32's speed
    /// with embeddings within cosine 0.999 of f32 (docs/server.md says when to use it). Where
    /// the CPU lacks what the dtype needs, the server logs a warning and runs f32.
    #[arg(long, env = "NLU_DTYPE", default_value = "f32")]
    pub dtype: Dtype,

    /// Return raw pooled vectors instead of L2-normalised ones by default.
    #[arg(long, env = "NLU_NO_NORMALIZE")]
    pub no_normalize: bool,

    /// After SIGTERM, keep serving this long with /readyz failing, so load balancers stop
    /// sending requests before the listener closes.
    #[arg(long, env = "NLU_SHUTDOWN_DELAY_MILLIS", default_value_t = 0)]
    pub shutdown_delay_millis: u64,

    /// Log line format.
    #[arg(long, env = "NLU_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,

    /// Where the audit lines (target `nlu_audit`, one per tenant request) go, as JSON lines
    /// whatever --log-format says: `stderr`, or a file path (appended to). Unset: with the
    /// other logs, in their format.
    #[arg(long, env = "NLU_AUDIT_LOG", value_parser = audit_log)]
    pub audit_log: Option<AuditLog>,

    /// Path under which an Ingress publishes this server (e.g. /uninlu): stripped from request
    /// paths before routing, so /uninlu/api/predict is /api/predict; paths without it work too.
    #[arg(long, env = "NLU_PATH_PREFIX", value_parser = nlu_crds::serve::path_prefix)]
    pub path_prefix: Option<String>,

    /// Do not serve the playground page at / (e.g. behind an internet-facing ingress).
    #[arg(long, env = "NLU_NO_PLAYGROUND")]
    pub no_playground: bool,

    /// UniNLU: a JSON file of task types for `POST /predict {"task_type", "input_text"}`, each
    /// `{"schema"?: {...}, "labels"?: [...]}`, replacing or adding to the built-in ones (see
    /// docs/server.md). Checked at start.
    #[arg(long, env = "NLU_TASK_PRESETS")]
    pub task_presets: Option<PathBuf>,

    #[command(flatten)]
    pub batching: BatchingArgs,

    #[command(flatten)]
    pub limits: LimitArgs,

    #[command(flatten)]
    pub uninlu_limits: crate::uninlu::Limits,

    #[command(flatten)]
    pub auth: crate::auth::AuthArgs,

    #[command(flatten)]
    pub tls: crate::tls::TlsArgs,

    #[command(flatten)]
    pub listener: crate::listener::ListenerArgs,
}

#[derive(Debug, Clone, Args)]
pub struct BatchingArgs {
    /// Most tokens in one model batch, summed over its sequences (batches run packed, without
    /// padding).
    #[arg(long, env = "NLU_MAX_BATCH_TOKENS", default_value_t = nlu_crds::serve::DEFAULT_MAX_BATCH_TOKENS)]
    pub max_batch_tokens: usize,

    /// Most sequences in one model batch.
    #[arg(long, env = "NLU_MAX_BATCH_REQUESTS", default_value_t = 32)]
    pub max_batch_requests: usize,

    /// How long the first queued sequence may wait for others to join its batch. It waits only
    /// while the batch can grow: while a request is tokenizing, or while fewer requests are
    /// queued than the previous batch held (under load, clients answered together come back
    /// together); a lone client never waits.
    #[arg(long, env = "NLU_MAX_WAIT_MILLIS", default_value_t = 2)]
    pub max_wait_millis: u64,

    /// Most token positions of the requests in flight (queued or running; every level of a
    /// UniNLU request counted once it is known, until the request ends). A new request whose
    /// first work would pass it gets 503 `overloaded` at once; later levels of admitted
    /// requests are never refused. Bounds the memory requests hold (docs/server.md, "Memory").
    #[arg(long, env = "NLU_MAX_QUEUE_TOKENS", default_value_t = nlu_crds::serve::DEFAULT_MAX_QUEUE_TOKENS)]
    pub max_queue_tokens: usize,
}

#[derive(Debug, Clone, Args)]
pub struct LimitArgs {
    /// Most tokens per input, [CLS]/[SEP] included (capped by the model's positions);
    /// longer inputs get 413 unless the request asks to truncate.
    #[arg(long, env = "NLU_MAX_INPUT_LENGTH")]
    pub max_input_length: Option<usize>,

    /// Most inputs in one embeddings request.
    #[arg(long, env = "NLU_MAX_BATCH_INPUTS", default_value_t = 256)]
    pub max_batch_inputs: usize,

    /// Largest request body in bytes.
    #[arg(long, env = "NLU_MAX_BODY_BYTES", default_value_t = 2 * 1024 * 1024)]
    pub max_body_bytes: usize,

    /// Most token positions the model may run for one request (its cost, reported in
    /// `X-Request-Cost`): embeddings count their inputs' tokens; UniNLU counts the text's
    /// windows once and again for every prompt (window tokens + prompt tokens, per window).
    /// A request over it gets 413 before the work that would pass it runs. The default holds
    /// the largest embeddings request twice and a UniNLU text of a few windows with dozens of
    /// keys; raise it for long documents with large schemas.
    #[arg(long, env = "NLU_MAX_REQUEST_COST", default_value_t = 262_144, value_parser = clap::value_parser!(u64).range(1..=nlu_crds::access::redis_keys::MAX_LIMIT))]
    pub max_request_cost: u64,

    /// Longest a model request may take, from its headers to its answer (auth, queue and model
    /// time included): past it the answer is 504 `request_timeout` and the request's work that
    /// has not run yet is dropped. Size it with --max-request-cost: on a CPU running T token
    /// positions a second, the costliest request takes about max-request-cost / T seconds.
    #[arg(long, env = "NLU_REQUEST_TIMEOUT", value_parser = parse_duration, default_value = "60s")]
    pub request_timeout: Duration,
}

#[derive(Debug, Args)]
pub struct DownloadArgs {
    /// Hugging Face hub id, e.g. thenlper/gte-large-zh. Exactly one of --model, --modelscope
    /// and --url is required.
    #[arg(long, env = "NLU_MODEL", required_unless_present_any = ["modelscope", "url"], conflicts_with_all = ["modelscope", "url"])]
    pub model: Option<String>,

    /// ModelScope model id, e.g. damo/nlp_structbert_siamese-uninlu_chinese-base.
    #[arg(long, conflicts_with = "url")]
    pub modelscope: Option<String>,

    /// http(s) URL of a .tar.gz holding the model folder (at its root or in one top-level
    /// folder). Needs --output-dir.
    #[arg(long, requires = "output_dir")]
    pub url: Option<String>,

    /// Branch, tag or commit (default: main on Hugging Face, master on ModelScope).
    #[arg(long, conflicts_with = "url")]
    pub revision: Option<String>,

    /// Folder to put the model in (default: {cache-dir}/{owner}--{name}/{revision}).
    #[arg(long)]
    pub output_dir: Option<PathBuf>,

    /// Where to store hub downloads (default: ~/.cache/nlu-server/models).
    #[arg(long, env = "NLU_MODEL_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,

    /// Hugging Face compatible hub (default: $HF_ENDPOINT or https://huggingface.co).
    #[arg(long, env = "NLU_HUB_ENDPOINT")]
    pub hub_endpoint: Option<String>,

    /// ModelScope endpoint (default: https://www.modelscope.cn).
    #[arg(long, env = "NLU_MODELSCOPE_ENDPOINT")]
    pub modelscope_endpoint: Option<String>,

    /// Most bytes the download may write: a hub model's files together; a --url archive, and
    /// again its unpacked contents. More is an error and what was written is removed.
    #[arg(long, env = "NLU_MAX_DOWNLOAD_BYTES", default_value_t = nlu_crds::serve::download::DEFAULT_MAX_BYTES)]
    pub max_download_bytes: u64,

    /// SHA-256 (64 lowercase hex digits) the weights file (model.safetensors, else
    /// pytorch_model.bin) or the --url archive must have; a mismatch is an error and the file is
    /// not kept.
    #[arg(long, env = "NLU_MODEL_SHA256", value_parser = parse_sha256)]
    pub sha256: Option<String>,
}

/// A `--sha256` value: 64 lowercase hex digits.
pub fn parse_sha256(value: &str) -> Result<String, String> {
    if nlu_crds::serve::download::is_sha256(value) {
        Ok(value.to_owned())
    } else {
        Err(format!(
            "{value:?} is not a SHA-256 of 64 lowercase hex digits"
        ))
    }
}

/// Where `--audit-log` sends the audit lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditLog {
    Stderr,
    File(PathBuf),
}

fn audit_log(value: &str) -> Result<AuditLog, String> {
    match value {
        "" => Err("a file path or stderr".into()),
        "stderr" => Ok(AuditLog::Stderr),
        path => Ok(AuditLog::File(PathBuf::from(path))),
    }
}

impl ServeArgs {
    /// The task types of `POST /predict`: the built-in ones, with `--task-presets` over them.
    pub fn presets(&self) -> anyhow::Result<crate::uninlu::Presets> {
        let Some(path) = &self.task_presets else {
            return Ok(crate::uninlu::Presets::builtin());
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("--task-presets {}: {e}", path.display()))?;
        crate::uninlu::Presets::with_file(&text, &self.uninlu_limits)
            .map_err(|e| anyhow::anyhow!("--task-presets {}: {e}", path.display()))
    }

    /// The engine's settings, from the flags.
    pub fn engine_config(&self) -> EngineConfig {
        EngineConfig {
            model: self.model.clone(),
            hub: HubConfig {
                max_download_bytes: self.max_download_bytes,
                ..HubConfig::from_env()
            }
            .with_flags(
                self.hub_endpoint.as_deref(),
                self.model_cache_dir.as_deref(),
            ),
            task: self.task,
            dtype: self.dtype,
            pooling: self.pooling.map(|p| match p {
                Pooling::Cls => model::Pooling::Cls,
                Pooling::Mean => model::Pooling::Mean,
            }),
            normalize: !self.no_normalize,
            served_model_name: self.served_model_name.clone(),
            batching: self.batching.settings(),
            max_input_length: self.limits.max_input_length,
            max_batch_inputs: self.limits.max_batch_inputs,
            uninlu: self.uninlu_limits.clone(),
        }
    }
}

impl BatchingArgs {
    fn settings(&self) -> Settings {
        Settings {
            limits: BatchLimits {
                max_tokens: self.max_batch_tokens,
                max_sequences: self.max_batch_requests,
            },
            max_wait: Duration::from_millis(self.max_wait_millis),
            max_queue_tokens: self.max_queue_tokens,
        }
    }

    /// Rejects settings under which no batch could ever form.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_batch_requests == 0 || self.max_batch_tokens == 0 || self.max_queue_tokens == 0
        {
            return Err(
                "--max-batch-requests, --max-batch-tokens and --max-queue-tokens must be at least 1"
                    .into(),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use clap::CommandFactory;

    /// `nlu-server serve --model m --task <task>` and `extra`.
    pub(crate) fn parse_serve(task: &str, extra: &[&str]) -> Result<ServeArgs, clap::Error> {
        let argv = ["nlu-server", "serve", "--model", "m", "--task", task];
        let cli = Cli::try_parse_from(argv.iter().chain(extra))?;
        match cli.command {
            Command::Serve(args) => Ok(*args),
            _ => panic!("expected serve"),
        }
    }

    #[test]
    fn audit_log_is_stderr_or_a_file() {
        assert_eq!(audit_log("stderr"), Ok(AuditLog::Stderr));
        assert_eq!(
            audit_log("/var/log/nlu/audit.jsonl"),
            Ok(AuditLog::File("/var/log/nlu/audit.jsonl".into()))
        );
        assert!(audit_log("").is_err());
    }

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn flags_parse_with_defaults() {
        let args = parse_serve("embedding", &[]).unwrap();
        assert_eq!(args.task, Task::Embedding);
        assert_eq!(args.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(args.batching.max_batch_requests, 32);
        assert!(args.batching.validate().is_ok());
        assert_eq!(parse_serve("rerank", &[]).unwrap().task, Task::Rerank);
    }

    #[test]
    fn path_prefix_is_parsed_by_the_contract_rule() {
        let parse =
            |prefix: &str| parse_serve("uninlu", &["--path-prefix", prefix]).map(|a| a.path_prefix);
        assert_eq!(parse("/uninlu/").unwrap().as_deref(), Some("/uninlu"));
        assert!(parse("/a/../b").is_err());
    }

    #[test]
    fn dtype_takes_the_three_names_and_refuses_others() {
        let parse = |v: &str| parse_serve("embedding", &["--dtype", v]).map(|a| a.dtype);
        assert_eq!(parse_serve("embedding", &[]).unwrap().dtype, Dtype::F32);
        for (name, dtype) in [
            ("f32", Dtype::F32),
            ("bf16", Dtype::Bf16),
            ("int8", Dtype::Int8),
        ] {
            assert_eq!(parse(name).unwrap(), dtype);
            assert_eq!(dtype.to_string(), name);
        }
        for bad in ["INT8", "int4", "fp16", "", "int8 "] {
            let err = parse(bad).unwrap_err().to_string();
            assert!(err.contains("[possible values: f32, bf16, int8]"), "{bad:?}: {err}");
        }
    }

    #[test]
    fn zero_batch_size_is_rejected() {
        let args = parse_serve("uninlu", &["--max-batch-requests", "0"]).unwrap();
        assert!(args.batching.validate().is_err());
    }
}
