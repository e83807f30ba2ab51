//! The Deployment of nlu-server pods: arguments from the spec, model volume (download init
//! container or read-only PVC), probes, drain on stop, and locked-down pod security.

use k8s_openapi::api::apps::v1::Deployment;
use kube::ResourceExt;
use nlu_crds::nlu_service::{AuthMode, ModelSource, NluServiceSpec, RedisRef};
use nlu_crds::routes::Route;
use nlu_crds::serve::{download, memory, JwtFlags, LogFormat, ServeFlags, REDIS_URL_ENV};
use nlu_crds::NluService;
use serde_json::{json, Value};

use super::labels::{child_meta, labels, selector};
use super::typed;
use crate::config::OperatorConfig;
use crate::nlu_service::validate::relative_model_path;
use crate::tenant::identity_keys::IDENTITIES_KEY;
use crate::tenant::jwks_publish::{JWKS_CONFIGMAP, JWKS_KEY};

/// Container port of the server (HTTP API and probes).
pub const HTTP_PORT: i32 = 8080;
/// Container port of the server's private /metrics listener (`--metrics-listen`): kept off the
/// port the Ingress publishes, since it names tenants and their traffic.
pub const METRICS_PORT: i32 = 9090;
/// Where the model volume is mounted.
pub const MODEL_MOUNT: &str = "/models";
/// Where the JWK Set ConfigMap is mounted.
pub const JWKS_MOUNT: &str = "/etc/nlu/jwks";
/// Where `spec.model.taskPresets`' ConfigMap is mounted (each key a file, as the kubelet writes them).
pub const TASK_PRESETS_MOUNT: &str = "/etc/nlu/task-presets";
/// Seconds the pod keeps serving after it was taken out of the endpoints, before SIGTERM, so
/// load balancers stop routing to it first; the server then drains in-flight requests.
pub const DRAIN_SECONDS: i64 = 5;
/// Seconds a pod may take to load and warm its model before the startup probe gives up
/// (large models on cold nodes): 10 s x 60.
const STARTUP_PROBE_PERIOD: i32 = 10;
const STARTUP_PROBE_FAILURES: i32 = 60;
/// Non-root user of the server image (distroless `nonroot`).
const RUN_AS_USER: i64 = 65532;
/// Pod-template annotation holding a digest of the Redis URL the pods read from a Secret: they
/// read it only when they start, so a new URL (a rotated password) must roll them.
pub const REDIS_CREDENTIAL_ANNOTATION: &str = "nlu.dev/redis-credential";

