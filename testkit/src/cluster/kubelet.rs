//! The Deployment controller and kubelet of the process cluster, as one polling loop over the
//! API (through the same client types as everything else): every Deployment's pods run as
//! real processes ([`super::pod_runtime`]) from its pod template ([`super::pod_plan`]); Pod
//! objects and the Deployment's status are written from what the probes see; a changed
//! template rolls the pods ([`super::rollout`]); pods of a Deployment that is gone are
//! stopped and their Pod objects deleted (garbage collection by owner).
//! ConfigMap and Secret volumes are rewritten in place when their object changes.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::{json, Value};

use super::pod_plan::{self, Objects, PlanError, PodPlan, PodSite, VolumeSource};
use super::pod_runtime::{PodRuntime, Timing};
use super::rollout::{self, PodView, Step};

/// What the kubelet needs to know of the host.
pub struct KubeletConfig {
    /// Pods' folders go under `{root}/pods/`.
    pub root: PathBuf,
    pub images: BTreeMap<String, PathBuf>,
    pub claims: BTreeMap<String, PathBuf>,
    pub env: Vec<(String, String)>,
    pub timing: Timing,
}

/// A pod as the other controllers of the cluster see it (Service and Ingress endpoints).
#[derive(Clone, Debug)]
pub struct PodInfo {
    pub namespace: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub ip: Ipv4Addr,
    pub ready: bool,
    /// Container ports by name.
    pub ports: BTreeMap<String, u16>,
    /// Process ids of the running containers (none while the pod initializes or restarts).
    pub pids: Vec<u32>,
    /// Each container's `resources.requests.cpu` as written (`None`: no request), by name.
    pub cpu_requests: BTreeMap<String, Option<String>>,
}

/// The pods the kubelet runs, readable by the rest of the cluster.
pub type PodTable = Arc<Mutex<Vec<PodInfo>>>;

struct RunningPod {
    namespace: String,
    name: String,
    owner_uid: String,
    hash: String,
    labels: BTreeMap<String, String>,
    ip: Ipv4Addr,
    dir: PathBuf,
    spec: Value,
    plan: Option<PodPlan>,
    runtime: Option<PodRuntime>,
    waiting: Option<PlanError>,
    written_status: Value,
}

pub struct Kubelet {
    client: Client,
    config: KubeletConfig,
    pods: Vec<RunningPod>,
    /// The last status written per Deployment uid (a status is written only when it changes).
    written: BTreeMap<String, Value>,
    ips: IpPool,
    next_pod: u64,
    table: PodTable,
}

/// Every ConfigMap and Secret, read once per pass.
struct Snapshot {
    config_maps: BTreeMap<(String, String), BTreeMap<String, String>>,
    secrets: BTreeMap<(String, String), BTreeMap<String, Vec<u8>>>,
}

impl Objects for Snapshot {
    fn config_map(&self, ns: &str, name: &str) -> Option<BTreeMap<String, String>> {
        self.config_maps.get(&(ns.into(), name.into())).cloned()
    }
    fn secret(&self, ns: &str, name: &str) -> Option<BTreeMap<String, Vec<u8>>> {
        self.secrets.get(&(ns.into(), name.into())).cloned()
    }
}

/// How often the loop looks at the API.
const PASS: Duration = Duration::from_millis(200);

impl Kubelet {
    pub fn new(client: Client, config: KubeletConfig, table: PodTable) -> Kubelet {
        Kubelet {
            client,
            config,
            pods: Vec::new(),
            written: BTreeMap::new(),
            // One loopback address per pod.
            ips: IpPool::from(Ipv4Addr::new(127, 1, 0, 1)),
            next_pod: 0,
            table,
        }
    }

    /// Runs until the task is dropped; a failed pass is logged and retried.
    pub async fn run(mut self) {
        super::every("kubelet", PASS, async || self.pass().await).await
    }

    async fn pass(&mut self) -> Result<(), kube::Error> {
        let deployments = Api::<Deployment>::all(self.client.clone())
            .list(&ListParams::default())
            .await?
            .items;
        let snapshot = self.snapshot().await?;
        // Garbage collection: pods whose Deployment (this incarnation of it, by uid) is gone.
        let alive: Vec<String> = deployments.iter().filter_map(|d| d.uid()).collect();
        let orphans: Vec<String> = self
            .pods
            .iter()
            .filter(|p| !alive.contains(&p.owner_uid))
            .map(|p| p.name.clone())
            .collect();
        // Statuses written for Deployments that are gone: a re-created one starts afresh.
        self.written.retain(|uid, _| alive.contains(uid));
        for name in orphans {
            self.delete_pod(&name).await?;
        }
        for deployment in &deployments {
            self.sync_deployment(deployment, &snapshot).await?;
        }
        self.publish_table();
        Ok(())
    }

