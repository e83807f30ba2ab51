//! Autoscaling end to end: an NluService with `spec.autoscaling` and an in-flight target scales
//! up under concurrent load through the HTTPS Ingress and back down when the load stops. Its
//! own test binary, so its own process cluster: the load and the extra pods do not meet the
//! other scenarios. On the process cluster the HPA controller is the test kit's
//! (`testkit/src/cluster/hpa.rs`: the pods' `/metrics` scraped as a Prometheus adapter would
//! serve them, stabilization windows capped at 10 s). Not run on kind: `e2e/run.sh` installs
//! neither metrics-server nor a Prometheus adapter, so no HPA there has metrics.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use e2e::*;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use nlu_crds::serve::{exported_metric, IN_FLIGHT_REQUESTS};
use nlu_crds::NluService;

/// Concurrent clients of the load.
const CLIENTS: usize = 8;

/// Average in-flight requests per pod to aim for (the gauge counts model requests only, so an
/// idle pod reads 0 and the HPA scales back down).
const INFLIGHT_TARGET: i32 = 1;
/// The CPU target the operator renders when the spec names none (percent of the request).
const CPU_TARGET: i32 = 70;

/// The service under test: `uninlu_service` (whose cpu request keeps CPU utilization low on the
/// process cluster, see [`shared_cpu_request`]) with an in-flight target, so only the in-flight
/// metric can scale it.
fn autoscaled_service(name: &str, host: &str, tls: &str, inflight: i32) -> NluService {
    let mut svc = uninlu_service(name, host, tls);
    let scaling = svc
        .spec
        .autoscaling
        .as_mut()
        .expect("uninlu_service autoscales");
    scaling.min_replicas = MIN_REPLICAS;
    scaling.max_replicas = MAX_REPLICAS;
    scaling.target_inflight_requests = Some(inflight);
    scaling.target_cpu_utilization_percentage = Some(CPU_TARGET);
    svc
}

/// (spec.replicas, status.replicas, status.readyReplicas) of the Deployment.
async fn replicas(cluster: &Cluster, name: &str) -> anyhow::Result<(i32, i32, i32)> {
    let d = cluster.api::<Deployment>().get(name).await?;
    let spec = d.spec.and_then(|s| s.replicas).unwrap_or(1);
    let status = d.status.unwrap_or_default();
    Ok((
        spec,
        status.replicas.unwrap_or(0),
        status.ready_replicas.unwrap_or(0),
    ))
}

#[tokio::test]
async fn hpa_scales_up_under_in_flight_load_and_back_down() {
    if backend_kind() == BackendKind::Kind {
        eprintln!(
            "SKIP e2e/tests/autoscaling.rs: kind has no metrics pipeline for the HPA (e2e/run.sh installs no metrics-server or Prometheus adapter)"
        );
        return;
    }
    let cluster = cluster().await;
    let (name, host, tls) = ("scaling", "scaling.nlu-e2e.test", "scaling-tls");
    cluster
        .apply(&autoscaled_service(name, host, tls, INFLIGHT_TARGET))
        .await
        .unwrap();
    let token = tenant_with_token(&tenant("nu", &[name], &["predict"], 0))
        .await
        .unwrap();
    let https = cluster.https(host, tls).await.unwrap();
    let (request, _) = predict_case().unwrap();
    wait_for("a first answer", Duration::from_secs(180), || async {
        let answer = https.post(PREDICT, Some(&token), &request).await?;
        Ok((answer.status == 200).then_some(()))
    })
    .await
    .unwrap();
    assert_eq!(replicas(&cluster, name).await.unwrap().0, MIN_REPLICAS);

    // The load: clients posting back to back; every answer must be a 200.
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicU64::new(0));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (https, token, request) = (https.clone(), token.clone(), request.clone());
            let (stop, answered) = (stop.clone(), answered.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    let answer = https.post(PREDICT, Some(&token), &request).await;
                    match answer {
                        Ok(a) if a.status == 200 => {
                            answered.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(a) => panic!("a failed request under load: {} {}", a.status, a.body),
                        Err(e) => panic!("a failed request under load: {e:#}"),
                    }
                }
            })
        })
        .collect();
    let loaded = Instant::now();
    let up = wait_for(
        "more than one replica, ready, under load",
        Duration::from_secs(120),
        || async {
            let (spec, _, ready) = replicas(&cluster, name).await?;
            Ok((spec > MIN_REPLICAS && ready > MIN_REPLICAS).then_some((spec, ready)))
        },
    )
    .await
    .unwrap();
    println!(
        "scaled to {up:?} (spec, ready) {:?} after the load began ({} answers)",
        loaded.elapsed(),
        answered.load(Ordering::Relaxed)
    );
    assert!(up.0 <= MAX_REPLICAS, "{up:?}");
    // The status shows the in-flight metric the decision came from.
    let metric = exported_metric(IN_FLIGHT_REQUESTS);
    let hpa = cluster
        .api::<HorizontalPodAutoscaler>()
        .get(name)
        .await
        .unwrap();
    let status = hpa.status.expect("HPA status");
    println!("HPA status under load: {status:?}");
    assert!(status.desired_replicas > MIN_REPLICAS, "{status:?}");
    assert!(status.last_scale_time.is_some(), "{status:?}");
    let pods_metric = status
        .current_metrics
        .iter()
        .flatten()
        .find_map(|m| m.pods.as_ref().filter(|p| p.metric.name == metric));
    let average = pods_metric
        .and_then(|p| p.current.average_value.as_ref())
        .unwrap_or_else(|| panic!("no {metric} in the HPA status: {status:?}"));
    println!("{metric} average in the status: {}", average.0);
    // CPU alone would not have scaled it (over the target plus the tolerance).
    let cpu = status
        .current_metrics
        .iter()
        .flatten()
        .find_map(|m| m.resource.as_ref().filter(|r| r.name == "cpu"))
        .and_then(|r| r.current.average_utilization)
        .unwrap_or_else(|| panic!("no cpu utilization in the HPA status: {status:?}"));
    assert!(cpu * 10 < CPU_TARGET * 11, "cpu at {cpu} %: {status:?}");

    stop.store(true, Ordering::SeqCst);
    for client in clients {
        client.await.expect("no failed request under load");
    }
    // Down one step per stabilization window (10 s on the process cluster) at most.
    let quiet = Instant::now();
    let down = wait_for(
        "back to one replica after the load",
        Duration::from_secs(90),
        || async {
            let counts = replicas(&cluster, name).await?;
            Ok((counts == (MIN_REPLICAS, MIN_REPLICAS, MIN_REPLICAS)).then_some(()))
        },
    )
    .await;
    if let Err(error) = down {
        let hpa = cluster.api::<HorizontalPodAutoscaler>().get(name).await;
        panic!(
            "{error:#}; replicas (spec, status, ready) {:?}; HPA status {:?}",
            replicas(&cluster, name).await.ok(),
            hpa.map(|h| h.status)
        );
    }
    println!("back to one replica {:?} after the load", quiet.elapsed());
    cluster.delete::<NluService>(name).await.unwrap();
}
