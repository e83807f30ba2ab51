//! `NluService`: "serve this model, this way". The operator turns it into a Deployment of the
//! inference server, a Service, and optionally an Ingress, HPA, PDB and NetworkPolicy.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ResourceRequirements, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use crate::serve::{AuthMode, Dtype, FailurePolicy, Pooling, Task};

/// Why `auth.mode: none` behind an Ingress needs `auth.allowUnauthenticated` (the CEL rule's
/// message, and the operator's for objects stored before the rule).
pub const UNAUTHENTICATED_INGRESS: &str = "auth.mode none behind an Ingress serves anyone who can reach the Ingress: set auth.allowUnauthenticated: true to mean it";

/// Desired state of an inference service.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "nlu.dev",
    version = "v1alpha1",
    kind = "NluService",
    namespaced,
    status = "NluServiceStatus",
    shortname = "nlus",
    category = "nlu",
    cel,
    doc = "An inference service: one model served by a Deployment of nlu-server pods, with optional Ingress, autoscaling and tenant authentication.",
    printcolumn = r#"{"name":"Task","type":"string","jsonPath":".spec.model.task"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Replicas","type":"integer","jsonPath":".status.readyReplicas"}"#,
    printcolumn = r#"{"name":"URL","type":"string","jsonPath":".status.url"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!(has(self.replicas) && has(self.autoscaling))").message("set either replicas or autoscaling, not both: with autoscaling the HPA owns the replica count").field_path(".replicas"))]
#[x_kube(validation = Rule::new("!has(self.ingress) || !has(self.auth) || !has(self.auth.mode) || self.auth.mode != 'none' || (has(self.auth.allowUnauthenticated) && self.auth.allowUnauthenticated)").message(UNAUTHENTICATED_INGRESS).field_path(".auth"))]
pub struct NluServiceSpec {
    /// The model to serve and the task it performs.
    pub model: ModelSpec,

    /// Fixed number of server pods. Leave unset when `autoscaling` is set. Default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub replicas: Option<i32>,

    /// Scale the server with a HorizontalPodAutoscaler instead of a fixed replica count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<Autoscaling>,

    /// CPU and memory for each server container. Inference is CPU-bound: request whole cores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// Server image; defaults to the image the operator was configured with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,

    /// Node labels the server pods must match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<BTreeMap<String, String>>,

    /// Tolerations for the server pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerations: Option<Vec<Toleration>>,

    /// Dynamic batching of requests inside each server pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batching: Option<Batching>,

    /// Expose the service outside the cluster through an Ingress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<IngressSpec>,

    /// Tenant authentication and quotas. Default: JWT auth on, fail closed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthSpec>,

    /// Serve the web playground at `/`. Default: on, except when an Ingress exposes the service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub playground: Option<bool>,
}

/// What to serve.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.taskPresets) || self.task == 'uninlu'").message("taskPresets is for the uninlu task").field_path(".taskPresets"))]
pub struct ModelSpec {
    /// `uninlu` (SiameseUniNLU: POST /api/predict), `embedding` (GTE-style: POST /v1/embeddings)
    /// or `rerank` (a cross-encoder: POST /rerank, /v1/rerank).
    pub task: Task,

    /// Where the model files come from. Exactly one of the fields must be set.
    pub source: ModelSource,

    /// Longest input in tokens (embedding inputs; UniNLU prompts; rerank (query, text) pairs).
    /// Default: the model's maximum.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 8, max = 8192))]
    pub max_sequence_length: Option<i32>,

    /// Embedding pooling; default from the model folder (`1_Pooling/config.json`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pooling: Option<Pooling>,

    /// Number format of the weights (see [`Dtype`]); default f32. To keep such pods on nodes
    /// that have what the format needs, use `nodeSelector` (for example Node Feature
    /// Discovery's `feature.node.kubernetes.io/cpu-cpuid.AMXBF16`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dtype: Option<Dtype>,

