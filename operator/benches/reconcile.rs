//! Reconciles 1,000 NluServices against nlu-testkit's recording fake API and prints the time per
//! object for (a) building and diffing the desired state (pure, the 1 ms target) and (b) a whole
//! reconcile through the client (requests, JSON, status), plus the process's peak memory.
//!
//! `cargo bench -p nlu-operator --bench reconcile --profile dev` (or the default bench profile).

use std::sync::Arc;
use std::time::Instant;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use nlu_crds::NluService;
use nlu_operator::config::OperatorConfig;
use nlu_operator::context::Context;
use nlu_operator::metrics::Metrics;
use nlu_operator::nlu_service::build::children;
use nlu_operator::nlu_service::controller::reconcile;
use nlu_operator::nlu_service::status::{compute, Observed};
use nlu_testkit::FakeApi;
use serde_json::json;

const N: usize = 1_000;

/// A mix of the shapes users write: a quarter each of hub, UniNLU+TLS+HPA, PVC, no-auth URL.
fn services() -> Vec<NluService> {
    (0..N)
        .map(|i| {
            let spec = match i % 4 {
                0 => json!({"model": {"task": "embedding", "source": {"huggingFace": {"repo": "thenlper/gte-base-zh"}}}}),
                1 => json!({"model": {"task": "uninlu", "source": {"modelScope": {"id": "damo/uninlu"}}},
                    "autoscaling": {"minReplicas": 2, "maxReplicas": 8, "targetInflightRequests": 4},
                    "ingress": {"host": format!("s{i}.example.com"), "tls": {"clusterIssuer": "le"}},
                    "auth": {"redis": {"url": "redis://redis:6379"}}}),
                2 => json!({"model": {"task": "embedding", "source": {"pvc": {"claimName": "models", "path": "gte"}}}, "replicas": 3, "auth": {"mode": "none"}}),
                _ => json!({"model": {"task": "embedding", "source": {"url": "https://m.example.com/m.tar.gz"}}, "auth": {"mode": "none", "allowUnauthenticated": true}, "ingress": {"host": "x.example.com"}}),
            };
            serde_json::from_value(json!({
                "apiVersion": "nlu.dev/v1alpha1", "kind": "NluService",
                "metadata": {"name": format!("svc-{i}"), "namespace": format!("ns-{}", i % 20), "uid": format!("uid-{i}"), "generation": 1},
                "spec": spec,
            }))
            .unwrap()
        })
        .collect()
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let cfg = OperatorConfig::default();
    let svcs = services();
    let rss_start = peak_rss_kib();

    // (a) Pure: build every child, diff against the previous desired state, compute status.
    let previous: Vec<_> = svcs.iter().map(|s| children(s, &cfg)).collect();
    let now = Time(Timestamp::from_second(1_800_000_000).unwrap());
    let start = Instant::now();
    let mut changed = 0usize;
    for (svc, before) in svcs.iter().zip(&previous) {
        let want = children(svc, &cfg);
        changed += usize::from(want != *before);
        let seen = Observed {
            problem: None,
            taken: &[],
            deployment: Some(&want.deployment),
            ingress: want.ingress.as_ref(),
        };
        let status = compute(svc, &seen, now.clone());
        changed += usize::from(Some(&status) == svc.status.as_ref());
    }
    let pure = start.elapsed();
    assert_eq!(changed, 0, "same input, same desired state");
    let rss_pure = peak_rss_kib();

    // (b) Whole reconciles through a kube Client against the fake API.
    let (client, api) = FakeApi::start();
    for svc in &svcs {
        let ns = svc.metadata.namespace.clone().unwrap();
        let name = svc.metadata.name.clone().unwrap();
        api.put(
            &format!("/apis/nlu.dev/v1alpha1/namespaces/{ns}/nluservices/{name}"),
            serde_json::to_value(svc).unwrap(),
        );
        api.put(&format!("/api/v1/namespaces/{ns}/secrets/nlu-redis"), json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "nlu-redis"}, "data": {"url": "eA=="}}));
    }
    let ctx = Arc::new(Context::new(client, cfg.clone(), Arc::new(Metrics::new())));
    let start = Instant::now();
    for svc in &svcs {
        reconcile(Arc::new(svc.clone()), ctx.clone())
            .await
            .expect("reconcile");
    }
    let full = start.elapsed();
    let requests = api.take_calls().len();

    let per = |d: std::time::Duration| d.as_secs_f64() * 1e6 / N as f64;
    println!("NluServices: {N}");
    println!(
        "build + diff + status (pure): {:.1} us/object (target < 1000 us)",
        per(pure)
    );
    println!(
        "full reconcile vs mocked API: {:.1} us/object ({} requests, {:.1}/object)",
        per(full),
        requests,
        requests as f64 / N as f64
    );
    println!(
        "peak RSS: {} MiB before, {} MiB after the pure pass (1,000 CRs + 2 desired sets), {} MiB after the mocked reconciles (the fake keeps every object, change and request body)",
        rss_start / 1024,
        rss_pure / 1024,
        peak_rss_kib() / 1024
    );
    if let Ok(load) = std::fs::read_to_string("/proc/loadavg") {
        println!("loadavg: {}", load.trim());
    }
}
