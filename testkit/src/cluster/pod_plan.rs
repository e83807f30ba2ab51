//! From a pod template to the processes that run it (pure: every object it needs is passed in).
//!
//! - **Image**: the repository's last path segment, tag and registry dropped (`ghcr.io/x/nlu-server:1.2`
//!   -> `nlu-server`), looked up in the cluster's image map; an image it cannot map is an error
//!   (the Pod reports it), never a silent substitute.
//! - **Mounts by path mapping**: every volume is a folder on the host; an argument or
//!   environment value that is a container's `mountPath` or lies under one is rewritten to the
//!   host folder (longest mount first). Processes see host paths, not a private mount namespace.
//! - **Network**: each pod has its own loopback address (its pod IP); `0.0.0.0` in an argument or
//!   environment value is rewritten to it, so every pod can listen on its container port.
//! - **Environment**: literal values, `secretKeyRef`, `configMapKeyRef` and `fieldRef`
//!   (`metadata.name`, `metadata.namespace`, `status.podIP`), on a cleared environment plus the
//!   cluster's own variables (e.g. the model hub's address).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use base64::Engine;
use serde_json::Value;

/// What a container becomes.
#[derive(Clone, Debug, PartialEq)]
pub struct ProcessSpec {
    pub name: String,
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Container ports by name.
    pub ports: BTreeMap<String, u16>,
    pub startup: Option<Probe>,
    pub readiness: Option<Probe>,
    pub liveness: Option<Probe>,
    /// `lifecycle.preStop.sleep.seconds`.
    pub pre_stop_sleep_secs: u64,
}

/// An `httpGet` probe.
#[derive(Clone, Debug, PartialEq)]
pub struct Probe {
    pub path: String,
    pub port: u16,
    pub https: bool,
    pub period_secs: u64,
    pub timeout_secs: u64,
    pub failure_threshold: u32,
    pub success_threshold: u32,
    pub initial_delay_secs: u64,
}

/// A volume as the host holds it.
#[derive(Clone, Debug, PartialEq)]
pub enum VolumeSource {
    /// An empty folder made for the pod.
    EmptyDir,
    /// The keys of a ConfigMap or Secret (decoded) as files, kept current.
    Files { kind: ObjectKind, name: String },
    /// An existing host folder (a PVC mapped by the cluster).
    HostFolder(PathBuf),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ObjectKind {
    ConfigMap,
    Secret,
}

/// Everything needed to run one pod.
#[derive(Clone, Debug, PartialEq)]
pub struct PodPlan {
    pub init: Vec<ProcessSpec>,
    pub containers: Vec<ProcessSpec>,
    /// Volume name -> (host folder, source).
    pub volumes: BTreeMap<String, (PathBuf, VolumeSource)>,
    pub termination_grace_secs: u64,
}

/// What the plan may look up.
pub trait Objects {
    /// `data` of a ConfigMap (`None`: no such object).
    fn config_map(&self, namespace: &str, name: &str) -> Option<BTreeMap<String, String>>;
    /// `data` of a Secret, base64-decoded.
    fn secret(&self, namespace: &str, name: &str) -> Option<BTreeMap<String, Vec<u8>>>;
}

/// Where a pod runs.
pub struct PodSite<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub ip: Ipv4Addr,
    /// The pod's own folder (volumes live under `volumes/`).
    pub dir: &'a Path,
    /// Image (last path segment, no tag) -> program.
    pub images: &'a BTreeMap<String, PathBuf>,
    /// PVC claim name -> host folder.
    pub claims: &'a BTreeMap<String, PathBuf>,
    /// Variables every process gets besides the pod's own.
    pub cluster_env: &'a [(String, String)],
}

/// Why a pod cannot start (the Pod's waiting reason and message).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlanError {
    pub reason: &'static str,
    pub message: String,
}

fn fail<T>(reason: &'static str, message: String) -> Result<T, PlanError> {
    Err(PlanError { reason, message })
}