    /// UniNLU: task types for the second seed app's `POST /predict {"task_type", "input_text"}`,
    /// from a ConfigMap in the service's namespace, replacing or adding to the built-in ones
    /// (docs/server.md). Mounted into the pods and read at start (`--task-presets`): a bad file
    /// stops the server at start (the rollout does not progress), and an edit takes effect at
    /// the next rollout (`kubectl rollout restart deployment/<name>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_presets: Option<TaskPresets>,
}

/// A ConfigMap key holding a `--task-presets` JSON file.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TaskPresets {
    /// The ConfigMap's name.
    #[schemars(length(min = 1, max = 253))]
    pub config_map: String,
    /// The key holding the JSON. Default `presets.json`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-_a-zA-Z0-9][-._a-zA-Z0-9]*$"))]
    pub key: Option<String>,
}

impl TaskPresets {
    /// The key the JSON is under.
    pub fn key(&self) -> &str {
        self.key.as_deref().unwrap_or("presets.json")
    }
}

/// Where the model files come from.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    cel,
    validation = Rule::new("[has(self.huggingFace), has(self.modelScope), has(self.pvc), has(self.url)].filter(x, x).size() == 1").message("exactly one of huggingFace, modelScope, pvc or url must be set"),
    validation = Rule::new("!has(self.sha256) || !has(self.pvc)").message("sha256 checks a download: set it with huggingFace, modelScope or url, not pvc").field_path(".sha256")
)]
pub struct ModelSource {
    /// A Hugging Face Hub repository, downloaded by an init container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hugging_face: Option<HubModel>,

    /// A ModelScope model, downloaded by an init container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_scope: Option<ModelScopeModel>,

    /// A PersistentVolumeClaim that already holds the model folder, mounted read-only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pvc: Option<PvcModel>,

    /// An https URL of a `.tar.gz` of the model folder, downloaded by an init container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.startsWith('https://') || self.startsWith('http://')").message("url must be an http(s) URL"))]
    pub url: Option<String>,

    /// SHA-256 the download must have, as 64 lowercase hex digits: of the weights file for
    /// `huggingFace` and `modelScope` (`model.safetensors`, or `pytorch_model.bin` when the
    /// repository has none; the hubs show it on the file's page), of the archive for `url`. A
    /// mismatch fails the download (the init container) and the file is not kept. Not for `pvc`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(crate::serve::download::SHA256_PATTERN))]
    pub sha256: Option<String>,
}

/// A model on the Hugging Face Hub.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HubModel {
    /// Repository id, e.g. `thenlper/gte-base-zh`.
    #[schemars(length(min = 1))]
    pub repo: String,
    /// Branch, tag or commit. Default `main`. Pin a commit for reproducible rollouts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
}

/// A model on ModelScope.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ModelScopeModel {
    /// Model id, e.g. `damo/nlp_structbert_siamese-uninlu_chinese-base`.
    #[schemars(length(min = 1))]
    pub id: String,
    /// Revision (tag or commit). Default `master`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
}

/// A model folder on a PersistentVolumeClaim.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PvcModel {
    /// Name of the PersistentVolumeClaim in the service's namespace.
    #[schemars(length(min = 1))]
    pub claim_name: String,
    /// Folder inside the volume that holds `config.json`, relative. Default: the volume root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("!self.startsWith('/') && !self.contains('..')").message("path must be relative to the volume root and must not contain '..'"))]
    pub path: Option<String>,
}

/// Horizontal autoscaling of the server pods.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    cel,
    validation = Rule::new("self.minReplicas <= self.maxReplicas").message("minReplicas must not exceed maxReplicas").field_path(".minReplicas")
)]
pub struct Autoscaling {
    /// Lowest number of pods.
    #[schemars(range(min = 1))]
    pub min_replicas: i32,
    /// Highest number of pods.
    #[schemars(range(min = 1))]
    pub max_replicas: i32,
    /// Average CPU utilisation to aim for, in percent of the request. Default 70.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(rename = "targetCPUUtilizationPercentage")]
    #[schemars(range(min = 1, max = 100))]
    pub target_cpu_utilization_percentage: Option<i32>,
    /// Average in-flight requests per pod to aim for (needs a metrics adapter serving the
    /// `nlu_in_flight_requests` pods metric).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub target_inflight_requests: Option<i32>,
}

