//! Operator metrics (prefix `nlu_operator_`): reconcile runs, failures by reason and duration,
//! labelled by controller so every controller shares one registry.

use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Which controller a sample belongs to.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabel {
    pub controller: String,
}

/// A failed reconcile: controller and a short, bounded reason (an error variant name).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabels {
    pub controller: String,
    pub reason: String,
}

/// All operator metrics and the registry that exposes them.
pub struct Metrics {
    registry: Registry,
    runs: Family<ControllerLabel, Counter>,
    failures: Family<FailureLabels, Counter>,
    duration: Family<ControllerLabel, Histogram>,
    leader: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("nlu_operator");
        let runs = Family::<ControllerLabel, Counter>::default();
        let failures = Family::<FailureLabels, Counter>::default();
        // 1 ms .. ~16 s: a reconcile is a handful of API round trips.
        let duration = Family::<ControllerLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.001, 2.0, 15))
        });
        let leader = Gauge::default();
        registry.register("reconcile_runs", "Reconciles started", runs.clone());
        registry.register(
            "reconcile_failures",
            "Reconciles that ended in an error, by reason",
            failures.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Time one reconcile took",
            duration.clone(),
        );
        registry.register(
            "leader",
            "1 while this process runs the controllers (holds the Lease or runs without election)",
            leader.clone(),
        );
        Self {
            registry,
            runs,
            failures,
            duration,
            leader,
        }
    }

    /// Counts a reconcile of `controller`; the duration is observed when the guard drops.
    pub fn reconcile_started(&self, controller: &str) -> ReconcileTimer<'_> {
        let label = ControllerLabel {
            controller: controller.to_owned(),
        };
        self.runs.get_or_create(&label).inc();
        ReconcileTimer {
            metrics: self,
            label,
            start: Instant::now(),
        }
    }

    /// Counts a failed reconcile of `controller` with a bounded `reason`.
    pub fn reconcile_failed(&self, controller: &str, reason: &str) {
        self.failures
            .get_or_create(&FailureLabels {
                controller: controller.to_owned(),
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// Whether this process currently runs the controllers.
    pub fn set_leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
    }

    /// Reconciles started by `controller` so far.
    pub fn runs(&self, controller: &str) -> u64 {
        self.runs
            .get_or_create(&ControllerLabel {
                controller: controller.to_owned(),
            })
            .get()
    }

    /// Failures of `controller` with `reason` so far.
    pub fn failures(&self, controller: &str, reason: &str) -> u64 {
        self.failures
            .get_or_create(&FailureLabels {
                controller: controller.to_owned(),
                reason: reason.to_owned(),
            })
            .get()
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

/// Observes the reconcile duration when dropped, on every exit path.
pub struct ReconcileTimer<'a> {
    metrics: &'a Metrics,
    label: ControllerLabel,
    start: Instant,
}

impl Drop for ReconcileTimer<'_> {
    fn drop(&mut self) {
        self.metrics
            .duration
            .get_or_create(&self.label)
            .observe(self.start.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_runs_failures_and_durations_per_controller() {
        let metrics = Metrics::new();
        drop(metrics.reconcile_started("nluservice"));
        drop(metrics.reconcile_started("nluservice"));
        metrics.reconcile_failed("nluservice", "Kube");
        assert_eq!(metrics.runs("nluservice"), 2);
        assert_eq!(metrics.runs("tenant"), 0);
        assert_eq!(metrics.failures("nluservice", "Kube"), 1);
        let text = metrics.encode();
        assert!(
            text.contains(r#"nlu_operator_reconcile_runs_total{controller="nluservice"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(
                r#"nlu_operator_reconcile_duration_seconds_count{controller="nluservice"} 2"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                r#"nlu_operator_reconcile_failures_total{controller="nluservice",reason="Kube"} 1"#
            ),
            "{text}"
        );
    }
}
