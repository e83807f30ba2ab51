//! What every reconcile gets: the API client, the operator config, metrics, the event recorder
//! and a clock (replaceable in tests so status timestamps are reproducible).

use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::events::{Recorder, Reporter};
use kube::Client;

use crate::config::OperatorConfig;
use crate::metrics::Metrics;

/// The `controller` name in Events, field managers and metrics.
pub const OPERATOR_NAME: &str = "nlu-operator";

/// Current time source.
pub type Clock = Arc<dyn Fn() -> Timestamp + Send + Sync>;

/// Shared state of all controllers.
pub struct Context {
    pub client: Client,
    pub config: OperatorConfig,
    pub metrics: Arc<Metrics>,
    pub recorder: Recorder,
    pub clock: Clock,
    /// Retry delays of objects whose reconcile failed.
    pub backoff: FailureBackoff,
}

impl Context {
    /// A context on `client` with the wall clock. Tests pass a `tower-test` mock client.
    pub fn new(client: Client, config: OperatorConfig, metrics: Arc<Metrics>) -> Self {
        let reporter = Reporter {
            controller: OPERATOR_NAME.into(),
            instance: std::env::var("HOSTNAME").ok(),
        };
        let recorder = Recorder::new(client.clone(), reporter);
        Self {
            client,
            config,
            metrics,
            recorder,
            clock: Arc::new(Timestamp::now),
            backoff: FailureBackoff::default(),
        }
    }

    /// The same context with another clock (tests: a fixed or stepping time).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Now, from the context's clock.
    pub fn now(&self) -> Timestamp {
        (self.clock)()
    }

    /// Now, as a Kubernetes `Time` (condition timestamps).
    pub fn now_time(&self) -> Time {
        Time(self.now())
    }
}

/// Per-object retry delays after failed reconciles: doubling from 5 s up to 5 min, reset by a
/// success, so a broken object neither spins nor waits long once fixed.
#[derive(Default)]
pub struct FailureBackoff {
    failures: std::sync::Mutex<std::collections::HashMap<String, u32>>,
}

impl FailureBackoff {
    const FIRST: std::time::Duration = std::time::Duration::from_secs(5);
    const MAX: std::time::Duration = std::time::Duration::from_secs(300);

    /// Records a failure of `key` and returns how long to wait before the next try.
    pub fn next_delay(&self, key: &str) -> std::time::Duration {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let n = failures.entry(key.to_owned()).or_insert(0);
        let delay = Self::FIRST.saturating_mul(1 << (*n).min(10)).min(Self::MAX);
        *n += 1;
        delay
    }

    /// Forgets the failures of `key` after a successful reconcile.
    pub fn reset(&self, key: &str) {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }
}