/// Dynamic batching settings of the server.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Batching {
    /// Most tokens in one batch, padding counted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 16))]
    pub max_batch_tokens: Option<i32>,
    /// Most requests in one batch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_batch_requests: Option<i32>,
    /// Longest wait for a batch to fill, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1000))]
    pub max_wait_millis: Option<i32>,
    /// Most token positions of the requests in flight per pod (queued or running, every UniNLU
    /// level counted); a new request that would pass it gets 503 at once. Bounds the memory
    /// requests hold, and so the container's memory limit the operator derives.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_queue_tokens: Option<i32>,
}

/// Exposure through an Ingress.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    cel,
    validation = Rule::new("!has(self.tls) || (has(self.host) && self.host != '')").message("tls needs a host").field_path(".host")
)]
pub struct IngressSpec {
    /// Public host name, e.g. `nlu.example.com`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// IngressClass to use; default: the cluster's default class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class_name: Option<String>,
    /// Path prefix routed to the service, such as `/uninlu`: `/` then letters, digits and
    /// `/ . _ ~ -`, without `..`. Default `/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    // The rule of the server's --path-prefix (`serve::path_prefix`), in CEL.
    #[x_kube(validation = Rule::new("self.matches('^/[A-Za-z0-9._~/-]*$') && !self.contains('..')").message("path must be a path such as /uninlu: '/' then letters, digits and / . _ ~ -, without '..'"))]
    pub path: Option<String>,
    /// TLS through cert-manager. The operator never creates the Secret itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<IngressTls>,
}

/// TLS for the Ingress, issued by cert-manager.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    cel,
    validation = Rule::new("[has(self.clusterIssuer), has(self.issuer)].filter(x, x).size() <= 1").message("set at most one of clusterIssuer or issuer")
)]
pub struct IngressTls {
    /// cert-manager ClusterIssuer that signs the certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_issuer: Option<String>,
    /// cert-manager Issuer (same namespace) that signs the certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// Secret that holds (or will hold) the certificate. Default `<name>-tls`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,
}

/// Tenant authentication of requests.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct AuthSpec {
    /// `jwt` (tenant tokens issued by the operator, quotas in Redis) or `none`. Default `jwt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<AuthMode>,
    /// Redis holding tenant records and counters. Default: the operator's Redis.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis: Option<RedisRef>,
    /// What to do while Redis is unreachable. Default `FailClosed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_policy: Option<FailurePolicy>,
    /// Must be `true` for `mode: none` with an Ingress: the model routes are then public to
    /// everyone who can reach the Ingress, with no quota.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_unauthenticated: Option<bool>,
}

/// Where the Redis URL comes from.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    cel,
    validation = Rule::new("[has(self.url), has(self.secretRef)].filter(x, x).size() == 1").message("exactly one of url or secretRef must be set")
)]
pub struct RedisRef {
    /// `redis://` or `rediss://` URL without a password, or a Redis Cluster's nodes as
    /// `redis+cluster://host:port,host:port` (`rediss+cluster://` for TLS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.startsWith('redis://') || self.startsWith('rediss://') || self.startsWith('redis+cluster://') || self.startsWith('rediss+cluster://')").message("url must start with redis://, rediss://, redis+cluster:// or rediss+cluster://"))]
    pub url: Option<String>,
    /// A key of a Secret in the service's namespace holding the full Redis URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretKeyRef>,
}

/// A key inside a Secret.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Secret name.
    #[schemars(length(min = 1))]
    pub name: String,
    /// Key inside the Secret. Default `url`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// Observed state of an inference service.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct NluServiceStatus {
    /// Ready, Progressing, Degraded, ModelLoaded, IngressReady.
    #[serde(default)]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Pods of the Deployment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// Pods that passed their readiness probe (model loaded and warmed up).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_replicas: Option<i32>,
    /// Base URL clients call: the Ingress URL when exposed, else the in-cluster Service URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}
