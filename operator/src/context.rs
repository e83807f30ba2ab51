//! What every reconcile gets: the API client, the operator config, metrics, the event recorder
//! and a clock (replaceable in tests so status timestamps are reproducible).

use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::events::{Recorder, Reporter};
use kube::Client;

use crate::config::OperatorConfig;
use crate::controller_kit::FailureBackoff;
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
    /// Consecutive failures of objects whose reconcile failed (the controllers' retry delays).
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
