//! Auth and quota metrics, with the tenant label bounded: tenants in `--metrics-tenants`, or
//! else the first `--metrics-max-tenants` seen, get their own label; the rest count as `other`.

use std::collections::HashSet;
use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

pub const OTHER: &str = "other";

/// Decides the metrics label of a tenant id.
pub struct TenantLabels {
    allow: HashSet<String>,
    cap: usize,
    seen: Mutex<HashSet<String>>,
}

impl TenantLabels {
    pub fn new(allow: impl IntoIterator<Item = String>, cap: usize) -> Self {
        Self {
            allow: allow.into_iter().collect(),
            cap,
            seen: Mutex::default(),
        }
    }

    pub fn label(&self, tenant: &str) -> String {
        if !self.allow.is_empty() {
            return if self.allow.contains(tenant) {
                tenant.to_string()
            } else {
                OTHER.to_string()
            };
        }
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.contains(tenant) || (seen.len() < self.cap && seen.insert(tenant.to_string())) {
            tenant.to_string()
        } else {
            OTHER.to_string()
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    /// Bounded tenant label; empty when the token did not verify.
    pub tenant: String,
    /// `allowed` or the error code of the refusal.
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TenantLabel {
    pub tenant: String,
}

pub struct AuthMetrics {
    pub tenants: TenantLabels,
    pub decisions: Family<DecisionLabels, Counter>,
    /// Token positions charged, by tenant label.
    pub tokens: Family<TenantLabel, Counter>,
    pub backend_errors: Counter,
    pub backend_up: Gauge,
    pub check_seconds: Histogram,
}

impl AuthMetrics {
    /// Registers into the server's registry (prefix `nlu`).
    pub fn register(registry: &mut Registry, tenants: TenantLabels) -> Self {
        let decisions = Family::<DecisionLabels, Counter>::default();
        registry.register(
            "auth_decisions",
            "Auth and quota decisions by tenant and outcome (quota rejections are outcome quota_exceeded / rate_limited)",
            decisions.clone(),
        );
        let tokens = Family::<TenantLabel, Counter>::default();
        registry.register(
            "tenant_tokens",
            "Token positions charged to tenants' token quotas (model work admitted)",
            tokens.clone(),
        );
        let backend_errors = Counter::default();
        registry.register(
            "quota_backend_errors",
            "Quota checks that failed because Redis did not answer",
            backend_errors.clone(),
        );
        let backend_up = Gauge::default();
        registry.register(
            "quota_backend_up",
            "1 while Redis answers the probe",
            backend_up.clone(),
        );
        // 50 µs .. ~0.8 s
        let check_seconds = Histogram::new(exponential_buckets(0.00005, 2.0, 15));
        registry.register(
            "auth_seconds",
            "Time spent on token verification and the quota check",
            check_seconds.clone(),
        );
        Self {
            tenants,
            decisions,
            tokens,
            backend_errors,
            backend_up,
            check_seconds,
        }
    }

    pub fn decision(&self, tenant_label: &str, outcome: &str) {
        self.decisions
            .get_or_create(&DecisionLabels {
                tenant: tenant_label.to_string(),
                outcome: outcome.to_string(),
            })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_list_wins_over_the_cap() {
        let labels = TenantLabels::new(["ns/a".to_string()], 100);
        assert_eq!(labels.label("ns/a"), "ns/a");
        assert_eq!(labels.label("ns/b"), OTHER);
    }

    #[test]
    fn cap_keeps_the_first_tenants_seen() {
        let labels = TenantLabels::new([], 2);
        let got: Vec<_> = ["a/1", "a/2", "a/3", "a/1", "a/2", "a/3"]
            .iter()
            .map(|t| labels.label(t))
            .collect();
        assert_eq!(got, ["a/1", "a/2", OTHER, "a/1", "a/2", OTHER]);
    }
}
