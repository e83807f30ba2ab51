//! One pod as real processes: init containers one after another to success, then each container
//! under its probes, restarted (with a growing back-off) when it exits or its liveness probe
//! fails; on termination: out of the endpoints first, then `preStop`, SIGTERM, and SIGKILL
//! after the grace period. Probe periods are capped by the cluster (tests should not wait ten
//! seconds per probe); thresholds are kept.

use std::fs::File;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};
use tokio::sync::watch;

use super::pod_plan::{PodPlan, Probe, ProcessSpec};

/// What the kubelet reports of a pod.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PodState {
    pub initialized: bool,
    pub started: bool,
    pub ready: bool,
    pub restarts: u32,
    /// Why the pod is not running (e.g. `CrashLoopBackOff`), with a message.
    pub waiting: Option<(String, String)>,
    /// Process id of each running (main) container, by container name: what the HPA's CPU
    /// metric reads under `/proc` (a metrics-server's cgroup reading, here per process).
    pub pids: std::collections::BTreeMap<String, u32>,
}

/// A running pod; dropping it does not stop it, [`PodRuntime::terminate`] does.
pub struct PodRuntime {
    pub state: Arc<Mutex<PodState>>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

/// Knobs of the whole cluster that bend kubelet timing.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    /// Probe periods (and `preStop` sleeps) are at most this long.
    pub probe_period_cap: Duration,
}

impl PodRuntime {
    pub fn start(plan: PodPlan, ip: Ipv4Addr, logs: PathBuf, timing: Timing) -> PodRuntime {
        let state = Arc::new(Mutex::new(PodState::default()));
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(run(plan, ip, logs, timing, state.clone(), stopped));
        PodRuntime { state, stop, task }
    }

    /// Terminates the pod as a kubelet would and waits until its processes are gone.
    pub async fn terminate(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }

    pub fn state(&self) -> PodState {
        self.state.lock().unwrap().clone()
    }
}

async fn run(
    plan: PodPlan,
    ip: Ipv4Addr,
    logs: PathBuf,
    timing: Timing,
    state: Arc<Mutex<PodState>>,
    mut stopped: watch::Receiver<bool>,
) {
    let set = |f: &dyn Fn(&mut PodState)| f(&mut state.lock().unwrap());
    for init in &plan.init {
        let mut backoff = Backoff::default();
        loop {
            let outcome = tokio::select! {
                status = run_to_end(init, &logs) => status,
                _ = stopped.changed() => return,
            };
            match outcome {
                Ok(()) => break,
                Err(message) => {
                    set(&|s| {
                        s.restarts += 1;
                        s.waiting = Some(("Init:CrashLoopBackOff".into(), message.clone()));
                    });
                    tokio::select! {
                        _ = tokio::time::sleep(backoff.next()) => {}
                        _ = stopped.changed() => return,
                    }
                }
            }
        }
    }
    set(&|s| {
        s.initialized = true;
        s.waiting = None;
    });
    let containers = plan.containers.iter().map(|c| {
        supervise(
            c.clone(),
            ip,
            logs.clone(),
            timing,
            state.clone(),
            stopped.clone(),
            plan.termination_grace_secs,
        )
    });
    futures::future::join_all(containers).await;
}

/// Runs one container until the pod stops, restarting it as needed.
async fn supervise(
    spec: ProcessSpec,
    ip: Ipv4Addr,
    logs: PathBuf,
    timing: Timing,
    state: Arc<Mutex<PodState>>,
    mut stopped: watch::Receiver<bool>,
    grace_secs: u64,
) {
    let mut backoff = Backoff::default();
    loop {
        let mut child = match spawn(&spec, &logs) {
            Ok(child) => child,
            Err(message) => {
                state.lock().unwrap().waiting = Some(("RunContainerError".into(), message));
                tokio::select! {
                    _ = tokio::time::sleep(backoff.next()) => continue,
                    _ = stopped.changed() => return,
                }
            }
        };
        if let Some(pid) = child.id() {
            state.lock().unwrap().pids.insert(spec.name.clone(), pid);
        }
        let ended = tokio::select! {
            ended = watch_container(&spec, ip, timing, &state, &mut child) => ended,
            _ = stopped.changed() => {
                state.lock().unwrap().ready = false;
                let pre_stop = Duration::from_secs(spec.pre_stop_sleep_secs).min(timing.probe_period_cap);
                tokio::time::sleep(pre_stop).await;
                stop(&mut child, Duration::from_secs(grace_secs)).await;
                state.lock().unwrap().pids.remove(&spec.name);
                return;
            }
        };
        let _ = child.start_kill();
        let _ = child.wait().await;
        {
            let mut s = state.lock().unwrap();
            s.pids.remove(&spec.name);
            s.ready = false;
            s.started = false;
            s.restarts += 1;
            s.waiting = Some(("CrashLoopBackOff".into(), ended));
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff.next()) => {}
            _ = stopped.changed() => return,
        }
    }
}

