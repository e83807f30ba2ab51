//! The HorizontalPodAutoscaler controller of the process cluster (with a metrics-server and a
//! Prometheus adapter folded in): every second, for every autoscaling/v2 HPA whose target is a
//! Deployment, it reads the metrics of the Deployment's pods, decides a replica count as the
//! real controller does, patches the Deployment's `spec.replicas` (the kubelet then creates or
//! stops pods) and writes the HPA's `status` through its status subresource.
//!
//! Metrics:
//! - `Resource` `cpu` (`Utilization` or `AverageValue` targets): the CPU time of each pod's
//!   container processes (`utime + stime` in `/proc/<pid>/stat`, per process, children not
//!   included) as a rate between two passes (~1 s apart; metrics-server's window is longer),
//!   against the sum of the pod's containers' `resources.requests.cpu`. A pod with a container
//!   without a cpu request makes the metric unavailable, as in a real cluster.
//! - `Pods` (`AverageValue` target): `GET http://<pod IP>:<port>/metrics` of each ready pod,
//!   the sample named as the metric (the sum over its series when it has labels), as a
//!   Prometheus adapter with a plain rule would serve it. The port: the container port named
//!   `http`, else the first container port of the first container that declares one (a
//!   ServiceMonitor names its port; this is the convention our pods follow). A metric
//!   `selector` is ignored.
//! - Other metric types (memory, `ContainerResource`, `Object`, `External`) are unavailable
//!   metrics (`ScalingActive` says which).
//!
//! Decisions (pure, table-tested below) follow the Kubernetes documentation and the replica
//! calculator: per metric `ceil(ready pods * current / target)`, nothing within a tolerance of
//! 0.1, pods without a reading counted conservatively, not-Ready pods set aside (and counted as
//! zero on a scale-up); the highest proposal over the metrics (no scale-down while a metric is
//! unavailable); stabilization over the recent recommendations (scale-down: the highest over
//! `behavior.scaleDown.stabilizationWindowSeconds`, default 300 s; scale-up: the lowest over
//! `behavior.scaleUp.stabilizationWindowSeconds`, default 0); then `[minReplicas,
//! maxReplicas]`.
//!
//! Deliberate differences: the windows are capped at [`super::ClusterOptions::hpa_window_cap`]
//! (default 10 s) so a test does not wait five minutes for a scale-down; the loop runs every
//! second (the real one every 15 s); scaling policies (`behavior.*.policies`, the default rate
//! limits) and the CPU initialization period are not modelled; a Deployment's selector is its
//! `matchLabels`.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::kubelet::{PodInfo, PodTable};
use super::services::selects;

/// How far the usage ratio may be from 1 before the replica count changes.
pub const TOLERANCE: f64 = 0.1;
/// The scale-down stabilization window when the HPA names none.
pub const DEFAULT_SCALE_DOWN_WINDOW: Duration = Duration::from_secs(300);
/// How often the controller looks (the real one: `--horizontal-pod-autoscaler-sync-period` 15 s).
const PASS: Duration = Duration::from_secs(1);
/// A status whose only change is the metric readings is written at most this often (the
/// operator watches HPAs: a write a second would reconcile every NluService each second).
const READINGS_REFRESH: Duration = Duration::from_secs(5);
/// How long one scrape may take.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(2);

// ---------------------------------------------------------------------------------------------
// The decision (pure)

/// What a metric aims for.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Target {
    /// Percent of the pods' requests (Resource metrics).
    Utilization(f64),
    /// A per-pod average, in the metric's unit.
    AverageValue(f64),
}

/// One pod as one metric sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct PodReading {
    pub name: String,
    pub ready: bool,
    /// The pod's reading; `None` when it has none (scrape failed, first CPU sample, ...).
    pub value: Option<f64>,
    /// The pod's request for the resource (sum over its containers; `None`: a container has
    /// none). Only `Utilization` targets use it.
    pub request: Option<f64>,
}

/// What one metric proposes.
#[derive(Clone, Debug, PartialEq)]
pub struct Proposal {
    pub replicas: u32,
    /// The average over the pods with a reading (before filling in the others).
    pub average: f64,
    /// Percent of the requests, for `Utilization` targets (truncated, as the real one reports).
    pub utilization: Option<i64>,
}

