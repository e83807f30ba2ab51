//! The process-cluster backend of the suite (the default; `NLU_E2E_BACKEND=kind` selects kind):
//! one [`ProcessCluster`] per test process with what `e2e/run.sh` prepares on kind (the model
//! claim), a real `redis-server`, and `nlu-operator run` as
//! its own process against the cluster's API (as the chart would run it).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;

use tokio::sync::OnceCell;

use nlu_testkit::{
    kill_when_this_process_ends, workspace_binary, ClusterOptions, ProcessCluster, RedisServer,
};

use crate::{EMBED_MODEL_PATH, MODEL_CLAIM, MODEL_PATH};

/// Namespace of the operator (signing key, leader Lease).
pub const OPERATOR_NAMESPACE: &str = "nlu-system";

/// The cluster and what runs beside it, for the rest of the test process.
pub struct Backend {
    pub cluster: ProcessCluster,
    /// Behind a lock: a scenario stops and restarts it.
    pub redis: Mutex<RedisServer>,
    pub root: PathBuf,
    /// The running operators by identity (in the Lease): one, or two while a scenario hands
    /// the lead over.
    operators: Mutex<BTreeMap<String, Child>>,
}

/// Starts the backend on first use.
pub async fn backend() -> &'static Backend {
    static BACKEND: OnceCell<Backend> = OnceCell::const_new();
    BACKEND.get_or_init(start).await
}

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The fixture's expected outputs, when the process backend serves the fixture model (the
/// default), as `e2e/run.sh` does on kind.
pub fn fixture_expected() -> Option<String> {
    let kind = crate::backend_kind() == crate::BackendKind::Kind;
    let own_model = std::env::var_os("NLU_E2E_MODEL_DIR").is_some();
    (!kind && !own_model).then(|| {
        let path = workspace().join("../shared/fixtures/uninlu-tiny/expected.json");
        path.to_string_lossy().into_owned()
    })
}

async fn start() -> Backend {
    let root = workspace()
        .join("target/e2e-process")
        .join(std::process::id().to_string());
    let _ = std::fs::remove_dir_all(&root);
    let claim = root.join("claims").join(MODEL_CLAIM);
    std::fs::create_dir_all(&claim).expect("claim folder");
    let model = std::env::var_os("NLU_E2E_MODEL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("../shared/fixtures/uninlu-tiny/model"));
    std::os::unix::fs::symlink(&model, claim.join(MODEL_PATH)).expect("model link");
    let gte = workspace().join("../shared/fixtures/gte-tiny/model");
    std::os::unix::fs::symlink(gte, claim.join(EMBED_MODEL_PATH)).expect("model link");

    let redis = RedisServer::start().expect("the e2e suite needs redis-server");
    let mut options = ClusterOptions::new(root.join("cluster"));
    options.images.insert(
        "nlu-server".into(),
        workspace_binary("nlu-server", "nlu-server"),
    );
    options.claims.insert(MODEL_CLAIM.into(), claim);
    let cluster = ProcessCluster::start(options)
        .expect("the process cluster needs the CRD API server (../shared/tools/crd-apiserver)");
    // No Redis Secret for the services: the operator writes `nlu-redis` (the namespace's own
    // ACL user) as it does in a real cluster.
    let backend = Backend {
        cluster,
        redis: Mutex::new(redis),
        root,
        operators: Mutex::default(),
    };
    backend.start_operator("operator");
    backend
}

impl Backend {
    /// SIGTERM to every running operator; returns once their processes are gone.
    pub fn stop_operator(&self) -> anyhow::Result<()> {
        let names: Vec<String> = self.operators.lock().unwrap().keys().cloned().collect();
        names
            .iter()
            .try_for_each(|name| self.stop_operator_named(name))
    }

    /// SIGTERM to the operator of identity `name` (none running: nothing to do); returns once
    /// its process is gone.
    pub fn stop_operator_named(&self, name: &str) -> anyhow::Result<()> {
        let Some(mut child) = self.operators.lock().unwrap().remove(name) else {
            return Ok(());
        };
        Command::new("kill").arg(child.id().to_string()).status()?;
        for _ in 0..300 {
            if child.try_wait()?.is_some() {
                return Ok(());
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        child.kill()?;
        anyhow::bail!("the operator {name} did not stop within 30 s of SIGTERM (killed)")
    }

    /// Starts `nlu-operator run` with identity `name` in the Lease (log appended to
    /// `{root}/{name}.log`); it leads once no other operator holds the Lease.
    pub fn start_operator(&self, name: &str) {
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(self.root.join(format!("{name}.log")))
            .expect("log");
        let redis_url = self.redis.lock().unwrap().url();
        let child = Command::new(workspace_binary("nlu-operator", "nlu-operator"))
            .args([
                "run",
                "--log-format",
                "text",
                "--admin-listen",
                "127.0.0.1:0",
            ])
            // As the chart runs it (operator.leaderElection defaults to true).
            .args([
                "--leader-elect",
                "--operator-namespace",
                OPERATOR_NAMESPACE,
                "--identity",
                name,
            ])
            .args(["--redis-url", &redis_url])
            .env("KUBECONFIG", self.cluster.kubeconfig())
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("nlu-operator starts");
        kill_when_this_process_ends(child.id());
        // Kept (and waited for by stop_operator); the watchdog ends it with the test process.
        let previous = self
            .operators
            .lock()
            .unwrap()
            .insert(name.to_owned(), child);
        assert!(previous.is_none(), "operator {name} started twice");
    }
}