    async fn snapshot(&self) -> Result<Snapshot, kube::Error> {
        Ok(Snapshot {
            config_maps: self
                .all_data::<ConfigMap, _>(pod_plan::config_map_data)
                .await?,
            secrets: self.all_data::<Secret, _>(pod_plan::secret_data).await?,
        })
    }

    /// (namespace, name) -> `data` of every object of kind `K`, decoded by `decode`.
    async fn all_data<K, D>(
        &self,
        decode: fn(&Value) -> D,
    ) -> Result<BTreeMap<(String, String), D>, kube::Error>
    where
        K: kube::Resource<DynamicType = ()>
            + Clone
            + serde::de::DeserializeOwned
            + serde::Serialize
            + std::fmt::Debug,
    {
        Ok(Api::<K>::all(self.client.clone())
            .list(&ListParams::default())
            .await?
            .items
            .into_iter()
            .map(|o| {
                let key = (o.namespace().unwrap_or_default(), o.name_any());
                (key, decode(&serde_json::to_value(&o).unwrap_or_default()))
            })
            .collect())
    }

    async fn sync_deployment(
        &mut self,
        deployment: &Deployment,
        snapshot: &Snapshot,
    ) -> Result<(), kube::Error> {
        let ns = deployment.namespace().unwrap_or_default();
        let name = deployment.name_any();
        let uid = deployment.uid().unwrap_or_default();
        let spec = serde_json::to_value(deployment.spec.as_ref()).unwrap_or_default();
        let template = &spec["template"];
        let hash = template_hash(template);
        let desired = spec["replicas"].as_u64().unwrap_or(1) as u32;
        let limits = rollout::limits(&spec["strategy"], desired);

        // Pods waiting for their objects (or not started yet) try again; volumes follow objects.
        for pod in self.pods.iter_mut().filter(|p| p.owner_uid == uid) {
            pod.advance(&self.config, snapshot);
        }
        let views = self.views(&uid);
        for step in rollout::next_steps(desired, limits, &hash, &views) {
            match step {
                Step::Create => {
                    self.create_pod(deployment, template, &hash, snapshot)
                        .await?
                }
                Step::Delete(pod) => self.delete_pod(&pod).await?,
            }
        }
        for pod in self.pods.iter_mut().filter(|p| p.owner_uid == uid) {
            pod.write_status(&self.client).await?;
        }
        let views = self.views(&uid);
        let generation = deployment.metadata.generation.unwrap_or(0);
        let status = rollout::status(desired, limits.1, &hash, generation, &views, &now());
        if self.written.get(&uid).map(without_times) != Some(without_times(&status)) {
            Api::<Deployment>::namespaced(self.client.clone(), &ns)
                .patch_status(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"status": status})),
                )
                .await?;
            self.written.insert(uid, status);
        }
        Ok(())
    }

    /// The pods of the Deployment with `uid`, as the rollout sees them.
    fn views(&self, uid: &str) -> Vec<PodView> {
        self.pods
            .iter()
            .filter(|p| p.owner_uid == uid)
            .map(|p| PodView {
                name: p.name.clone(),
                template_hash: p.hash.clone(),
                ready: p.state_ready(),
            })
            .collect()
    }

    async fn create_pod(
        &mut self,
        deployment: &Deployment,
        template: &Value,
        hash: &str,
        snapshot: &Snapshot,
    ) -> Result<(), kube::Error> {
        let ns = deployment.namespace().unwrap_or_default();
        self.next_pod += 1;
        let name = format!("{}-{hash}-{}", deployment.name_any(), self.next_pod);
        let ip = self.ips.next();
        let mut labels: BTreeMap<String, String> =
            serde_json::from_value(template["metadata"]["labels"].clone()).unwrap_or_default();
        labels.insert("pod-template-hash".into(), hash.into());
        let pod: Pod = serde_json::from_value(json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "namespace": ns,
                "labels": labels,
                "ownerReferences": [{
                    "apiVersion": "apps/v1", "kind": "Deployment", "name": deployment.name_any(),
                    "uid": deployment.uid().unwrap_or_default(), "controller": true,
                }],
            },
            "spec": template["spec"],
        }))
        .expect("a Pod from a pod template");
        Api::<Pod>::namespaced(self.client.clone(), &ns)
            .create(&PostParams::default(), &pod)
            .await?;
        let dir = self.config.root.join("pods").join(&ns).join(&name);
        let mut running = RunningPod {
            namespace: ns,
            name,
            owner_uid: deployment.uid().unwrap_or_default(),
            hash: hash.to_owned(),
            labels,
            ip,
            dir,
            spec: template["spec"].clone(),
            plan: None,
            runtime: None,
            waiting: None,
            written_status: Value::Null,
        };
        running.advance(&self.config, snapshot);
        self.pods.push(running);
        Ok(())
    }

    /// Takes the pod out of the endpoints at once, deletes its object, and terminates its
    /// processes in the background (preStop, SIGTERM, grace period).
    async fn delete_pod(&mut self, name: &str) -> Result<(), kube::Error> {
        let Some(index) = self.pods.iter().position(|p| p.name == name) else {
            return Ok(());
        };
        let pod = self.pods.remove(index);
        if let Some(runtime) = pod.runtime {
            tokio::spawn(runtime.terminate());
        }
        self.publish_table();
        match Api::<Pod>::namespaced(self.client.clone(), &pod.namespace)
            .delete(&pod.name, &DeleteParams::default())
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn publish_table(&self) {
        let rows = self
            .pods
            .iter()
            .map(|p| {
                let state = p.runtime.as_ref().map(|r| r.state()).unwrap_or_default();
                PodInfo {
                    namespace: p.namespace.clone(),
                    name: p.name.clone(),
                    labels: p.labels.clone(),
                    ip: p.ip,
                    ready: state.ready,
                    ports: p
                        .plan
                        .iter()
                        .flat_map(|plan| plan.containers.iter())
                        .flat_map(|c| c.ports.clone())
                        .collect(),
                    pids: state.pids.values().copied().collect(),
                    cpu_requests: p.spec["containers"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|c| {
                            let name = c["name"].as_str().unwrap_or_default().to_owned();
                            let cpu = &c["resources"]["requests"]["cpu"];
                            // A quantity may be written as a JSON number too.
                            let cpu = cpu
                                .as_str()
                                .map(str::to_owned)
                                .or_else(|| cpu.is_number().then(|| cpu.to_string()));
                            (name, cpu)
                        })
                        .collect(),
                }
            })
            .collect();
        *self.table.lock().unwrap() = rows;
    }
}