/// The replica count one metric proposes at `current` replicas (the replica calculator of the
/// real controller): pods that are not Ready are set aside, Ready pods without a reading are
/// "missing"; with neither, `ceil(ready pods * ratio)` unless the ratio is within the
/// tolerance; otherwise missing pods count as at the target (scale-down) or as zero
/// (scale-up), set-aside pods as zero on a scale-up, and a proposal that flips direction or
/// lands within the tolerance keeps the current count.
pub fn proposal(current: u32, target: Target, pods: &[PodReading]) -> Result<Proposal, String> {
    let (aim, utilization) = match target {
        Target::Utilization(percent) => (percent / 100.0, true),
        Target::AverageValue(value) => (value, false),
    };
    if aim <= 0.0 {
        return Err(format!("the target {target:?} is not positive"));
    }
    // (value, request) of the pods that count; a request of 1 makes an average of a sum.
    let mut readings: Vec<(f64, f64)> = Vec::new();
    let mut missing: Vec<f64> = Vec::new();
    let mut unready: Vec<f64> = Vec::new();
    for pod in pods {
        let request = if utilization {
            match pod.request {
                Some(r) if r > 0.0 => r,
                _ => return Err(format!("missing request for cpu in pod {}", pod.name)),
            }
        } else {
            1.0
        };
        match (pod.ready, pod.value) {
            (false, _) => unready.push(request),
            (true, None) => missing.push(request),
            (true, Some(value)) => readings.push((value, request)),
        }
    }
    if readings.is_empty() {
        return Err("no metrics for the targeted pods (pods might be unready)".into());
    }
    let ratio = |readings: &[(f64, f64)]| {
        let value: f64 = readings.iter().map(|r| r.0).sum();
        let request: f64 = readings.iter().map(|r| r.1).sum();
        value / request / aim
    };
    let usage_ratio = ratio(&readings);
    let total: f64 = readings.iter().map(|r| r.0).sum();
    let average = total / readings.len() as f64;
    let percent = utilization.then(|| {
        let requested: f64 = readings.iter().map(|r| r.1).sum();
        (total * 100.0 / requested) as i64
    });
    let done = |replicas: u32| {
        Ok(Proposal {
            replicas,
            average,
            utilization: percent,
        })
    };
    let within = |ratio: f64| (1.0 - ratio).abs() <= TOLERANCE;
    let scale_up_with_unready = !unready.is_empty() && usage_ratio > 1.0;
    if !scale_up_with_unready && missing.is_empty() {
        if within(usage_ratio) {
            return done(current);
        }
        return done((usage_ratio * readings.len() as f64).ceil() as u32);
    }
    // Missing pods: at the target when scaling down (100 % of the request for utilization, as
    // the real one does), at zero when scaling up.
    for request in missing {
        let value = match (usage_ratio < 1.0, utilization) {
            (true, true) => request,
            (true, false) => aim,
            (false, _) => 0.0,
        };
        readings.push((value, request));
    }
    if scale_up_with_unready {
        readings.extend(unready.into_iter().map(|request| (0.0, request)));
    }
    let new_ratio = ratio(&readings);
    if within(new_ratio)
        || (usage_ratio < 1.0 && new_ratio > 1.0)
        || (usage_ratio > 1.0 && new_ratio < 1.0)
    {
        return done(current);
    }
    let replicas = (new_ratio * readings.len() as f64).ceil() as u32;
    if (new_ratio < 1.0 && replicas > current) || (new_ratio > 1.0 && replicas < current) {
        return done(current);
    }
    done(replicas)
}

/// The stabilization windows of one HPA (already capped).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Windows {
    pub up: Duration,
    pub down: Duration,
}

/// What a pass decides for one HPA.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    pub desired: u32,
    /// The metrics' recommendation to remember for later stabilization.
    pub recommendation: Option<u32>,
    /// `AbleToScale`'s reason: `ReadyForNewScale`, `ScaleDownStabilized`, `ScaleUpStabilized`.
    pub able_reason: &'static str,
    /// `ScalingLimited`'s reason when the bounds cut the count: `TooFewReplicas`,
    /// `TooManyReplicas`.
    pub limited: Option<&'static str>,
    /// Why the count was not computed from the metrics (no valid metric, scaling disabled, a
    /// count outside the bounds), for `ScalingActive`.
    pub inactive: Option<&'static str>,
}

/// The replica count for `current` replicas from the metrics' proposals (`None`: the metric
/// is unavailable) and the earlier recommendations (`(age, count)`).
pub fn decide(
    current: u32,
    (min, max): (u32, u32),
    proposals: &[Option<u32>],
    history: &[(Duration, u32)],
    windows: Windows,
) -> Decision {
    let fixed = |desired: u32, inactive: Option<&'static str>| Decision {
        desired,
        recommendation: None,
        able_reason: "ReadyForNewScale",
        limited: None,
        inactive,
    };
    if current == 0 && min > 0 {
        return fixed(0, Some("ScalingDisabled"));
    }
    if current > max {
        return Decision {
            limited: Some("TooManyReplicas"),
            ..fixed(max, None)
        };
    }
    if current < min {
        return Decision {
            limited: Some("TooFewReplicas"),
            ..fixed(min, None)
        };
    }
    let Some(raw) = proposals.iter().flatten().copied().max() else {
        return fixed(current, Some("FailedGetMetrics"));
    };
    // A metric could not be read and the others say scale down: nothing happens.
    if raw < current && proposals.iter().any(Option::is_none) {
        return fixed(current, Some("FailedGetMetrics"));
    }
    let mut up = raw;
    let mut down = raw;
    for &(age, count) in history {
        if age < windows.up {
            up = up.min(count);
        }
        if age < windows.down {
            down = down.max(count);
        }
    }
    let stabilized = current.max(up).min(down);
    let able_reason = match stabilized.cmp(&raw) {
        std::cmp::Ordering::Greater => "ScaleDownStabilized",
        std::cmp::Ordering::Less => "ScaleUpStabilized",
        std::cmp::Ordering::Equal => "ReadyForNewScale",
    };
    let (desired, limited) = if stabilized > max {
        (max, Some("TooManyReplicas"))
    } else if stabilized < min {
        (min, Some("TooFewReplicas"))
    } else {
        (stabilized, None)
    };
    Decision {
        desired,
        recommendation: Some(raw),
        able_reason,
        limited,
        inactive: None,
    }
}

/// The stabilization windows an HPA `spec` asks for, each capped at `cap`.
pub fn windows(spec: &Value, cap: Duration) -> Windows {
    let window = |direction: &str, default: Duration| {
        spec["behavior"][direction]["stabilizationWindowSeconds"]
            .as_u64()
            .map_or(default, Duration::from_secs)
            .min(cap)
    };
    Windows {
        up: window("scaleUp", Duration::ZERO),
        down: window("scaleDown", DEFAULT_SCALE_DOWN_WINDOW),
    }
}

// ---------------------------------------------------------------------------------------------
// Quantities, Prometheus text, /proc (pure or nearly)

