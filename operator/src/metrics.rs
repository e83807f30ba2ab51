//! Operator metrics (prefix `nlu_operator_`): reconcile runs, failures by reason and duration,
//! labelled by controller so every controller shares one registry; and each tenant's usage of
//! today as the Tenant controller last read it from Redis, for a bounded number of tenants.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use nlu_crds::access::redis_keys::DayUsage;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::MetricType;
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
    tenants: Arc<TenantUsage>,
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
        let tenants = Arc::new(TenantUsage::default());
        registry.register_collector(Box::new(tenants.clone()));
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
            tenants,
        }
    }

    /// Today's usage of `tenant` (`namespace/name`) as just read from Redis. Exported while
    /// fewer than `limit` (`--usage-metrics-tenants`) other tenants are; a tenant keeps its
    /// place until [`Metrics::forget_tenant`], so its series never moves to another.
    pub fn tenant_usage(&self, tenant: &str, today: &DayUsage, limit: usize) {
        let mut slots = self.tenants.slots.lock().expect("not poisoned");
        if let Some(shown) = slots.exported.get_mut(tenant) {
            *shown = today.clone();
        } else if slots.exported.len() < limit {
            slots.unexported.remove(tenant);
            slots.exported.insert(tenant.to_owned(), today.clone());
        } else {
            slots.unexported.insert(tenant.to_owned());
        }
    }

    /// `tenant` is gone: its series end and its place is free for another tenant.
    pub fn forget_tenant(&self, tenant: &str) {
        let mut slots = self.tenants.slots.lock().expect("not poisoned");
        slots.exported.remove(tenant);
        slots.unexported.remove(tenant);
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

/// The tenants' usage series, written at scrape time from what the reconciles last read.
#[derive(Debug, Default)]
struct TenantUsage {
    slots: Mutex<TenantSlots>,
}

#[derive(Debug, Default)]
struct TenantSlots {
    /// Today's usage of each exported tenant.
    exported: BTreeMap<String, DayUsage>,
    /// Tenants seen while the limit was reached.
    unexported: BTreeSet<String>,
}

/// One figure of a day's usage.
type Reading = fn(&DayUsage) -> u64;

impl Collector for TenantUsage {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let slots = self.slots.lock().expect("not poisoned");
        let today = "so far today (UTC, as counted in Redis by every server; restarts from 0 at \
                     midnight UTC), per tenant";
        let counters: [(&str, &str, Reading); 2] = [
            ("tenant_requests", "Requests allowed", |d| d.requests),
            ("tenant_tokens", "Tokens charged", |d| d.tokens),
        ];
        for (name, help, value) in counters {
            let help = format!("{help} {today}");
            let mut family = encoder.encode_descriptor(name, &help, None, MetricType::Counter)?;
            for (tenant, usage) in &slots.exported {
                let labels = [("tenant", tenant.as_str())];
                ConstCounter::new(value(usage)).encode(family.encode_family(&labels)?)?;
            }
        }
        let help = format!("Requests refused by reason {today}");
        let mut family =
            encoder.encode_descriptor("tenant_refused", &help, None, MetricType::Counter)?;
        for (tenant, usage) in &slots.exported {
            for (reason, count) in &usage.refused {
                let labels = [("tenant", tenant.as_str()), ("reason", reason.as_str())];
                ConstCounter::new(*count).encode(family.encode_family(&labels)?)?;
            }
        }
        let unexported = Gauge::<i64>::default();
        unexported.set(i64::try_from(slots.unexported.len()).unwrap_or(i64::MAX));
        unexported.encode(encoder.encode_descriptor(
            "tenant_usage_unexported",
            "Tenants whose usage is not exported: --usage-metrics-tenants others already are",
            None,
            MetricType::Gauge,
        )?)
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

    fn day(requests: u64, tokens: u64, refused: &[(&str, u64)]) -> DayUsage {
        DayUsage {
            requests,
            tokens,
            refused: refused.iter().map(|(r, n)| ((*r).to_owned(), *n)).collect(),
        }
    }

    #[test]
    fn tenant_usage_is_exported_for_at_most_the_limit_of_tenants() {
        let metrics = Metrics::new();
        metrics.tenant_usage("a/one", &day(3, 400, &[("scope", 2)]), 2);
        metrics.tenant_usage("a/two", &day(1, 0, &[]), 2);
        metrics.tenant_usage("b/three", &day(9, 9, &[]), 2);
        metrics.tenant_usage(
            "a/one",
            &day(5, 700, &[("scope", 2), ("requests_per_minute", 1)]),
            2,
        );
        let text = metrics.encode();
        for line in [
            r#"nlu_operator_tenant_requests_total{tenant="a/one"} 5"#,
            r#"nlu_operator_tenant_tokens_total{tenant="a/one"} 700"#,
            r#"nlu_operator_tenant_refused_total{tenant="a/one",reason="scope"} 2"#,
            r#"nlu_operator_tenant_refused_total{tenant="a/one",reason="requests_per_minute"} 1"#,
            r#"nlu_operator_tenant_requests_total{tenant="a/two"} 1"#,
            "nlu_operator_tenant_usage_unexported 1",
            "# TYPE nlu_operator_tenant_requests counter",
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
        assert!(!text.contains("b/three"), "{text}");

        // A deleted tenant frees its place for the next one seen.
        metrics.forget_tenant("a/two");
        metrics.tenant_usage("b/three", &day(9, 9, &[]), 2);
        let text = metrics.encode();
        assert!(!text.contains("a/two"), "{text}");
        assert!(text.contains(r#"nlu_operator_tenant_requests_total{tenant="b/three"} 9"#));
        assert!(
            text.contains("nlu_operator_tenant_usage_unexported 0"),
            "{text}"
        );
    }
}