/// The plan of a pod with `spec` (a PodSpec as JSON).
pub fn plan(spec: &Value, site: &PodSite, objects: &dyn Objects) -> Result<PodPlan, PlanError> {
    let volumes = volumes(spec, site)?;
    let container = |c: &Value| process(c, site, &volumes, objects);
    let list = |key: &str| -> Result<Vec<ProcessSpec>, PlanError> {
        spec[key]
            .as_array()
            .into_iter()
            .flatten()
            .map(container)
            .collect()
    };
    Ok(PodPlan {
        init: list("initContainers")?,
        containers: list("containers")?,
        termination_grace_secs: spec["terminationGracePeriodSeconds"].as_u64().unwrap_or(30),
        volumes,
    })
}

fn volumes(
    spec: &Value,
    site: &PodSite,
) -> Result<BTreeMap<String, (PathBuf, VolumeSource)>, PlanError> {
    let mut out = BTreeMap::new();
    for v in spec["volumes"].as_array().into_iter().flatten() {
        let name = v["name"].as_str().unwrap_or_default().to_owned();
        let own = site.dir.join("volumes").join(&name);
        let entry = if v.get("emptyDir").is_some() {
            (own, VolumeSource::EmptyDir)
        } else if let Some(cm) = v.get("configMap") {
            let source = VolumeSource::Files {
                kind: ObjectKind::ConfigMap,
                name: cm["name"].as_str().unwrap_or_default().to_owned(),
            };
            (own, source)
        } else if let Some(s) = v.get("secret") {
            let source = VolumeSource::Files {
                kind: ObjectKind::Secret,
                name: s["secretName"].as_str().unwrap_or_default().to_owned(),
            };
            (own, source)
        } else if let Some(pvc) = v.get("persistentVolumeClaim") {
            let claim = pvc["claimName"].as_str().unwrap_or_default();
            let Some(folder) = site.claims.get(claim) else {
                return fail(
                    "FailedMount",
                    format!("PersistentVolumeClaim {claim:?} is not bound to a host folder"),
                );
            };
            (folder.clone(), VolumeSource::HostFolder(folder.clone()))
        } else {
            return fail(
                "FailedMount",
                format!("volume {name:?}: only emptyDir, configMap, secret and persistentVolumeClaim run here"),
            );
        };
        out.insert(name, entry);
    }
    Ok(out)
}

fn process(
    c: &Value,
    site: &PodSite,
    volumes: &BTreeMap<String, (PathBuf, VolumeSource)>,
    objects: &dyn Objects,
) -> Result<ProcessSpec, PlanError> {
    let name = c["name"].as_str().unwrap_or_default().to_owned();
    let image = c["image"].as_str().unwrap_or_default();
    let Some(program) = site.images.get(image_name(image)) else {
        return fail(
            "ErrImagePull",
            format!("container {name:?}: image {image:?} maps to no program of this cluster"),
        );
    };
    let mounts = mounts(c, volumes)?;
    let map = |s: &str| map_value(s, &mounts, site.ip);
    if !strings(&c["command"]).is_empty() {
        // A command replaces the image's entrypoint: only the mapped program can run here.
        return fail(
            "CreateContainerError",
            format!("container {name:?}: `command` is not supported, only `args`"),
        );
    }
    let args: Vec<String> = strings(&c["args"]).iter().map(|a| map(a)).collect();
    let mut env: Vec<(String, String)> = site.cluster_env.to_vec();
    for e in c["env"].as_array().into_iter().flatten() {
        let key = e["name"].as_str().unwrap_or_default().to_owned();
        let value = env_value(e, site, objects)?;
        env.push((key, map(&value)));
    }
    let ports: BTreeMap<String, u16> = c["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| {
            let number = u16::try_from(p["containerPort"].as_u64()?).ok()?;
            Some((p["name"].as_str().unwrap_or_default().to_owned(), number))
        })
        .collect();
    let probe = |key: &str| probe(&c[key], &ports, &name);
    Ok(ProcessSpec {
        startup: probe("startupProbe")?,
        readiness: probe("readinessProbe")?,
        liveness: probe("livenessProbe")?,
        pre_stop_sleep_secs: c["lifecycle"]["preStop"]["sleep"]["seconds"]
            .as_u64()
            .unwrap_or(0),
        name,
        program: program.clone(),
        args,
        env,
        ports,
    })
}