/// A Kubernetes quantity (`100m`, `1`, `2.5`, `1e3`, `1Ki`, `500M`) as a number.
pub fn parse_quantity(text: &str) -> Option<f64> {
    let text = text.trim();
    let suffixes: [(&str, f64); 16] = [
        ("Ki", 1024f64),
        ("Mi", 1024f64.powi(2)),
        ("Gi", 1024f64.powi(3)),
        ("Ti", 1024f64.powi(4)),
        ("Pi", 1024f64.powi(5)),
        ("Ei", 1024f64.powi(6)),
        ("n", 1e-9),
        ("u", 1e-6),
        ("m", 1e-3),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("P", 1e15),
        ("E", 1e18),
        ("", 1.0),
    ];
    let (number, scale) = suffixes
        .iter()
        .find_map(|(suffix, scale)| Some((text.strip_suffix(suffix)?, *scale)))?;
    // Digits, one optional point, an optional sign and exponent (`1e3`, `2E-1`); nothing else
    // (Rust's float parser would also take `inf` and `NaN`).
    let valid = !number.is_empty()
        && number
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '.' | '+' | '-' | 'e' | 'E'))
        && number.chars().any(|c| c.is_ascii_digit());
    if !valid {
        return None;
    }
    let value: f64 = number.parse().ok()?;
    Some(value * scale)
}

/// A number as a quantity the way the real controller writes one (milli-units).
pub fn format_quantity(value: f64) -> String {
    let millis = (value * 1000.0).round() as i64;
    if millis % 1000 == 0 {
        (millis / 1000).to_string()
    } else {
        format!("{millis}m")
    }
}

/// The pod's cpu request in cores: the sum over its containers; `None` when a container has
/// none (or an unreadable one).
pub fn pod_cpu_request(requests: &BTreeMap<String, Option<String>>) -> Option<f64> {
    if requests.is_empty() {
        return None;
    }
    requests
        .values()
        .map(|q| q.as_deref().and_then(parse_quantity))
        .sum()
}

/// The value of the samples named `name` in a Prometheus (or OpenMetrics) text exposition,
/// summed over their label sets; `None` when there is none.
pub fn prometheus_value(text: &str, name: &str) -> Option<f64> {
    let mut total = None;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') {
            continue;
        }
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        // The name must end here: `nlu_x` is not `nlu_x_total`.
        let value_part = if let Some(labelled) = rest.strip_prefix('{') {
            match labelled.rfind('}') {
                Some(end) => &labelled[end + 1..],
                None => continue,
            }
        } else if rest.starts_with([' ', '\t']) {
            rest
        } else {
            continue;
        };
        // Value, then an optional timestamp.
        let Some(value) = value_part.split_whitespace().next() else {
            continue;
        };
        if let Ok(value) = value.parse::<f64>() {
            if value.is_finite() {
                *total.get_or_insert(0.0) += value;
            }
        }
    }
    total
}

/// The port a pod's metrics are scraped on: the container port named `metrics` (the server's
/// private listener), else the one named `http`, else the first declared (`spec` is a PodSpec).
pub fn metrics_port(spec: &Value) -> Option<u16> {
    let ports: Vec<&Value> = spec["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|c| c["ports"].as_array().into_iter().flatten())
        .collect();
    let named = |name: &str| ports.iter().find(|p| p["name"] == name);
    let port = named("metrics")
        .or_else(|| named("http"))
        .or_else(|| ports.first())?;
    u16::try_from(port["containerPort"].as_u64()?).ok()
}

/// CPU time used so far by process `pid` (user + system), in clock ticks.
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) state ...`: the command may hold spaces and parentheses; fields follow the
    // last `)`. utime and stime are fields 14 and 15 of the line, 12th and 13th after it.
    let after = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`).
pub fn ticks_per_second() -> f64 {
    // SAFETY: sysconf reads a constant of the system.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as f64
    } else {
        100.0
    }
}

/// One CPU sample of a pod's processes.
#[derive(Clone, Debug)]
struct CpuSample {
    pids: Vec<u32>,
    ticks: u64,
    at: Instant,
}

impl CpuSample {
    fn take(pids: &[u32]) -> Option<CpuSample> {
        if pids.is_empty() {
            return None;
        }
        let ticks = pids
            .iter()
            .map(|&pid| cpu_ticks(pid))
            .sum::<Option<u64>>()?;
        Some(CpuSample {
            pids: pids.to_vec(),
            ticks,
            at: Instant::now(),
        })
    }

    /// Cores used between `earlier` and this sample (`None` when the processes differ: a
    /// restarted container starts a new count).
    fn rate_since(&self, earlier: &CpuSample) -> Option<f64> {
        let seconds = self.at.duration_since(earlier.at).as_secs_f64();
        if self.pids != earlier.pids || seconds <= 0.0 || self.ticks < earlier.ticks {
            return None;
        }
        Some((self.ticks - earlier.ticks) as f64 / ticks_per_second() / seconds)
    }
}