impl RunningPod {
    fn state_ready(&self) -> bool {
        self.runtime.as_ref().is_some_and(|r| r.state().ready)
    }

    /// Plans and starts the pod once its objects exist; keeps file volumes current.
    fn advance(&mut self, config: &KubeletConfig, objects: &Snapshot) {
        if self.plan.is_none() {
            let site = PodSite {
                namespace: &self.namespace,
                name: &self.name,
                ip: self.ip,
                dir: &self.dir,
                images: &config.images,
                claims: &config.claims,
                cluster_env: &config.env,
            };
            match pod_plan::plan(&self.spec, &site, objects) {
                Ok(plan) => self.plan = Some(plan),
                Err(error) => {
                    self.waiting = Some(error);
                    return;
                }
            }
        }
        let plan = self.plan.as_ref().expect("planned above");
        if let Err(error) = sync_volumes(&self.namespace, plan, objects) {
            self.waiting = Some(error);
            return;
        }
        self.waiting = None;
        if self.runtime.is_none() {
            let logs = self.dir.join("logs");
            let _ = std::fs::create_dir_all(&logs);
            self.runtime = Some(PodRuntime::start(
                plan.clone(),
                self.ip,
                logs,
                config.timing,
            ));
        }
    }

    async fn write_status(&mut self, client: &Client) -> Result<(), kube::Error> {
        let state = self.runtime.as_ref().map(|r| r.state()).unwrap_or_default();
        let waiting = self
            .waiting
            .as_ref()
            .map(|e| (e.reason.to_owned(), e.message.clone()))
            .or(state.waiting.clone());
        let condition = |type_: &str, ok: bool| json!({"type": type_, "status": if ok { "True" } else { "False" }});
        let status = json!({
            "phase": if state.initialized { "Running" } else { "Pending" },
            "podIP": self.ip.to_string(),
            "podIPs": [{"ip": self.ip.to_string()}],
            "hostIP": "127.0.0.1",
            "conditions": [
                condition("PodScheduled", true),
                condition("Initialized", state.initialized),
                condition("ContainersReady", state.ready),
                condition("Ready", state.ready),
            ],
            "containerStatuses": self.plan.iter().flat_map(|p| p.containers.iter()).map(|c| json!({
                "name": c.name,
                "image": c.program.display().to_string(),
                "imageID": "",
                "ready": state.ready,
                "started": state.started,
                "restartCount": state.restarts,
                "state": match &waiting {
                    Some((reason, message)) => json!({"waiting": {"reason": reason, "message": message}}),
                    None => json!({"running": {}}),
                },
            })).collect::<Vec<_>>(),
        });
        if status == self.written_status {
            return Ok(());
        }
        Api::<Pod>::namespaced(client.clone(), &self.namespace)
            .patch_status(
                &self.name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": status})),
            )
            .await?;
        self.written_status = status;
        Ok(())
    }
}