/// `registry/owner/name:tag@digest` -> `name`.
pub fn image_name(image: &str) -> &str {
    let no_digest = image.split('@').next().unwrap_or(image);
    let last = no_digest.rsplit('/').next().unwrap_or(no_digest);
    last.split(':').next().unwrap_or(last)
}

/// Container mount path -> host folder, longest path first.
fn mounts(
    c: &Value,
    volumes: &BTreeMap<String, (PathBuf, VolumeSource)>,
) -> Result<Vec<(String, PathBuf)>, PlanError> {
    let mut out = Vec::new();
    for m in c["volumeMounts"].as_array().into_iter().flatten() {
        let volume = m["name"].as_str().unwrap_or_default();
        let Some((host, _)) = volumes.get(volume) else {
            return fail(
                "CreateContainerConfigError",
                format!("mount of unknown volume {volume:?}"),
            );
        };
        let host = match m["subPath"].as_str() {
            Some(sub) if !sub.is_empty() => host.join(sub),
            _ => host.clone(),
        };
        let path = m["mountPath"]
            .as_str()
            .unwrap_or_default()
            .trim_end_matches('/');
        out.push((path.to_owned(), host));
    }
    out.sort_by_key(|(path, _)| std::cmp::Reverse(path.len()));
    Ok(out)
}

/// A value as the process sees it: mount paths mapped to host folders, the wildcard address
/// to the pod IP.
pub fn map_value(value: &str, mounts: &[(String, PathBuf)], ip: Ipv4Addr) -> String {
    for (path, host) in mounts {
        if let Some(rest) = value.strip_prefix(path.as_str()) {
            if rest.is_empty() || rest.starts_with('/') {
                return format!("{}{rest}", host.display());
            }
        }
    }
    value.replace("0.0.0.0", &ip.to_string())
}

fn env_value(e: &Value, site: &PodSite, objects: &dyn Objects) -> Result<String, PlanError> {
    let name = e["name"].as_str().unwrap_or_default();
    if let Some(value) = e.get("value") {
        return Ok(value.as_str().unwrap_or_default().to_owned());
    }
    let from = &e["valueFrom"];
    let missing = |what: String| {
        fail(
            "CreateContainerConfigError",
            format!("env {name}: {what} not found"),
        )
    };
    if let Some(r) = from.get("secretKeyRef") {
        let (object, key) = (
            r["name"].as_str().unwrap_or_default(),
            r["key"].as_str().unwrap_or_default(),
        );
        return match objects
            .secret(site.namespace, object)
            .and_then(|d| d.get(key).cloned())
        {
            Some(bytes) => Ok(String::from_utf8_lossy(&bytes).into_owned()),
            None => missing(format!("key {key:?} of Secret {object:?}")),
        };
    }
    if let Some(r) = from.get("configMapKeyRef") {
        let (object, key) = (
            r["name"].as_str().unwrap_or_default(),
            r["key"].as_str().unwrap_or_default(),
        );
        return match objects
            .config_map(site.namespace, object)
            .and_then(|d| d.get(key).cloned())
        {
            Some(value) => Ok(value),
            None => missing(format!("key {key:?} of ConfigMap {object:?}")),
        };
    }
    if let Some(r) = from.get("fieldRef") {
        return match r["fieldPath"].as_str().unwrap_or_default() {
            "metadata.name" => Ok(site.name.to_owned()),
            "metadata.namespace" => Ok(site.namespace.to_owned()),
            "status.podIP" => Ok(site.ip.to_string()),
            other => fail(
                "CreateContainerConfigError",
                format!("env {name}: fieldRef {other:?} is not supported here"),
            ),
        };
    }
    fail(
        "CreateContainerConfigError",
        format!("env {name}: only value, secretKeyRef, configMapKeyRef and fieldRef run here"),
    )
}

