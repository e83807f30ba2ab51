//! Leader election over the fake API: the controllers start once the Lease is taken, stop
//! on shutdown, and the Lease is released (holder cleared) on the way out.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nlu_operator::leader::{run_while_leader, LeaseSettings};
use nlu_operator::metrics::Metrics;
use tokio_util::sync::CancellationToken;

use nlu_testkit::FakeApi;

#[tokio::test]
async fn controllers_run_while_leading_and_the_lease_is_released_on_shutdown() {
    let (client, api) = FakeApi::start();
    let metrics = Arc::new(Metrics::new());
    let shutdown = CancellationToken::new();
    let started = Arc::new(AtomicUsize::new(0));
    let lease = LeaseSettings {
        namespace: "nlu-system".into(),
        name: "nlu-operator".into(),
        identity: "pod-a".into(),
    };
    let runs = started.clone();
    let stop = shutdown.clone();
    let leader_metrics = metrics.clone();
    let task = tokio::spawn(async move {
        run_while_leader(client, lease, leader_metrics, stop, move |term| {
            let runs = runs.clone();
            async move {
                runs.fetch_add(1, Ordering::SeqCst);
                term.cancelled().await;
            }
        })
        .await
    });
    let lease_path = "/apis/coordination.k8s.io/v1/namespaces/nlu-system/leases/nlu-operator";
    tokio::time::timeout(Duration::from_secs(10), async {
        while started.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("controllers started after taking the lease");
    assert_eq!(
        api.get(lease_path).unwrap()["spec"]["holderIdentity"],
        "pod-a"
    );
    assert!(metrics.encode().contains("nlu_operator_leader 1"));

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("stopped")
        .unwrap()
        .expect("clean exit");
    assert_eq!(started.load(Ordering::SeqCst), 1);
    assert!(metrics.encode().contains("nlu_operator_leader 0"));
    let holder = api.get(lease_path).unwrap()["spec"]
        .get("holderIdentity")
        .cloned();
    assert!(
        holder.as_ref().is_none_or(|h| h.is_null()),
        "released: {holder:?}"
    );
}
