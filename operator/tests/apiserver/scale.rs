//! Issue 19, point 4: the Tenant controller with many Tenants against the real API server tier
//! and a real redis-server. Measured: the time from the operator's start until every Tenant has
//! its token (Ready, Secret named in status), the operator's memory, and its requests to the API
//! server and to Redis. The operator runs as its own process (`nlu-operator run` of this build,
//! through the routing proxy), so its memory and its requests are its own: the test creates and
//! watches the Tenants on the API server directly, past the proxy's count.
//!
//! CI runs 200 Tenants. The full run of docs/benchmarks.md ("Tenants at scale"):
//!
//!     NLU_SCALE_TENANTS=10000 NLU_SCALE_STEADY_SECS=90 \
//!         cargo test --workspace --test apiserver tenants_at_scale -- --nocapture

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::PostParams;
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, ResourceExt};
use nlu_crds::conditions::is_true;
use nlu_crds::Tenant;
use nlu_operator::tenant::signing_key::SIGNING_KEY_SECRET;
use nlu_testkit::{kill_when_this_process_ends, kubeconfig_text, ClusterProxy, RedisServer};

use crate::harness::{eventually, sample};

/// A whole number from the environment, or `default`.
fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name).map_or(default, |v| {
        v.parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number"))
    })
}

/// `nlu-operator run` watching `namespace` (its key in `<namespace>-system`), talking to the
/// proxy; killed on drop.
struct Operator {
    child: Child,
}

impl Operator {
    fn start(proxy: &ClusterProxy, namespace: &str, redis_url: &str, dir: &Path) -> Operator {
        let kubeconfig = dir.join("kubeconfig");
        std::fs::write(&kubeconfig, kubeconfig_text(&proxy.url())).unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("operator.log"))
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_nlu-operator"))
            .args(["run", "--namespace", namespace, "--redis-url", redis_url])
            .args(["--operator-namespace", &format!("{namespace}-system")])
            .args(["--admin-listen", "127.0.0.1:0", "--log-format", "text"])
            .env("KUBECONFIG", &kubeconfig)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("nlu-operator starts");
        kill_when_this_process_ends(child.id());
        Operator { child }
    }

    /// Resident memory now and at its peak, MiB.
    fn memory(&self) -> (f64, f64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("the operator is running");
        let mib = |key: &str| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(key))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
                .map(|kib| kib / 1024.0)
                .unwrap_or_else(|| panic!("{key} in /proc/PID/status"))
        };
        (mib("VmRSS:"), mib("VmHWM:"))
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Requests so far: to the API server (the Tenants), to the proxy's core kinds (Secrets,
/// Events, ConfigMaps), and commands Redis ran (less `INFO`, how this is read).
#[derive(Clone, Copy, Debug)]
struct Traffic {
    api: usize,
    core: usize,
    redis: u64,
}

impl Traffic {
    async fn now(proxy: &ClusterProxy, redis_url: &str) -> Traffic {
        let requests = proxy.requests();
        let api = requests.iter().filter(|r| r.real).count();
        let mut conn = redis::Client::open(redis_url)
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let stats: String = redis::cmd("INFO")
            .arg("commandstats")
            .query_async(&mut conn)
            .await
            .unwrap();
        let redis = stats
            .lines()
            .filter(|line| line.starts_with("cmdstat_") && !line.starts_with("cmdstat_info:"))
            .filter_map(|line| {
                line.split("calls=")
                    .nth(1)?
                    .split(',')
                    .next()?
                    .parse::<u64>()
                    .ok()
            })
            .sum();
        Traffic {
            api,
            core: requests.len() - api,
            redis,
        }
    }

    /// Requests per second from `before` to `self`, over `seconds`: (API server, core, Redis).
    fn rates(&self, before: &Traffic, seconds: f64) -> (f64, f64, f64) {
        let per_s = |n: f64| n / seconds;
        (
            per_s((self.api - before.api) as f64),
            per_s((self.core - before.core) as f64),
            per_s((self.redis - before.redis) as f64),
        )
    }
}

/// Creates `count` Tenants (`t00000`...) in `namespace`, 32 at a time.
async fn create_tenants(api: &Api<Tenant>, namespace: &str, count: u64) {
    let template: Tenant = sample("tenant.yaml", namespace, "t");
    futures::stream::iter(0..count)
        .for_each_concurrent(32, |i| {
            let mut tenant = template.clone();
            tenant.metadata.name = Some(format!("t{i:05}"));
            async move {
                api.create(&PostParams::default(), &tenant)
                    .await
                    .unwrap_or_else(|e| panic!("creating tenant {i}: {e}"));
            }
        })
        .await;
}