/// Makes each volume's folder and writes ConfigMap/Secret keys as files (atomically, removing
/// keys that are gone), as the kubelet keeps projected volumes current.
fn sync_volumes(namespace: &str, plan: &PodPlan, objects: &Snapshot) -> Result<(), PlanError> {
    let failed = |message: String| PlanError {
        reason: "FailedMount",
        message,
    };
    for (name, (dir, source)) in &plan.volumes {
        match source {
            VolumeSource::EmptyDir => {
                std::fs::create_dir_all(dir).map_err(|e| failed(format!("{name}: {e}")))?
            }
            VolumeSource::HostFolder(folder) => {
                if !folder.is_dir() {
                    return Err(failed(format!(
                        "{name}: host folder {} is missing",
                        folder.display()
                    )));
                }
            }
            VolumeSource::Files { kind, name: object } => {
                let files: Option<BTreeMap<String, Vec<u8>>> = match kind {
                    pod_plan::ObjectKind::Secret => objects.secret(namespace, object),
                    pod_plan::ObjectKind::ConfigMap => objects
                        .config_map(namespace, object)
                        .map(|d| d.into_iter().map(|(k, v)| (k, v.into_bytes())).collect()),
                };
                let files =
                    files.ok_or_else(|| failed(format!("{kind:?} {object:?} not found")))?;
                write_files(dir, &files).map_err(|e| failed(format!("{name}: {e}")))?;
            }
        }
    }
    Ok(())
}

fn write_files(dir: &Path, files: &BTreeMap<String, Vec<u8>>) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for (key, content) in files {
        let path = dir.join(key);
        if std::fs::read(&path).ok().as_deref() == Some(content.as_slice()) {
            continue;
        }
        let tmp = dir.join(format!(".{key}.tmp"));
        std::fs::write(&tmp, content)?;
        std::fs::rename(&tmp, &path)?;
    }
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !files.contains_key(&name) && !name.starts_with('.') {
            std::fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}

/// Loopback addresses handed out in order from a start address, skipping .0 and .255.
pub struct IpPool(u32);

impl From<Ipv4Addr> for IpPool {
    fn from(first: Ipv4Addr) -> IpPool {
        IpPool(u32::from(first))
    }
}

impl IpPool {
    pub fn next(&mut self) -> Ipv4Addr {
        loop {
            let ip = Ipv4Addr::from(self.0);
            self.0 += 1;
            if !matches!(ip.octets()[3], 0 | 255) {
                return ip;
            }
        }
    }
}

/// A stable hash of the pod template (the `pod-template-hash` label).
fn template_hash(template: &Value) -> String {
    let mut hasher = std::hash::DefaultHasher::new();
    template.to_string().hash(&mut hasher);
    format!("{:08x}", hasher.finish() as u32)
}

fn without_times(status: &Value) -> Value {
    let mut status = status.clone();
    for c in status["conditions"].as_array_mut().into_iter().flatten() {
        if let Some(c) = c.as_object_mut() {
            c.remove("lastUpdateTime");
            c.remove("lastTransitionTime");
        }
    }
    status
}

fn now() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_volumes_follow_their_object() {
        let dir = std::env::temp_dir().join(format!("testkit-files-{}", std::process::id()));
        let files = BTreeMap::from([
            ("a".to_owned(), b"1".to_vec()),
            ("b".to_owned(), b"2".to_vec()),
        ]);
        write_files(&dir, &files).unwrap();
        let files = BTreeMap::from([("a".to_owned(), b"3".to_vec())]);
        write_files(&dir, &files).unwrap();
        assert_eq!(std::fs::read(dir.join("a")).unwrap(), b"3");
        assert!(!dir.join("b").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