fn probe(
    p: &Value,
    ports: &BTreeMap<String, u16>,
    container: &str,
) -> Result<Option<Probe>, PlanError> {
    if p.is_null() {
        return Ok(None);
    }
    let Some(get) = p.get("httpGet") else {
        return fail(
            "CreateContainerError",
            format!("container {container:?}: only httpGet probes run here"),
        );
    };
    let port = match &get["port"] {
        Value::String(name) => ports.get(name).copied(),
        other => other.as_u64().and_then(|n| u16::try_from(n).ok()),
    };
    let Some(port) = port else {
        return fail(
            "CreateContainerError",
            format!(
                "container {container:?}: probe port {} is not a container port",
                get["port"]
            ),
        );
    };
    let number = |key: &str, default: u64| p[key].as_u64().unwrap_or(default);
    Ok(Some(Probe {
        path: get["path"].as_str().unwrap_or("/").to_owned(),
        port,
        https: get["scheme"] == "HTTPS",
        period_secs: number("periodSeconds", 10),
        timeout_secs: number("timeoutSeconds", 1),
        failure_threshold: number("failureThreshold", 3) as u32,
        success_threshold: number("successThreshold", 1) as u32,
        initial_delay_secs: number("initialDelaySeconds", 0),
    }))
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_owned))
        .collect()
}

/// Decodes a Secret's `data` (base64 values).
pub fn secret_data(secret: &Value) -> BTreeMap<String, Vec<u8>> {
    let engine = base64::engine::general_purpose::STANDARD;
    secret["data"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| Some((k.clone(), engine.decode(v.as_str()?).ok()?)))
        .collect()
}