/// Probes a running container; returns why it must be restarted.
async fn watch_container(
    spec: &ProcessSpec,
    ip: Ipv4Addr,
    timing: Timing,
    state: &Mutex<PodState>,
    child: &mut Child,
) -> String {
    let period = |p: &Probe| Duration::from_secs(p.period_secs.max(1)).min(timing.probe_period_cap);
    let exited = |status: std::io::Result<std::process::ExitStatus>| match status {
        Ok(s) => format!("container {} exited: {s}", spec.name),
        Err(e) => format!("container {}: {e}", spec.name),
    };
    if let Some(startup) = &spec.startup {
        let mut failures = 0;
        loop {
            tokio::select! {
                status = child.wait() => return exited(status),
                _ = tokio::time::sleep(period(startup)) => {}
            }
            if check(startup, ip).await {
                break;
            }
            failures += 1;
            if failures >= startup.failure_threshold {
                return format!("startup probe failed {failures} times");
            }
        }
    }
    {
        let mut s = state.lock().unwrap();
        s.started = true;
        s.waiting = None;
        // Without a readiness probe a started container is ready.
        s.ready = spec.readiness.is_none();
    }
    let tick = [&spec.readiness, &spec.liveness]
        .iter()
        .filter_map(|p| p.as_ref().map(period))
        .min()
        .unwrap_or(timing.probe_period_cap);
    let (mut ready_streak, mut unready_streak, mut dead_streak) = (0u32, 0u32, 0u32);
    loop {
        if let Some(readiness) = &spec.readiness {
            if check(readiness, ip).await {
                ready_streak += 1;
                unready_streak = 0;
                if ready_streak >= readiness.success_threshold {
                    state.lock().unwrap().ready = true;
                }
            } else {
                unready_streak += 1;
                ready_streak = 0;
                if unready_streak >= readiness.failure_threshold {
                    state.lock().unwrap().ready = false;
                }
            }
        }
        if let Some(liveness) = &spec.liveness {
            if check(liveness, ip).await {
                dead_streak = 0;
            } else {
                dead_streak += 1;
                if dead_streak >= liveness.failure_threshold {
                    return format!("liveness probe failed {dead_streak} times");
                }
            }
        }
        tokio::select! {
            status = child.wait() => return exited(status),
            _ = tokio::time::sleep(tick) => {}
        }
    }
}

/// One HTTP GET as a kubelet's probe makes it: 200-399 within the timeout is success.
pub async fn check(probe: &Probe, ip: Ipv4Addr) -> bool {
    let get = async {
        let mut stream = tokio::net::TcpStream::connect((ip, probe.port))
            .await
            .ok()?;
        let request = format!(
            "GET {} HTTP/1.1\r\nHost: {ip}:{}\r\nUser-Agent: kube-probe/testkit\r\nConnection: close\r\n\r\n",
            probe.path, probe.port
        );
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).await.ok()?;
        let code: u16 = std::str::from_utf8(&head[9..12]).ok()?.parse().ok()?;
        Some((200..400).contains(&code))
    };
    let timeout = Duration::from_secs(probe.timeout_secs.max(1));
    matches!(tokio::time::timeout(timeout, get).await, Ok(Some(true)))
}

async fn run_to_end(spec: &ProcessSpec, logs: &Path) -> Result<(), String> {
    let mut child = spawn(spec, logs)?;
    let status = child.wait().await.map_err(|e| e.to_string())?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("init container {} exited: {status}", spec.name))
    }
}

fn spawn(spec: &ProcessSpec, logs: &Path) -> Result<Child, String> {
    let log = File::options()
        .create(true)
        .append(true)
        .open(logs.join(format!("{}.log", spec.name)))
        .map_err(|e| format!("log file: {e}"))?;
    let err = log.try_clone().map_err(|e| e.to_string())?;
    let mut command = Command::new(&spec.program);
    command
        .args(&spec.args)
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err)
        .kill_on_drop(true);
    // The processes die with the cluster's process, however it ends.
    // SAFETY: prctl is async-signal-safe and touches only the child's own state.
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    command
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", spec.program.display()))
}

/// SIGTERM, then SIGKILL after `grace`.
async fn stop(child: &mut Child, grace: Duration) {
    if let Some(pid) = child.id() {
        // SAFETY: signalling our own child process by its id.
        unsafe {
            libc::kill(pid as i32, libc::SIGTERM);
        }
    }
    if tokio::time::timeout(grace, child.wait()).await.is_err() {
        let _ = child.kill().await;
    }
}

/// Restart delays: 0.2 s doubling up to 5 s (the kubelet's 10 s..5 min, shortened for tests).
#[derive(Default)]
struct Backoff(u32);

impl Backoff {
    fn next(&mut self) -> Duration {
        let delay = Duration::from_millis(200) * 2u32.pow(self.0.min(5));
        self.0 += 1;
        delay.min(Duration::from_secs(5))
    }
}