/// Waits until `count` Tenants of `api` are Ready with their token Secret named in status;
/// panics after `limit`, saying how many were.
async fn all_have_tokens(api: &Api<Tenant>, count: usize, limit: Duration) {
    let mut ready = HashSet::new();
    let mut events = watcher(api.clone(), watcher::Config::default())
        .default_backoff()
        .applied_objects()
        .boxed();
    let wait = async {
        while ready.len() < count {
            let Some(Ok(tenant)) = events.next().await else {
                continue;
            };
            let has_token = tenant
                .status
                .as_ref()
                .is_some_and(|s| is_true(&s.conditions, "Ready") && s.token_secret_name.is_some());
            if has_token {
                ready.insert(tenant.name_any());
            }
        }
    };
    if tokio::time::timeout(limit, wait).await.is_err() {
        panic!(
            "after {limit:?}, {} of {count} Tenants had their token",
            ready.len()
        );
    }
}

fn run_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/tenant-scale");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_at_scale() {
    let Some(server) = nlu_testkit::api_server() else {
        return;
    };
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let count = setting("NLU_SCALE_TENANTS", 200);
    let steady_secs = setting("NLU_SCALE_STEADY_SECS", 0);
    let ns = "tenant-scale";
    let direct = server.client().await;
    let proxy = ClusterProxy::start(direct.clone()).await;
    let dir = run_dir();

    // The idle operator (no Tenant yet): it creates its signing key, then its memory is read.
    let operator = Operator::start(&proxy, ns, &redis.url(), &dir);
    let keys: Api<Secret> = Api::namespaced(proxy.client(), &format!("{ns}-system"));
    eventually("the signing key", 60, || async {
        keys.get_opt(SIGNING_KEY_SECRET).await.ok().flatten()
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (idle_mib, _) = operator.memory();
    drop(operator);

    let tenants: Api<Tenant> = Api::namespaced(direct, ns);
    let created = Instant::now();
    create_tenants(&tenants, ns, count).await;
    let create_secs = created.elapsed().as_secs_f64();

    let before = Traffic::now(&proxy, &redis.url()).await;
    let started = Instant::now();
    let operator = Operator::start(&proxy, ns, &redis.url(), &dir);
    let limit = Duration::from_secs(60 + count / 10);
    all_have_tokens(&tenants, count as usize, limit).await;
    let ready_secs = started.elapsed().as_secs_f64();
    let after = Traffic::now(&proxy, &redis.url()).await;
    let (rss_mib, peak_mib) = operator.memory();
    let (api_qps, core_qps, redis_qps) = after.rates(&before, ready_secs);

    // Each Tenant's Secret holds a token (a sample of them; after the counts were taken).
    let secrets: Api<Secret> = Api::namespaced(proxy.client(), ns);
    for i in (0..count).step_by((count as usize / 10).max(1)) {
        let secret = secrets.get(&format!("t{i:05}-token")).await.unwrap();
        assert!(secret.data.unwrap_or_default().contains_key("token"));
    }
    assert!(after.redis > before.redis && after.api > before.api);

    println!("tenant scale: {count} Tenants (created in {create_secs:.1} s, not counted)");
    println!("  time to first token for all: {ready_secs:.1} s from the operator's start");
    println!(
        "  operator RSS: idle {idle_mib:.1} MiB, after {rss_mib:.1} MiB, peak {peak_mib:.1} MiB, \
         {:.1} KiB per Tenant",
        (rss_mib - idle_mib) * 1024.0 / count as f64
    );
    println!(
        "  while issuing: API server {} requests ({api_qps:.0}/s), core kinds {} ({core_qps:.0}/s), \
         Redis {} commands ({redis_qps:.0}/s)",
        after.api - before.api,
        after.core - before.core,
        after.redis - before.redis
    );
    if steady_secs > 0 {
        tokio::time::sleep(Duration::from_secs(steady_secs)).await;
        let end = Traffic::now(&proxy, &redis.url()).await;
        let (api_qps, core_qps, redis_qps) = end.rates(&after, steady_secs as f64);
        let (rss_mib, peak_mib) = operator.memory();
        println!(
            "  steady ({steady_secs} s): API server {api_qps:.1}/s, core kinds {core_qps:.1}/s, \
             Redis {redis_qps:.1}/s; RSS {rss_mib:.1} MiB, peak {peak_mib:.1} MiB"
        );
    }
    println!(
        "  load average: {}",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
}