/// A ConfigMap's `data`.
pub fn config_map_data(config_map: &Value) -> BTreeMap<String, String> {
    config_map["data"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    struct Store;
    impl Objects for Store {
        fn config_map(&self, ns: &str, name: &str) -> Option<BTreeMap<String, String>> {
            (ns == "ns" && name == "cm").then(|| BTreeMap::from([("k".into(), "v".into())]))
        }
        fn secret(&self, ns: &str, name: &str) -> Option<BTreeMap<String, Vec<u8>>> {
            (ns == "ns" && name == "s")
                .then(|| BTreeMap::from([("url".into(), b"redis://r".to_vec())]))
        }
    }

    fn site<'a>(
        images: &'a BTreeMap<String, PathBuf>,
        claims: &'a BTreeMap<String, PathBuf>,
    ) -> PodSite<'a> {
        PodSite {
            namespace: "ns",
            name: "pod-1",
            ip: Ipv4Addr::new(127, 1, 0, 7),
            dir: Path::new("/pods/pod-1"),
            images,
            claims,
            cluster_env: &[],
        }
    }

    fn spec() -> Value {
        json!({
            "terminationGracePeriodSeconds": 35,
            "initContainers": [{"name": "fetch", "image": "ghcr.io/acme/nlu-server:1.0",
                "args": ["download", "--cache-dir", "/models"],
                "volumeMounts": [{"name": "model", "mountPath": "/models"}]}],
            "containers": [{"name": "server", "image": "nlu-server@sha256:abc",
                "args": ["serve", "--model", "/models/a/main", "--listen", "0.0.0.0:8080",
                         "--jwks", "/etc/nlu/jwks/jwks.json", "--other", "/modelsX"],
                "ports": [{"name": "http", "containerPort": 8080}],
                "env": [{"name": "A", "value": "1"},
                        {"name": "R", "valueFrom": {"secretKeyRef": {"name": "s", "key": "url"}}},
                        {"name": "C", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "k"}}},
                        {"name": "P", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
                "readinessProbe": {"httpGet": {"path": "/readyz", "port": "http"}, "periodSeconds": 5},
                "lifecycle": {"preStop": {"sleep": {"seconds": 5}}},
                "volumeMounts": [{"name": "model", "mountPath": "/models", "readOnly": true},
                                 {"name": "jwks", "mountPath": "/etc/nlu/jwks"}]}],
            "volumes": [{"name": "model", "persistentVolumeClaim": {"claimName": "models"}},
                        {"name": "jwks", "configMap": {"name": "nlu-jwks"}}],
        })
    }

    #[test]
    fn a_template_becomes_processes_with_mapped_paths_env_and_probes() {
        let images = BTreeMap::from([("nlu-server".to_owned(), PathBuf::from("/bin/nlu"))]);
        let claims = BTreeMap::from([("models".to_owned(), PathBuf::from("/host/models"))]);
        let plan = plan(&spec(), &site(&images, &claims), &Store).unwrap();
        assert_eq!(plan.termination_grace_secs, 35);
        assert_eq!(
            plan.init[0].args,
            ["download", "--cache-dir", "/host/models"]
        );
        let server = &plan.containers[0];
        assert_eq!(server.program, PathBuf::from("/bin/nlu"));
        assert_eq!(
            server.args,
            [
                "serve",
                "--model",
                "/host/models/a/main",
                "--listen",
                "127.1.0.7:8080",
                "--jwks",
                "/pods/pod-1/volumes/jwks/jwks.json",
                "--other",
                "/modelsX"
            ]
        );
        assert_eq!(
            server.env,
            [
                ("A".into(), "1".into()),
                ("R".into(), "redis://r".into()),
                ("C".into(), "v".into()),
                ("P".into(), "127.1.0.7".into())
            ]
        );
        let readiness = server.readiness.as_ref().unwrap();
        assert_eq!(
            (
                readiness.path.as_str(),
                readiness.port,
                readiness.period_secs
            ),
            ("/readyz", 8080, 5)
        );
        assert_eq!(server.pre_stop_sleep_secs, 5);
        assert_eq!(
            plan.volumes["jwks"].1,
            VolumeSource::Files {
                kind: ObjectKind::ConfigMap,
                name: "nlu-jwks".into()
            }
        );
    }

    #[test]
    fn what_cannot_run_is_a_pod_error_not_a_substitute() {
        let images = BTreeMap::new();
        let claims = BTreeMap::from([("models".to_owned(), PathBuf::from("/host/models"))]);
        let error = plan(&spec(), &site(&images, &claims), &Store).unwrap_err();
        assert_eq!(error.reason, "ErrImagePull");

        let images = BTreeMap::from([("nlu-server".to_owned(), PathBuf::from("/bin/nlu"))]);
        let error = plan(&spec(), &site(&images, &BTreeMap::new()), &Store).unwrap_err();
        assert_eq!(error.reason, "FailedMount");

        let mut missing_secret = spec();
        missing_secret["containers"][0]["env"][1]["valueFrom"]["secretKeyRef"]["name"] =
            json!("gone");
        let claims = BTreeMap::from([("models".to_owned(), PathBuf::from("/host/models"))]);
        let error = plan(&missing_secret, &site(&images, &claims), &Store).unwrap_err();
        assert_eq!(error.reason, "CreateContainerConfigError");
    }

    #[test]
    fn image_names() {
        assert_eq!(image_name("nlu-server"), "nlu-server");
        assert_eq!(image_name("ghcr.io/acme/nlu-server:v1"), "nlu-server");
        assert_eq!(image_name("localhost:5000/nlu-server:e2e"), "nlu-server");
        assert_eq!(image_name("nlu-server@sha256:00"), "nlu-server");
    }
}
