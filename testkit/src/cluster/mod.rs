//! The process cluster: the whole product running as processes on this machine, behind the
//! same Kubernetes client types as a real cluster (see `docs/testing.md`).
//!
//! What runs for real: the API server for our custom resources (crd-apiserver, etcd), every
//! pod of every Deployment as real processes of this workspace's binaries (init containers,
//! probes, restarts, rolling updates), a model hub on loopback for the init containers'
//! downloads. What is a stand-in: the core kinds' API ([`crate::ClusterProxy`]'s in-memory
//! store, [`crate::fake_api`]: no admission, no managed fields), and the kubelet's isolation:
//! processes run as the test's user with path mapping instead of mounts (see [`pod_plan`]), no
//! cgroup limits, no `securityContext`. ReplicaSets are not modelled (pods belong to their
//! Deployment).
//!
//! Controllers besides the kubelet: Services as loopback load balancers ([`services`]), the
//! HTTPS Ingress front ([`ingress`]), garbage collection by owner ([`gc`]), and the
//! HorizontalPodAutoscaler ([`hpa`]: CPU from `/proc`, Pods metrics scraped from the pods'
//! `/metrics`, the real controller's algorithm, stabilization windows capped at
//! [`ClusterOptions::hpa_window_cap`]).

mod gc;
mod hpa;
mod hub;
mod ingress;
mod kubelet;
mod pod_plan;
mod pod_runtime;
mod rollout;
mod services;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The garbage collector alone (runs until dropped), for tests of the API-server tier that
/// need owner references honoured without a whole process cluster.
pub use gc::run as collect_garbage;
pub use kubelet::PodInfo;

use crate::apiserver::api_server;
use crate::proxy::ClusterProxy;

/// What the cluster runs and serves.
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    /// Where pods' folders, logs and the kubeconfig go (made if missing).
    pub root: PathBuf,
    /// Image name (last path segment, no tag) -> program, e.g. `nlu-server` -> the built binary.
    pub images: BTreeMap<String, PathBuf>,
    /// PVC claim name -> host folder.
    pub claims: BTreeMap<String, PathBuf>,
    /// Hub repo id -> model folder, served to the pods as both Hugging Face and ModelScope.
    pub models: BTreeMap<String, PathBuf>,
    /// Probe periods and preStop sleeps are capped at this (default 1 s).
    pub probe_period_cap: Duration,
    /// HPA stabilization windows are capped at this (default 10 s; the real default
    /// scale-down window is 300 s), so a test sees a scale-down in seconds.
    pub hpa_window_cap: Duration,
}

impl ClusterOptions {
    pub fn new(root: impl Into<PathBuf>) -> ClusterOptions {
        ClusterOptions {
            root: root.into(),
            images: BTreeMap::new(),
            claims: BTreeMap::new(),
            models: BTreeMap::new(),
            probe_period_cap: Duration::from_secs(1),
            hpa_window_cap: Duration::from_secs(10),
        }
    }
}

/// A running process cluster; everything stops when the test process ends.
pub struct ProcessCluster {
    proxy_url: String,
    kubeconfig: PathBuf,
    hub: String,
    ingress: SocketAddr,
    pods: kubelet::PodTable,
    services: services::ServiceTable,
    root: PathBuf,
}

