//! One real API server per test process: `../shared/tools/crd-apiserver/run.sh start` under
//! `target/crd-apiserver/`, our CRDs applied from `manifests/crds/` and waited for.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::skip;

/// A running instance (etcd + crd-apiserver) with the NluService and Tenant CRDs Established.
pub struct ApiServer {
    kubeconfig: PathBuf,
}

/// The API server of this test process, started on first use; `None` (after a visible `SKIP`
/// line) when the tool is not built, a panic instead when `NLU_REQUIRE_APISERVER=1`.
///
/// The instance is stopped by a watchdog once this process is gone, however it ends (all tests
/// done, a panic with `panic = "abort"`, Ctrl-C, a kill): statics are never dropped, so a `Drop`
/// guard alone would leave etcd and the server running.
#[track_caller]
pub fn api_server() -> Option<&'static ApiServer> {
    static SERVER: OnceLock<Option<ApiServer>> = OnceLock::new();
    let server = SERVER
        .get_or_init(|| is_built().then(ApiServer::start))
        .as_ref();
    if server.is_none() {
        skip::missing(
            "the CRD API server (../shared/tools/crd-apiserver)",
            "NLU_REQUIRE_APISERVER",
            "build it once with ../shared/tools/crd-apiserver/setup.sh",
        );
    }
    server
}

impl ApiServer {
    fn start() -> ApiServer {
        let exe = std::env::current_exe().expect("test binary path");
        let name = exe.file_stem().and_then(|s| s.to_str()).unwrap_or("tests");
        let dir = workspace_root()
            .join("target/crd-apiserver")
            .join(format!("{name}-{}", std::process::id()));
        let run_sh = tool_dir().join("run.sh");

        let started = checked(
            Command::new("bash").arg(&run_sh).arg("start").arg(&dir),
            "run.sh start",
        );
        let kubeconfig = PathBuf::from(String::from_utf8_lossy(&started.stdout).trim());
        stop_when_process_ends(&run_sh, &dir);

        let server = ApiServer { kubeconfig };
        let crds = workspace_root().join("manifests/crds");
        let crds = crds.to_str().expect("UTF-8 path");
        server.kubectl_ok(&["apply", "--server-side", "-f", crds]);
        server.kubectl_ok(&[
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "-f",
            crds,
        ]);
        server
    }

    /// Path of the admin kubeconfig (client certificate, namespace `default`).
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// A client of the real server. Make one per test: a client belongs to the Tokio runtime of
    /// the test that made it.
    pub async fn client(&self) -> kube::Client {
        client_of(&self.kubeconfig).await
    }

    /// Runs the `kubectl` of the tool against this server; the output is returned whatever the
    /// exit status.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        Command::new(kubectl_path())
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .output()
            .expect("kubectl of the crd-apiserver tool runs")
    }

    /// Runs `kubectl` and panics with its stderr unless it succeeds; returns its stdout.
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// A client on the current runtime from the kubeconfig at `path`.
pub(crate) async fn client_of(path: &Path) -> kube::Client {
    let kubeconfig = Kubeconfig::read_from(path).expect("kubeconfig written by run.sh");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("kubeconfig usable by kube");
    kube::Client::try_from(config).expect("client from kubeconfig")
}

fn checked(command: &mut Command, what: &str) -> Output {
    let out = command.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A detached shell (own process group, so Ctrl-C on `cargo test` does not take it down) that
/// waits for this process to exit, then stops the instance and removes its folder. It outlives
/// this process by design, so nothing here waits for it.
#[allow(clippy::zombie_processes)]
fn stop_when_process_ends(run_sh: &Path, dir: &Path) {
    use std::os::unix::process::CommandExt;
    Command::new("sh")
        .arg("-c")
        .arg(r#"while kill -0 "$0" 2>/dev/null; do sleep 0.5; done; bash "$1" stop "$2"; rm -rf "$2""#)
        .arg(std::process::id().to_string())
        .arg(run_sh)
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("sh starts");
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn tool_dir() -> PathBuf {
    workspace_root().join("../shared/tools/crd-apiserver")
}

fn tool_home() -> PathBuf {
    match std::env::var_os("CRD_APISERVER_HOME") {
        Some(home) => PathBuf::from(home),
        None => {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/crd-apiserver")
        }
    }
}

/// The `kubectl` that `setup.sh` extracted (same release line as the server).
fn kubectl_path() -> PathBuf {
    tool_home().join("root/usr/bin/kubectl")
}

fn is_built() -> bool {
    tool_dir().join("run.sh").is_file()
        && tool_home().join("bin/crd-apiserver").is_file()
        && tool_home().join("root/usr/bin/etcd").is_file()
        && kubectl_path().is_file()
}