/// The Deployment of `svc`.
pub fn deployment(svc: &NluService, cfg: &OperatorConfig) -> Deployment {
    let spec = &svc.spec;
    let image = spec.image.clone().unwrap_or_else(|| cfg.image.clone());
    let download = download_args(&spec.model.source);
    let init_containers: Vec<Value> = download
        .iter()
        .map(|args| {
            json!({
                "name": "download-model",
                "image": image,
                "args": args,
                "securityContext": container_security(),
                "volumeMounts": [
                    {"name": "model", "mountPath": MODEL_MOUNT},
                    {"name": "tmp", "mountPath": "/tmp"},
                ],
            })
        })
        .collect();

    let mut mounts = vec![
        json!({"name": "model", "mountPath": MODEL_MOUNT, "readOnly": true}),
        json!({"name": "tmp", "mountPath": "/tmp"}),
    ];
    // emptyDirs are capped, so a download (or anything else) cannot fill the node's disk: the
    // model volume holds what the init container may write, /tmp little.
    let model_volume = match &spec.model.source.pvc {
        Some(pvc) => {
            json!({"name": "model", "persistentVolumeClaim": {"claimName": pvc.claim_name, "readOnly": true}})
        }
        None => {
            let archive = spec.model.source.url.is_some();
            let limit = download::model_volume_mib(download::DEFAULT_MAX_BYTES, archive);
            json!({"name": "model", "emptyDir": {"sizeLimit": format!("{limit}Mi")}})
        }
    };
    let tmp_volume = json!({"name": "tmp", "emptyDir": {"sizeLimit": format!("{}Mi", download::TMP_VOLUME_MIB)}});
    let mut volumes = vec![model_volume, tmp_volume];
    let jwt = auth_mode(spec) == AuthMode::Jwt;
    if jwt {
        mounts.push(json!({"name": "jwks", "mountPath": JWKS_MOUNT, "readOnly": true}));
        volumes.push(json!({"name": "jwks", "configMap": {"name": JWKS_CONFIGMAP}}));
    }
    if let Some(presets) = &spec.model.task_presets {
        mounts.push(json!({"name": "task-presets", "mountPath": TASK_PRESETS_MOUNT, "readOnly": true}));
        volumes.push(json!({"name": "task-presets", "configMap": {"name": presets.config_map}}));
    }

    let probe = |path: &str, period: i32, failures: i32| json!({"httpGet": {"path": path, "port": "http"}, "periodSeconds": period, "failureThreshold": failures, "timeoutSeconds": 2});
    let container = json!({
        "name": "server",
        "image": image,
        "args": serve_args(svc, cfg),
        "ports": [
            {"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"},
            {"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"},
        ],
        "env": redis_env(spec, cfg),
        "resources": resources(spec),
        "startupProbe": probe(Route::Healthz.path(), STARTUP_PROBE_PERIOD, STARTUP_PROBE_FAILURES),
        "livenessProbe": probe(Route::Healthz.path(), 10, 3),
        "readinessProbe": probe(Route::Readyz.path(), 5, 2),
        "lifecycle": {"preStop": {"sleep": {"seconds": DRAIN_SECONDS}}},
        "securityContext": container_security(),
        "volumeMounts": mounts,
    });

    let mut deployment_spec = json!({
        "selector": {"matchLabels": selector(svc)},
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
        "template": {
            "metadata": {"labels": labels(svc)},
            "spec": {
                "automountServiceAccountToken": false,
                "enableServiceLinks": false,
                "terminationGracePeriodSeconds": 30 + DRAIN_SECONDS,
                "securityContext": {
                    "runAsNonRoot": true,
                    "runAsUser": RUN_AS_USER,
                    "runAsGroup": RUN_AS_USER,
                    "fsGroup": RUN_AS_USER,
                    "seccompProfile": {"type": "RuntimeDefault"},
                },
                "initContainers": init_containers,
                "containers": [container],
                "volumes": volumes,
                "nodeSelector": spec.node_selector,
                "tolerations": spec.tolerations,
            },
        },
    });
    // With autoscaling the HPA owns the replica count: leaving it out hands the field over.
    if spec.autoscaling.is_none() {
        deployment_spec["replicas"] = json!(spec.replicas.unwrap_or(1));
    }
    strip_nulls(&mut deployment_spec);
    Deployment {
        metadata: child_meta(svc),
        spec: Some(typed(deployment_spec)),
        status: None,
    }
}

/// Marks the pod template with a digest of `url` (the Redis Secret's value): 16 hex digits of
/// its SHA-256, which say when it changed and nothing about the password.
pub fn stamp_redis_credential(deployment: &mut Deployment, url: &[u8]) {
    use sha2::{Digest, Sha256};
    let mut version = format!("{:x}", Sha256::digest(url));
    version.truncate(16);
    if let Some(spec) = deployment.spec.as_mut() {
        spec.template
            .metadata
            .get_or_insert_default()
            .annotations
            .get_or_insert_default()
            .insert(REDIS_CREDENTIAL_ANNOTATION.to_owned(), version);
    }
}