impl ProcessCluster {
    /// Starts the cluster on a runtime of its own (so any test's runtime can use it); `None`
    /// when the API server tool is missing (after `crate::api_server`'s SKIP line).
    #[track_caller]
    pub fn start(options: ClusterOptions) -> Option<ProcessCluster> {
        let api = api_server()?;
        std::fs::create_dir_all(&options.root).expect("cluster root folder");
        let api_kubeconfig = api.kubeconfig().to_path_buf();
        let pods: kubelet::PodTable = Arc::default();
        let table = pods.clone();
        let services: services::ServiceTable = Arc::default();
        let service_table = services.clone();
        let (ready, started) = std::sync::mpsc::channel();
        let opts = options.clone();
        std::thread::Builder::new()
            .name("process-cluster".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("cluster runtime");
                runtime.block_on(async move {
                    let upstream = crate::apiserver::client_of(&api_kubeconfig).await;
                    let proxy = ClusterProxy::start(upstream).await;
                    let hub = hub::start(Arc::new(opts.models.clone())).await;
                    let config = kubelet::KubeletConfig {
                        root: opts.root.clone(),
                        images: opts.images.clone(),
                        claims: opts.claims.clone(),
                        env: vec![
                            ("HF_ENDPOINT".into(), hub.clone()),
                            ("NLU_HUB_ENDPOINT".into(), hub.clone()),
                            ("NLU_MODELSCOPE_ENDPOINT".into(), hub.clone()),
                            ("RUST_LOG".into(), "info".into()),
                        ],
                        timing: pod_runtime::Timing {
                            probe_period_cap: opts.probe_period_cap,
                        },
                    };
                    let kubelet = kubelet::Kubelet::new(proxy.client(), config, table.clone());
                    let (front, ingress) = ingress::IngressFront::start(
                        proxy.client(),
                        Arc::new(ingress::TestCa::new()),
                        service_table.clone(),
                        table.clone(),
                    )
                    .await;
                    let autoscalers =
                        hpa::Autoscalers::new(proxy.client(), table.clone(), opts.hpa_window_cap);
                    let balancers =
                        services::LoadBalancers::new(proxy.client(), table, service_table);
                    let _ = ready.send((proxy.url(), hub, ingress));
                    // The proxy lives as long as this runtime: for the rest of the process.
                    let _proxy = proxy;
                    tokio::join!(
                        kubelet.run(),
                        balancers.run(),
                        front.run(),
                        autoscalers.run(),
                        gc::run(_proxy.client())
                    );
                });
            })
            .expect("cluster thread");
        let (proxy_url, hub, ingress) = started.recv().expect("the process cluster started");
        let kubeconfig = options.root.join("kubeconfig");
        std::fs::write(&kubeconfig, crate::proxy::kubeconfig_text(&proxy_url)).expect("kubeconfig");
        Some(ProcessCluster {
            proxy_url,
            kubeconfig,
            hub,
            ingress,
            pods,
            services,
            root: options.root,
        })
    }

    /// A client of the cluster, for the calling test's runtime.
    pub fn client(&self) -> kube::Client {
        let url = self.proxy_url.parse().expect("proxy URL");
        kube::Client::try_from(kube::Config::new(url)).expect("client of the cluster")
    }

    /// A kubeconfig for `kubectl` and `nlu-operator` (plain HTTP to the cluster's API).
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// The HTTPS Ingress front (`127.0.0.1:PORT`; hosts are told apart by SNI and `Host`).
    pub fn ingress_address(&self) -> SocketAddr {
        self.ingress
    }

    /// The model hub's URL.
    pub fn hub(&self) -> &str {
        &self.hub
    }

    /// The URL of `repo` (a key of [`ClusterOptions::models`]) as a `.tar.gz`.
    pub fn archive_url(&self, repo: &str) -> String {
        format!("{}{}", self.hub, hub::archive_path(repo))
    }

    /// The pods running now.
    pub fn pods(&self) -> Vec<PodInfo> {
        self.pods.lock().unwrap().clone()
    }

    /// Where Service `namespace/name` listens for its `port` (its loopback cluster IP).
    pub fn service_address(&self, namespace: &str, name: &str, port: u16) -> Option<SocketAddr> {
        let table = self.services.lock().unwrap();
        let entry = table.get(&(namespace.to_owned(), name.to_owned()))?;
        entry
            .ports
            .contains_key(&port)
            .then(|| SocketAddr::from((entry.ip, port)))
    }

    /// What a pod's container wrote so far.
    pub fn logs(&self, namespace: &str, pod: &str, container: &str) -> String {
        let path = self
            .root
            .join("pods")
            .join(namespace)
            .join(pod)
            .join("logs")
            .join(format!("{container}.log"));
        std::fs::read_to_string(path).unwrap_or_default()
    }
}

/// Runs a controller's `pass` every `period` for as long as the cluster runs; a failed pass is
/// logged (as `process cluster <name>: ...`) and tried again on the next round.
async fn every(
    name: &str,
    period: Duration,
    mut pass: impl AsyncFnMut() -> Result<(), kube::Error>,
) {
    loop {
        if let Err(error) = pass().await {
            eprintln!("process cluster {name}: {error}");
        }
        tokio::time::sleep(period).await;
    }
}

/// A binary of this workspace built in the profile of the running test (built now if missing,
/// e.g. under `cargo test -p e2e`, which builds no other package's binaries).
pub fn workspace_binary(package: &str, name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    // target/<profile>/deps/<test> (a test) or target/<profile>/<bin> (process-cluster)
    // -> target/<profile>
    let parent = exe.parent().expect("the binary's folder");
    let profile_dir = match parent.file_name() {
        Some(name) if name == "deps" => parent.parent().expect("target/<profile>"),
        _ => parent,
    };
    let binary = profile_dir.join(name);
    if !binary.exists() {
        let mut cargo = std::process::Command::new(env!("CARGO"));
        cargo.args(["build", "-p", package, "--bin", name]);
        if profile_dir.file_name().is_some_and(|p| p == "release") {
            cargo.arg("--release");
        }
        let status = cargo.status().expect("cargo runs");
        assert!(
            status.success(),
            "cargo build -p {package} --bin {name} failed"
        );
    }
    binary
}