/// `GET http://ip:port/metrics` (HTTP/1.0: no chunked answer); the body of a 200.
async fn scrape(ip: Ipv4Addr, port: u16) -> Option<String> {
    let get = async {
        let mut stream = tokio::net::TcpStream::connect((ip, port)).await.ok()?;
        let request = format!(
            "GET /metrics HTTP/1.0\r\nHost: {ip}:{port}\r\nUser-Agent: hpa/testkit\r\n\
             Accept: text/plain\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.ok()?;
        let answer = String::from_utf8_lossy(&answer).into_owned();
        let (head, body) = answer.split_once("\r\n\r\n")?;
        let code = head.split_whitespace().nth(1)?;
        (code == "200").then(|| body.to_owned())
    };
    tokio::time::timeout(SCRAPE_TIMEOUT, get).await.ok()?
}

// ---------------------------------------------------------------------------------------------
// The controller (I/O)

/// What the controller keeps of one HPA between passes.
#[derive(Default)]
struct Memory {
    /// Recommendations of earlier passes, for stabilization.
    history: Vec<(Instant, u32)>,
    /// The last status written, and when.
    written: Value,
    written_at: Option<Instant>,
    last_scale: Option<String>,
}

pub struct Autoscalers {
    client: Client,
    pods: PodTable,
    window_cap: Duration,
    /// By HPA uid.
    memory: BTreeMap<String, Memory>,
    /// By (namespace, pod name): the previous CPU sample.
    cpu: BTreeMap<(String, String), CpuSample>,
}

/// One metric of one HPA, evaluated.
struct Evaluated {
    proposal: Result<Proposal, String>,
    /// `currentMetrics` entry (when the metric has a value).
    current: Option<Value>,
    /// `ScalingActive` reason when it failed.
    failure: &'static str,
}

impl Autoscalers {
    pub fn new(client: Client, pods: PodTable, window_cap: Duration) -> Autoscalers {
        Autoscalers {
            client,
            pods,
            window_cap,
            memory: BTreeMap::new(),
            cpu: BTreeMap::new(),
        }
    }

    /// Runs until the task is dropped; a failed pass is logged and retried.
    pub async fn run(mut self) {
        super::every("autoscaler", PASS, async || self.pass().await).await
    }

    async fn pass(&mut self) -> Result<(), kube::Error> {
        let hpas = Api::<HorizontalPodAutoscaler>::all(self.client.clone())
            .list(&ListParams::default())
            .await?
            .items;
        let pods = self.pods.lock().unwrap().clone();
        let rates = self.sample_cpu(&pods);
        if hpas.is_empty() {
            self.memory.clear();
            return Ok(());
        }
        let deployments = Api::<Deployment>::all(self.client.clone())
            .list(&ListParams::default())
            .await?
            .items;
        let alive: Vec<String> = hpas.iter().filter_map(|h| h.uid()).collect();
        self.memory.retain(|uid, _| alive.contains(uid));
        for hpa in &hpas {
            self.sync(hpa, &deployments, &pods, &rates).await?;
        }
        Ok(())
    }

    /// Cores each pod used since the previous pass (pods with a second sample only).
    fn sample_cpu(&mut self, pods: &[PodInfo]) -> BTreeMap<(String, String), f64> {
        let mut rates = BTreeMap::new();
        let mut samples = BTreeMap::new();
        for pod in pods {
            let key = (pod.namespace.clone(), pod.name.clone());
            let Some(sample) = CpuSample::take(&pod.pids) else {
                continue;
            };
            if let Some(rate) = self.cpu.get(&key).and_then(|e| sample.rate_since(e)) {
                rates.insert(key.clone(), rate);
            }
            samples.insert(key, sample);
        }
        self.cpu = samples;
        rates
    }

    async fn sync(
        &mut self,
        hpa: &HorizontalPodAutoscaler,
        deployments: &[Deployment],
        pods: &[PodInfo],
        rates: &BTreeMap<(String, String), f64>,
    ) -> Result<(), kube::Error> {
        let ns = hpa.namespace().unwrap_or_default();
        let uid = hpa.uid().unwrap_or_default();
        let spec = serde_json::to_value(&hpa.spec).unwrap_or_default();
        let target = &spec["scaleTargetRef"];
        let deployment = deployments.iter().find(|d| {
            d.namespace().as_deref() == Some(ns.as_str())
                && target["kind"] == "Deployment"
                && target["name"].as_str() == Some(d.name_any().as_str())
        });
        let Some(deployment) = deployment else {
            let message = format!(
                "the HPA controller was unable to get the target's current scale: {} {} not found \
                 (the process cluster scales Deployments only)",
                target["kind"].as_str().unwrap_or("?"),
                target["name"].as_str().unwrap_or("?"),
            );
            let conditions = [("AbleToScale", false, "FailedGetScale", message)];
            // `desiredReplicas` is a required field of the status: the last one, else 0.
            let desired = self
                .memory
                .get(&uid)
                .and_then(|m| m.written["desiredReplicas"].as_u64())
                .unwrap_or(0);
            let status = json!({
                "observedGeneration": hpa.metadata.generation,
                "desiredReplicas": desired,
            });
            return self.write_status(hpa, &uid, status, &conditions).await;
        };
        let dep = serde_json::to_value(deployment).unwrap_or_default();
        let current = dep["spec"]["replicas"].as_u64().unwrap_or(1) as u32;
        let selector: BTreeMap<String, String> =
            serde_json::from_value(dep["spec"]["selector"]["matchLabels"].clone())
                .unwrap_or_default();
        let selected: Vec<&PodInfo> = pods
            .iter()
            .filter(|p| p.namespace == ns && selects(&selector, &p.labels))
            .collect();
        let port = metrics_port(&dep["spec"]["template"]["spec"]);

        let mut evaluated = Vec::new();
        for metric in spec["metrics"].as_array().into_iter().flatten() {
            evaluated.push(evaluate(metric, current, &selected, rates, port).await);
        }
        let proposals: Vec<Option<u32>> = evaluated
            .iter()
            .map(|e| e.proposal.as_ref().ok().map(|p| p.replicas))
            .collect();
        let min = spec["minReplicas"].as_u64().unwrap_or(1) as u32;
        let max = spec["maxReplicas"].as_u64().unwrap_or(1) as u32;
        let windows = windows(&spec, self.window_cap);
        let memory = self.memory.entry(uid.clone()).or_default();
        let now = Instant::now();
        let keep = windows.up.max(windows.down);
        memory
            .history
            .retain(|(at, _)| now.duration_since(*at) < keep);
        let ages: Vec<(Duration, u32)> = memory
            .history
            .iter()
            .map(|(at, count)| (now.duration_since(*at), *count))
            .collect();
        let decision = decide(current, (min, max), &proposals, &ages, windows);
        if let Some(recommendation) = decision.recommendation {
            memory.history.push((now, recommendation));
        }

        let mut conditions = Vec::new();
        if decision.desired != current {
            let patch = json!({"spec": {"replicas": decision.desired}});
            let scaled = Api::<Deployment>::namespaced(self.client.clone(), &ns)
                .patch(
                    &deployment.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await;
            match scaled {
                Ok(_) => {
                    memory.last_scale = Some(now_text());
                    conditions.push((
                        "AbleToScale",
                        true,
                        "SucceededRescale",
                        format!(
                            "the HPA controller was able to update the target scale to {}",
                            decision.desired
                        ),
                    ));
                }
                Err(error) => conditions.push((
                    "AbleToScale",
                    false,
                    "FailedUpdateScale",
                    format!("the HPA controller was unable to update the target scale: {error}"),
                )),
            }
        } else {
            let message = match decision.able_reason {
                "ScaleDownStabilized" => "recent recommendations were higher than current one, applying the highest recent recommendation",
                "ScaleUpStabilized" => "recent recommendations were lower than current one, applying the lowest recent recommendation",
                _ => "recommended size matches current size",
            };
            conditions.push(("AbleToScale", true, decision.able_reason, message.into()));
        }
        let failure = evaluated
            .iter()
            .find_map(|e| e.proposal.as_ref().err().map(|m| (e.failure, m.clone())));
        conditions.push(match (decision.inactive, failure) {
            (Some("ScalingDisabled"), _) => (
                "ScalingActive",
                false,
                "ScalingDisabled",
                "scaling is disabled since the replica count of the target is zero".into(),
            ),
            (_, Some((reason, message))) => (
                "ScalingActive",
                false,
                reason,
                format!("the HPA was unable to compute the replica count: {message}"),
            ),
            (_, None) if evaluated.is_empty() => (
                "ScalingActive",
                false,
                "FailedGetMetrics",
                "the HPA names no metric".into(),
            ),
            _ => (
                "ScalingActive",
                true,
                "ValidMetricFound",
                "the HPA was able to successfully calculate a replica count".into(),
            ),
        });
        conditions.push(match decision.limited {
            Some(reason) => (
                "ScalingLimited",
                true,
                reason,
                format!(
                    "the desired replica count is {} than the {} replica count",
                    if reason == "TooManyReplicas" {
                        "more"
                    } else {
                        "less"
                    },
                    if reason == "TooManyReplicas" {
                        "maximum"
                    } else {
                        "minimum"
                    },
                ),
            ),
            None => (
                "ScalingLimited",
                false,
                "DesiredWithinRange",
                "the desired count is within the acceptable range".into(),
            ),
        });
        let mut status = json!({
            "observedGeneration": hpa.metadata.generation,
            "currentReplicas": dep["status"]["replicas"].as_u64().unwrap_or(0),
            "desiredReplicas": decision.desired,
            "currentMetrics": evaluated.iter().filter_map(|e| e.current.clone()).collect::<Vec<_>>(),
        });
        if let Some(time) = &memory.last_scale {
            status["lastScaleTime"] = time.clone().into();
        }
        self.write_status(hpa, &uid, status, &conditions).await
    }

    /// Writes `status` with `conditions` (a condition keeps its transition time while its
    /// status holds) when it changed; a change in the readings alone waits for
    /// [`READINGS_REFRESH`].
    async fn write_status(
        &mut self,
        hpa: &HorizontalPodAutoscaler,
        uid: &str,
        mut status: Value,
        conditions: &[(&str, bool, &str, String)],
    ) -> Result<(), kube::Error> {
        let memory = self.memory.entry(uid.to_owned()).or_default();
        let previous = &memory.written;
        let now = now_text();
        status["conditions"] = conditions
            .iter()
            .map(|(type_, ok, reason, message)| {
                let state = if *ok { "True" } else { "False" };
                let kept = previous["conditions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|c| c["type"] == *type_ && c["status"] == state)
                    .and_then(|c| c["lastTransitionTime"].as_str())
                    .unwrap_or(&now);
                json!({"type": type_, "status": state, "reason": reason, "message": message,
                       "lastTransitionTime": kept})
            })
            .collect();
        let shape = |s: &Value| {
            let mut s = s.clone();
            if let Some(map) = s.as_object_mut() {
                map.remove("currentMetrics");
            }
            s
        };
        let readings_only = shape(&status) == shape(previous);
        let fresh = memory
            .written_at
            .is_some_and(|at| at.elapsed() < READINGS_REFRESH);
        if status == *previous || (readings_only && fresh) {
            return Ok(());
        }
        Api::<HorizontalPodAutoscaler>::namespaced(
            self.client.clone(),
            &hpa.namespace().unwrap_or_default(),
        )
        .patch_status(
            &hpa.name_any(),
            &PatchParams::default(),
            &Patch::Merge(json!({"status": status})),
        )
        .await?;
        memory.written = status;
        memory.written_at = Some(Instant::now());
        Ok(())
    }
}

/// One metric of an HPA spec over the selected pods.
async fn evaluate(
    metric: &Value,
    current: u32,
    pods: &[&PodInfo],
    rates: &BTreeMap<(String, String), f64>,
    port: Option<u16>,
) -> Evaluated {
    let failed = |failure: &'static str, message: String| Evaluated {
        proposal: Err(message),
        current: None,
        failure,
    };
    match metric["type"].as_str().unwrap_or_default() {
        "Resource" if metric["resource"]["name"] == "cpu" => {
            let target = &metric["resource"]["target"];
            let target = match target["type"].as_str() {
                Some("Utilization") => target["averageUtilization"]
                    .as_f64()
                    .map(Target::Utilization),
                Some("AverageValue") => target["averageValue"]
                    .as_str()
                    .and_then(parse_quantity)
                    .map(Target::AverageValue),
                _ => None,
            };
            let Some(target) = target else {
                return failed(
                    "FailedGetResourceMetric",
                    format!("unsupported cpu target {}", metric["resource"]["target"]),
                );
            };
            let readings: Vec<PodReading> = pods
                .iter()
                .map(|p| PodReading {
                    name: p.name.clone(),
                    ready: p.ready,
                    value: rates.get(&(p.namespace.clone(), p.name.clone())).copied(),
                    request: pod_cpu_request(&p.cpu_requests),
                })
                .collect();
            match proposal(current, target, &readings) {
                Ok(p) => {
                    let mut now = json!({"averageValue": format_quantity(p.average)});
                    if let Some(percent) = p.utilization {
                        now["averageUtilization"] = percent.into();
                    }
                    Evaluated {
                        current: Some(
                            json!({"type": "Resource", "resource": {"name": "cpu", "current": now}}),
                        ),
                        proposal: Ok(p),
                        failure: "",
                    }
                }
                Err(message) => failed(
                    "FailedGetResourceMetric",
                    format!("failed to get cpu utilization: {message}"),
                ),
            }
        }
        "Pods" => {
            let name = metric["pods"]["metric"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let target = &metric["pods"]["target"];
            let target = (target["type"] == "AverageValue")
                .then(|| target["averageValue"].as_str().and_then(parse_quantity))
                .flatten();
            let (Some(target), Some(port)) = (target, port) else {
                return failed(
                    "FailedGetPodsMetric",
                    format!(
                        "pods metric {name}: an AverageValue target and a container port are needed"
                    ),
                );
            };
            let name = &name;
            let scrapes = pods.iter().map(|p| async move {
                let value = if p.ready {
                    scrape(p.ip, port)
                        .await
                        .and_then(|text| prometheus_value(&text, name))
                } else {
                    None
                };
                PodReading {
                    name: p.name.clone(),
                    ready: p.ready,
                    value,
                    request: None,
                }
            });
            let readings = futures::future::join_all(scrapes).await;
            match proposal(current, Target::AverageValue(target), &readings) {
                Ok(p) => Evaluated {
                    current: Some(json!({"type": "Pods", "pods": {
                        "metric": {"name": name},
                        "current": {"averageValue": format_quantity(p.average)},
                    }})),
                    proposal: Ok(p),
                    failure: "",
                },
                Err(message) => failed(
                    "FailedGetPodsMetric",
                    format!("failed to get pods metric value {name}: {message}"),
                ),
            }
        }
        other => failed(
            "InvalidMetricSourceType",
            format!(
                "metric type {other:?} ({}) is not served by the process cluster",
                metric
            ),
        ),
    }
}

fn now_text() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ready(name: &str, value: Option<f64>, request: Option<f64>) -> PodReading {
        PodReading {
            name: name.into(),
            ready: true,
            value,
            request,
        }
    }

    fn unready(name: &str, value: Option<f64>, request: Option<f64>) -> PodReading {
        PodReading {
            ready: false,
            ..ready(name, value, request)
        }
    }

    #[test]
    fn one_metric_proposes_as_the_replica_calculator_does() {
        use Target::*;
        let cpu = |v: f64| Some(v);
        // (current, target, pods, expected replicas)
        type Case = (u32, Target, Vec<PodReading>, u32);
        let cases: Vec<Case> = vec![
            // In-flight 3 on one pod, target 1: three pods.
            (1, AverageValue(1.0), vec![ready("a", Some(3.0), None)], 3),
            // Within the tolerance (ratios 1.09 and 0.91): no change.
            (
                2,
                AverageValue(1.0),
                vec![ready("a", Some(1.09), None), ready("b", Some(1.09), None)],
                2,
            ),
            (
                2,
                AverageValue(1.0),
                vec![ready("a", Some(0.91), None), ready("b", Some(0.91), None)],
                2,
            ),
            // Just outside it: up (ceil 2 * 1.25 = 3) and down (ceil 2 * 0.25 = 1).
            (
                2,
                AverageValue(1.0),
                vec![ready("a", Some(1.5), None), ready("b", Some(1.0), None)],
                3,
            ),
            (
                2,
                AverageValue(2.0),
                vec![ready("a", Some(1.0), None), ready("b", Some(0.0), None)],
                1,
            ),
            // Utilization is the sum of usage over the sum of requests: 0.5 + 0.1 of 2 x 0.5
            // cores = 60 % against 30 %: double.
            (
                2,
                Utilization(30.0),
                vec![
                    ready("a", cpu(0.5), Some(0.5)),
                    ready("b", cpu(0.1), Some(0.5)),
                ],
                4,
            ),
            // A missing reading while scaling up counts as zero: (3 + 0) / 2 = 1.5 -> 3.
            (
                2,
                AverageValue(1.0),
                vec![ready("a", Some(3.0), None), ready("b", None, None)],
                3,
            ),
            // A missing reading while scaling down counts as at the target: (0 + 1) / 2 -> 1.
            (
                2,
                AverageValue(1.0),
                vec![ready("a", Some(0.0), None), ready("b", None, None)],
                1,
            ),
            // ... and when that brings the ratio within the tolerance, nothing changes.
            (
                3,
                AverageValue(1.0),
                vec![
                    ready("a", Some(0.8), None),
                    ready("b", None, None),
                    ready("c", None, None),
                ],
                3,
            ),
            // An unready pod is set aside: on a scale-up it counts as zero, ratio (4 + 0) / 2
            // over two pods -> 4; when that flips the direction, nothing changes.
            (
                1,
                AverageValue(1.0),
                vec![ready("a", Some(4.0), None), unready("b", Some(9.0), None)],
                4,
            ),
            (
                1,
                AverageValue(1.0),
                vec![
                    ready("a", Some(1.5), None),
                    unready("b", None, None),
                    unready("c", None, None),
                ],
                1,
            ),
            // ... and is left out of a scale-down.
            (
                2,
                AverageValue(1.0),
                vec![ready("a", Some(0.2), None), unready("b", None, None)],
                1,
            ),
        ];
        for (current, target, pods, expected) in cases {
            let got = proposal(current, target, &pods).unwrap();
            assert_eq!(got.replicas, expected, "{current} {target:?} {pods:?}");
        }
    }

    #[test]
    fn a_metric_without_readings_or_requests_is_unavailable() {
        let target = Target::Utilization(70.0);
        let no_request = [
            ready("a", Some(0.5), Some(1.0)),
            ready("b", Some(0.5), None),
        ];
        let error = proposal(2, target, &no_request).unwrap_err();
        assert!(
            error.contains("missing request for cpu in pod b"),
            "{error}"
        );
        let unread = [
            ready("a", None, Some(1.0)),
            unready("b", Some(1.0), Some(1.0)),
        ];
        assert!(proposal(2, target, &unread).is_err());
        assert!(proposal(1, Target::AverageValue(1.0), &[]).is_err());
        // What the status reports: the average and the (truncated) utilization.
        let p = proposal(
            2,
            target,
            &[
                ready("a", Some(0.25), Some(0.5)),
                ready("b", Some(0.1), Some(0.5)),
            ],
        )
        .unwrap();
        assert_eq!(p.utilization, Some(35));
        assert!((p.average - 0.175).abs() < 1e-9, "{p:?}");
    }

    #[test]
    fn decisions_combine_metrics_bound_and_stabilize() {
        let w = |up: u64, down: u64| Windows {
            up: Duration::from_secs(up),
            down: Duration::from_secs(down),
        };
        let s = Duration::from_secs;
        // (current, (min, max), proposals, history (age, count), windows, desired, reason)
        type Case = (
            u32,
            (u32, u32),
            Vec<Option<u32>>,
            Vec<(Duration, u32)>,
            Windows,
            u32,
            &'static str,
        );
        let cases: Vec<Case> = vec![
            // The highest proposal over the metrics wins.
            (
                1,
                (1, 5),
                vec![Some(1), Some(3)],
                vec![],
                w(0, 10),
                3,
                "ReadyForNewScale",
            ),
            // Clamped to the bounds.
            (
                1,
                (1, 3),
                vec![Some(7)],
                vec![],
                w(0, 10),
                3,
                "ReadyForNewScale",
            ),
            (
                2,
                (2, 5),
                vec![Some(1)],
                vec![],
                w(0, 0),
                2,
                "ReadyForNewScale",
            ),
            // An unavailable metric: scale up on the others, never down.
            (
                2,
                (1, 5),
                vec![None, Some(4)],
                vec![],
                w(0, 10),
                4,
                "ReadyForNewScale",
            ),
            (
                3,
                (1, 5),
                vec![None, Some(1)],
                vec![],
                w(0, 10),
                3,
                "ReadyForNewScale",
            ),
            (
                3,
                (1, 5),
                vec![None],
                vec![],
                w(0, 10),
                3,
                "ReadyForNewScale",
            ),
            // Scale-down: the highest recommendation within the window.
            (
                3,
                (1, 5),
                vec![Some(1)],
                vec![(s(4), 3), (s(2), 2)],
                w(0, 10),
                3,
                "ScaleDownStabilized",
            ),
            (
                3,
                (1, 5),
                vec![Some(1)],
                vec![(s(12), 3), (s(2), 2)],
                w(0, 10),
                2,
                "ScaleDownStabilized",
            ),
            (
                3,
                (1, 5),
                vec![Some(1)],
                vec![(s(12), 3), (s(11), 2)],
                w(0, 10),
                1,
                "ReadyForNewScale",
            ),
            // A zero window scales down at once.
            (
                3,
                (1, 5),
                vec![Some(1)],
                vec![(s(1), 3)],
                w(0, 0),
                1,
                "ReadyForNewScale",
            ),
            // Scale-up: immediate by default, the lowest within a scale-up window.
            (
                1,
                (1, 5),
                vec![Some(4)],
                vec![(s(1), 1)],
                w(0, 10),
                4,
                "ReadyForNewScale",
            ),
            (
                1,
                (1, 5),
                vec![Some(4)],
                vec![(s(1), 2)],
                w(5, 10),
                2,
                "ScaleUpStabilized",
            ),
            // Outside the bounds already: to the bound, whatever the metrics say.
            (
                5,
                (1, 3),
                vec![Some(5)],
                vec![],
                w(0, 10),
                3,
                "ReadyForNewScale",
            ),
            (
                1,
                (2, 3),
                vec![None],
                vec![],
                w(0, 10),
                2,
                "ReadyForNewScale",
            ),
            // Scaled to zero by hand: autoscaling is off.
            (
                0,
                (1, 3),
                vec![Some(3)],
                vec![],
                w(0, 10),
                0,
                "ReadyForNewScale",
            ),
        ];
        for (current, bounds, proposals, history, windows, desired, reason) in cases {
            let d = decide(current, bounds, &proposals, &history, windows);
            assert_eq!(
                (d.desired, d.able_reason),
                (desired, reason),
                "{current} {bounds:?} {proposals:?} {history:?}"
            );
        }
        // What is remembered is the metrics' own recommendation, before bounds and windows.
        let d = decide(2, (1, 3), &[Some(7)], &[], w(0, 10));
        assert_eq!(
            (d.recommendation, d.limited),
            (Some(7), Some("TooManyReplicas"))
        );
        let d = decide(3, (1, 5), &[None, Some(1)], &[], w(0, 10));
        assert_eq!(
            (d.recommendation, d.inactive),
            (None, Some("FailedGetMetrics"))
        );
    }

    #[test]
    fn windows_default_and_are_capped() {
        let cap = Duration::from_secs(10);
        assert_eq!(
            windows(&json!({}), cap),
            Windows {
                up: Duration::ZERO,
                down: cap
            }
        );
        let spec = json!({"behavior": {"scaleDown": {"stabilizationWindowSeconds": 3},
                                       "scaleUp": {"stabilizationWindowSeconds": 60}}});
        assert_eq!(
            windows(&spec, cap),
            Windows {
                up: cap,
                down: Duration::from_secs(3)
            }
        );
        let uncapped = windows(&json!({}), Duration::MAX);
        assert_eq!(uncapped.down, DEFAULT_SCALE_DOWN_WINDOW);
    }

    #[test]
    fn quantities_parse_and_format() {
        let cases = [
            ("100m", 0.1),
            ("1", 1.0),
            ("2.5", 2.5),
            ("4", 4.0),
            ("1500m", 1.5),
            ("1e3", 1000.0),
            ("128Mi", 128.0 * 1024.0 * 1024.0),
            ("1k", 1000.0),
            ("250u", 0.00025),
            (" 3 ", 3.0),
        ];
        for (text, value) in cases {
            let got = parse_quantity(text).unwrap_or(f64::NAN);
            assert!(
                (got - value).abs() < 1e-9 * value.max(1.0),
                "{text} -> {got}"
            );
        }
        for bad in ["", "m", "abc", "1x", "NaN", "inf", "1.2.3m"] {
            assert_eq!(parse_quantity(bad), None, "{bad:?}");
        }
        assert_eq!(format_quantity(2.0), "2");
        assert_eq!(format_quantity(1.5), "1500m");
        assert_eq!(format_quantity(0.0123), "12m");
        let requests = |r: &[(&str, Option<&str>)]| -> BTreeMap<String, Option<String>> {
            r.iter()
                .map(|(n, q)| (n.to_string(), q.map(str::to_owned)))
                .collect()
        };
        assert_eq!(
            pod_cpu_request(&requests(&[("a", Some("500m")), ("b", Some("1"))])),
            Some(1.5)
        );
        assert_eq!(
            pod_cpu_request(&requests(&[("a", Some("500m")), ("b", None)])),
            None
        );
        assert_eq!(pod_cpu_request(&requests(&[])), None);
    }

    #[test]
    fn prometheus_samples_by_exact_name_summed_over_labels() {
        let text = "# HELP nlu_in_flight_requests Requests being handled.\n\
                    # TYPE nlu_in_flight_requests gauge\n\
                    nlu_in_flight_requests 3\n\
                    nlu_in_flight_requests_total 100\n\
                    nlu_gauge 1\n\
                    nlu_gauge2 9\n\
                    nlu_queue_depth{model=\"a\"} 2\n\
                    nlu_queue_depth{model=\"b\",x=\"}\"} 5 1700000000\n\
                    # EOF\n";
        assert_eq!(prometheus_value(text, "nlu_in_flight_requests"), Some(3.0));
        assert_eq!(prometheus_value(text, "nlu_queue_depth"), Some(7.0));
        assert_eq!(prometheus_value(text, "nlu_in_flight"), None);
        assert_eq!(prometheus_value(text, "nlu_gauge"), Some(1.0));
        assert_eq!(prometheus_value(text, "missing"), None);
        assert_eq!(prometheus_value("x NaN\n", "x"), None);
    }

    #[test]
    fn the_metrics_port_is_metrics_else_http_else_the_first() {
        let spec = json!({"containers": [
            {"name": "side", "ports": [{"name": "admin", "containerPort": 9000}]},
            {"name": "main", "ports": [{"name": "grpc", "containerPort": 9090},
                                       {"name": "http", "containerPort": 8080}]},
        ]});
        assert_eq!(metrics_port(&spec), Some(8080));
        let spec = json!({"containers": [{"name": "main", "ports": [
            {"name": "http", "containerPort": 8080}, {"name": "metrics", "containerPort": 9100}]}]});
        assert_eq!(metrics_port(&spec), Some(9100));
        let spec = json!({"containers": [{"name": "c"}, {"name": "d", "ports": [{"containerPort": 7000}, {"containerPort": 7001}]}]});
        assert_eq!(metrics_port(&spec), Some(7000));
        assert_eq!(metrics_port(&json!({"containers": [{"name": "c"}]})), None);
    }

    #[test]
    fn cpu_of_a_busy_process_is_read_from_proc() {
        let mut child = std::process::Command::new("sh")
            .args(["-c", "while :; do :; done"])
            .spawn()
            .expect("sh runs");
        let pid = child.id();
        let first = CpuSample::take(&[pid]).expect("a first sample");
        std::thread::sleep(Duration::from_millis(600));
        let second = CpuSample::take(&[pid]).expect("a second sample");
        let rate = second.rate_since(&first);
        let idle = CpuSample::take(&[std::process::id()]);
        child.kill().unwrap();
        child.wait().unwrap();
        let rate = rate.expect("a rate");
        let cores = std::thread::available_parallelism().map_or(64, |n| n.get()) as f64;
        // A busy loop gets most of a core even on a loaded machine; never more than one.
        assert!(rate > 0.2 && rate <= 1.1, "busy loop at {rate} cores");
        assert!(rate <= cores);
        // Another set of processes is no rate of these.
        assert_eq!(idle.and_then(|i| second.rate_since(&i)), None);
        assert_eq!(CpuSample::take(&[u32::MAX]).map(|s| s.ticks), None);
    }
}