/// The container's resources: the spec's, else a CPU request (so the HPA's utilisation target
/// has something to divide by) and memory for a base-size model. Unless the spec says anything
/// about memory, the limit is what the batching settings let the server hold
/// (`serve::memory::limit_mib`), so a pod that outgrows it is the one stopped, not its node.
pub fn resources(spec: &NluServiceSpec) -> Value {
    let names_memory = spec.resources.as_ref().is_some_and(|r| {
        [&r.requests, &r.limits]
            .into_iter()
            .any(|m| m.as_ref().is_some_and(|m| m.contains_key("memory")))
    });
    let mut resources = spec.resources.clone().map_or_else(
        || json!({"requests": {"cpu": "1", "memory": format!("{}Mi", memory::BASE_BYTES >> 20)}}),
        |r| serde_json::to_value(r).expect("ResourceRequirements serializes"),
    );
    if !names_memory {
        let batching = spec.batching.clone().unwrap_or_default();
        let limit = memory::limit_mib(batching.max_batch_tokens, batching.max_queue_tokens);
        resources["limits"]["memory"] = json!(format!("{limit}Mi"));
    }
    resources
}

fn container_security() -> Value {
    json!({
        "allowPrivilegeEscalation": false,
        "readOnlyRootFilesystem": true,
        "runAsNonRoot": true,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    })
}

/// The effective auth mode (default `jwt`).
pub fn auth_mode(spec: &NluServiceSpec) -> AuthMode {
    spec.auth.as_ref().and_then(|a| a.mode).unwrap_or_default()
}

/// Where the server finds the model inside the pod.
pub fn model_dir(source: &ModelSource) -> String {
    if let Some(pvc) = &source.pvc {
        // Validation rejected escaping paths before any build; an invalid one maps to the root.
        let rel = relative_model_path(pvc.path.as_deref().unwrap_or("")).unwrap_or_default();
        return if rel.is_empty() {
            MODEL_MOUNT.to_owned()
        } else {
            format!("{MODEL_MOUNT}/{rel}")
        };
    }
    if let Some(hub) = &source.hugging_face {
        // nlu-server download's cache layout: {cache}/{owner}--{name}/{revision}.
        let revision = hub.revision.as_deref().unwrap_or("main");
        return format!("{MODEL_MOUNT}/{}/{revision}", hub.repo.replace('/', "--"));
    }
    if let Some(ms) = &source.model_scope {
        let revision = ms.revision.as_deref().unwrap_or("master");
        return format!(
            "{MODEL_MOUNT}/modelscope/{}/{revision}",
            ms.id.replace('/', "--")
        );
    }
    format!("{MODEL_MOUNT}/url")
}

/// Arguments of the init container that fetches the model, or `None` for a PVC. The cap is
/// passed explicitly, so it always matches the model volume's `sizeLimit`.
pub fn download_args(source: &ModelSource) -> Option<Vec<String>> {
    let mut args: Vec<String> = vec!["download".into()];
    if let Some(hub) = &source.hugging_face {
        args.extend([
            "--model".into(),
            hub.repo.clone(),
            "--cache-dir".into(),
            MODEL_MOUNT.into(),
        ]);
        args.extend(
            hub.revision
                .iter()
                .flat_map(|r| ["--revision".into(), r.clone()]),
        );
    } else if let Some(ms) = &source.model_scope {
        args.extend([
            "--modelscope".into(),
            ms.id.clone(),
            "--output-dir".into(),
            model_dir(source),
        ]);
        args.extend(
            ms.revision
                .iter()
                .flat_map(|r| ["--revision".into(), r.clone()]),
        );
    } else if let Some(url) = &source.url {
        args.extend([
            "--url".into(),
            url.clone(),
            "--output-dir".into(),
            model_dir(source),
        ]);
    } else {
        return None;
    }
    args.extend([
        "--max-download-bytes".into(),
        download::DEFAULT_MAX_BYTES.to_string(),
    ]);
    args.extend(
        source
            .sha256
            .iter()
            .flat_map(|sha| ["--sha256".into(), sha.clone()]),
    );
    Some(args)
}

