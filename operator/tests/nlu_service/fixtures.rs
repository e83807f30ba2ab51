//! Representative NluServices, as a user would write them, with the metadata the API server
//! adds (uid, generation).

use nlu_crds::NluService;

pub const NS: &str = "nlp";

/// An NluService from the YAML `spec` under name `name`.
pub fn service(name: &str, spec_yaml: &str) -> NluService {
    let spec: serde_yaml::Value = serde_yaml::from_str(spec_yaml).expect("fixture spec YAML");
    let obj = serde_json::json!({
        "apiVersion": "nlu.dev/v1alpha1",
        "kind": "NluService",
        "metadata": {"name": name, "namespace": NS, "uid": format!("uid-{name}"), "generation": 1},
        "spec": spec,
    });
    serde_json::from_value(obj).expect("fixture is a valid NluService")
}

/// Hub model, defaults everywhere (auth jwt through the default Redis Secret).
pub fn minimal() -> NluService {
    service(
        "gte",
        r#"
model:
  task: embedding
  source:
    huggingFace: {repo: thenlper/gte-base-zh}
"#,
    )
}

/// UniNLU from ModelScope behind a TLS Ingress, autoscaled on CPU and in-flight requests.
pub fn uninlu_tls_autoscaling() -> NluService {
    service(
        "uninlu",
        r#"
model:
  task: uninlu
  source:
    modelScope: {id: damo/nlp_structbert_siamese-uninlu_chinese-base, revision: v1.0.1}
    # The SHA-256 of ../shared/fixtures/uninlu-tiny/model/model.safetensors: e2e's rendered_pods
    # runs this snapshot against the stand-in hub, which serves that file under this id.
    sha256: 1bc4835b8a8857b875742f80976dd42283ad03918d684568e8ab6e01d6bc8aeb
  maxSequenceLength: 512
  taskPresets: {configMap: uninlu-presets}
autoscaling: {minReplicas: 2, maxReplicas: 8, targetCPUUtilizationPercentage: 60, targetInflightRequests: 4}
resources:
  requests: {cpu: "2", memory: 2Gi}
  limits: {memory: 3Gi}
batching: {maxBatchTokens: 8192, maxBatchRequests: 16, maxWaitMillis: 5, maxQueueTokens: 65536}
ingress:
  host: nlu.example.com
  className: nginx
  path: /uninlu
  tls: {clusterIssuer: letsencrypt-prod}
auth:
  redis:
    secretRef: {name: tenants-redis, key: connection}
  failurePolicy: FailOpen
"#,
    )
}

/// Embeddings from a PVC sub-folder, fixed replicas (a PDB), pinned to CPU nodes.
pub fn embeddings_pvc() -> NluService {
    service(
        "embed",
        r#"
model:
  task: embedding
  source:
    pvc: {claimName: models, path: gte/base-zh}
  pooling: mean
  dtype: bf16
replicas: 3
nodeSelector: {node.kubernetes.io/instance-type: c7i.2xlarge}
tolerations:
  - {key: dedicated, operator: Equal, value: inference, effect: NoSchedule}
auth:
  redis: {url: "redis://redis.nlp.svc:6379/0"}
"#,
    )
}

/// No auth, plain-HTTP Ingress with an explicit playground, model from a URL.
pub fn auth_off() -> NluService {
    service(
        "open",
        r#"
model:
  task: embedding
  source:
    url: https://models.example.com/minilm.tar.gz
ingress:
  host: open.example.com
  tls: {issuer: local-ca, secretName: open-cert}
auth: {mode: none, allowUnauthenticated: true}
playground: true
"#,
    )
}

/// Every case of the snapshot tests, by snapshot name.
pub fn cases() -> Vec<(&'static str, NluService)> {
    vec![
        ("minimal", minimal()),
        ("uninlu-tls-autoscaling", uninlu_tls_autoscaling()),
        ("embeddings-pvc", embeddings_pvc()),
        ("auth-off", auth_off()),
    ]
}