/// `nlu-server serve` arguments from the spec, through the contract crate's [`ServeFlags`].
pub fn serve_args(svc: &NluService, cfg: &OperatorConfig) -> Vec<String> {
    let spec = &svc.spec;
    let batching = spec.batching.clone().unwrap_or_default();
    let jwt = (auth_mode(spec) == AuthMode::Jwt).then(|| JwtFlags {
        jwks: format!("{JWKS_MOUNT}/{JWKS_KEY}"),
        identities: Some(format!("{JWKS_MOUNT}/{IDENTITIES_KEY}")),
        service_id: format!("{}/{}", svc.namespace().unwrap_or_default(), svc.name_any()),
        redis_prefix: cfg.redis_prefix.clone(),
        redis_failure_policy: spec
            .auth
            .as_ref()
            .and_then(|a| a.failure_policy)
            .unwrap_or_default(),
    });
    ServeFlags {
        model: model_dir(&spec.model.source),
        task: spec.model.task,
        listen: format!("0.0.0.0:{HTTP_PORT}"),
        metrics_listen: Some(format!("0.0.0.0:{METRICS_PORT}")),
        log_format: LogFormat::Json,
        max_input_length: spec.model.max_sequence_length,
        pooling: spec.model.pooling,
        dtype: spec.model.dtype,
        max_batch_tokens: batching.max_batch_tokens,
        max_batch_requests: batching.max_batch_requests,
        max_wait_millis: batching.max_wait_millis,
        max_queue_tokens: batching.max_queue_tokens,
        jwt,
        // The Ingress passes its path on: the server strips it (a bare `/` needs nothing).
        path_prefix: spec
            .ingress
            .as_ref()
            .and_then(|i| i.path.clone())
            .filter(|p| !p.trim_end_matches('/').is_empty()),
        playground: playground_on(spec),
        task_presets: spec
            .model
            .task_presets
            .as_ref()
            .map(|p| format!("{TASK_PRESETS_MOUNT}/{}", p.key())),
    }
    .to_args()
}

/// The playground defaults to on, except behind an Ingress (public exposure).
pub fn playground_on(spec: &NluServiceSpec) -> bool {
    spec.playground.unwrap_or(spec.ingress.is_none())
}

/// The Secret key holding the Redis URL: the spec's reference, else the operator's default
/// Secret. `None` when auth is off or the URL is given inline.
pub fn redis_secret(spec: &NluServiceSpec, cfg: &OperatorConfig) -> Option<(String, String)> {
    if auth_mode(spec) != AuthMode::Jwt {
        return None;
    }
    match spec.auth.as_ref().and_then(|a| a.redis.as_ref()) {
        Some(RedisRef { url: Some(_), .. }) => None,
        Some(RedisRef {
            secret_ref: Some(s),
            ..
        }) => Some((
            s.name.clone(),
            s.key.clone().unwrap_or_else(|| "url".into()),
        )),
        _ => Some((cfg.default_redis_secret.clone(), "url".into())),
    }
}

/// `NLU_REDIS_URL` for the server (read from the environment, so the URL and its password never
/// appear in the pod's arguments).
fn redis_env(spec: &NluServiceSpec, cfg: &OperatorConfig) -> Value {
    if auth_mode(spec) != AuthMode::Jwt {
        return json!([]);
    }
    if let Some(url) = spec
        .auth
        .as_ref()
        .and_then(|a| a.redis.as_ref())
        .and_then(|r| r.url.as_ref())
    {
        return json!([{"name": REDIS_URL_ENV, "value": url}]);
    }
    let (name, key) =
        redis_secret(spec, cfg).expect("jwt auth without an inline URL reads a Secret");
    json!([{"name": REDIS_URL_ENV, "valueFrom": {"secretKeyRef": {"name": name, "key": key}}}])
}

/// Drops `null` members (unset optional spec fields) and empty arrays, so the applied object
/// claims no field it does not set.
pub(super) fn strip_nulls(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.retain(|_, v| !(v.is_null() || v.as_array().is_some_and(|a| a.is_empty())));
            map.values_mut().for_each(strip_nulls);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_nulls),
        _ => {}
    }
}
