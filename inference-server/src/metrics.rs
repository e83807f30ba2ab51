//! Prometheus metrics of the server (`nlu_` prefix), rendered at GET /metrics.

use std::sync::atomic::AtomicU64;

use nlu_crds::serve::{IN_FLIGHT_REQUESTS, METRICS_PREFIX};
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: String,
    pub status: u16,
    /// Empty when auth is off or the request was refused before the tenant was known.
    pub tenant: String,
}

/// What runs: set once the model is loaded.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelLabels {
    pub task: String,
    pub dtype: String,
    pub kernel: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: String,
}

pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub request_seconds: Family<RouteLabels, Histogram>,
    pub queue_seconds: Histogram,
    pub tokenize_seconds: Histogram,
    pub inference_seconds: Histogram,
    pub batch_size: Histogram,
    pub batch_tokens: Histogram,
    pub queue_depth: Gauge,
    pub queue_tokens: Gauge,
    pub dropped_sequences: Counter,
    pub in_flight: Gauge,
    pub queue_rejections: Counter,
    pub model_load_seconds: Gauge<f64, AtomicU64>,
    pub model: Family<ModelLabels, Gauge>,
    pub uninlu_prompts: Histogram,
    pub open_connections: Gauge,
}

fn latency_histogram() -> Histogram {
    // 100 µs .. ~52 s
    Histogram::new(exponential_buckets(0.0001, 2.0, 20))
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix(METRICS_PREFIX);
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "HTTP requests by route, status and tenant",
            requests.clone(),
        );
        let request_seconds = Family::<RouteLabels, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        registry.register(
            "request_seconds",
            "Total request latency",
            request_seconds.clone(),
        );
        let queue_seconds = latency_histogram();
        registry.register(
            "queue_seconds",
            "Time a sequence waited for its batch",
            queue_seconds.clone(),
        );
        let tokenize_seconds = latency_histogram();
        registry.register(
            "tokenize_seconds",
            "Tokenization time per request",
            tokenize_seconds.clone(),
        );
        let inference_seconds = latency_histogram();
        registry.register(
            "inference_seconds",
            "Model time per batch",
            inference_seconds.clone(),
        );
        let batch_size = Histogram::new(exponential_buckets(1.0, 2.0, 10));
        registry.register(
            "batch_size",
            "Sequences per model batch",
            batch_size.clone(),
        );
        let batch_tokens = Histogram::new(exponential_buckets(16.0, 2.0, 14));
        registry.register(
            "batch_tokens",
            "Tokens per model batch (packed, no padding)",
            batch_tokens.clone(),
        );
        let queue_depth = Gauge::default();
        registry.register(
            "queue_depth",
            "Sequences waiting for the model",
            queue_depth.clone(),
        );
        let queue_tokens = Gauge::default();
        registry.register(
            "queue_tokens",
            "Token positions of the requests in flight, every UniNLU level counted (--max-queue-tokens bounds admission)",
            queue_tokens.clone(),
        );
        let dropped_sequences = Counter::default();
        registry.register(
            "dropped_sequences",
            "Queued sequences dropped before running because their request ended (client gone, timed out, or failed)",
            dropped_sequences.clone(),
        );
        let in_flight = Gauge::default();
        // The HPA's Pods metric names this gauge (through the contract crate).
        registry.register(
            IN_FLIGHT_REQUESTS,
            "Model requests being handled (probes, /metrics and other routes not counted)",
            in_flight.clone(),
        );
        let queue_rejections = Counter::default();
        registry.register(
            "queue_rejections",
            "Requests refused because the work in flight was at --max-queue-tokens",
            queue_rejections.clone(),
        );
        let model_load_seconds = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "model_load_seconds",
            "Time to load the model",
            model_load_seconds.clone(),
        );
        let model = Family::<ModelLabels, Gauge>::default();
        registry.register(
            "model_info",
            "1 for the loaded model's task, weight dtype and matmul kernel (as /info says)",
            model.clone(),
        );
        let uninlu_prompts = Histogram::new(exponential_buckets(1.0, 2.0, 12));
        registry.register(
            "uninlu_prompts",
            "Prompts run per UniNLU request",
            uninlu_prompts.clone(),
        );
        let open_connections = Gauge::default();
        registry.register(
            "open_connections",
            "Connections open on the API listener (--max-connections caps them)",
            open_connections.clone(),
        );
        Metrics {
            registry,
            requests,
            request_seconds,
            queue_seconds,
            tokenize_seconds,
            inference_seconds,
            batch_size,
            batch_tokens,
            queue_depth,
            queue_tokens,
            dropped_sequences,
            in_flight,
            queue_rejections,
            model_load_seconds,
            model,
            uninlu_prompts,
            open_connections,
        }
    }

    /// For other parts (auth) to register their metrics before the server starts.
    pub fn registry_mut(&mut self) -> &mut Registry {
        &mut self.registry
    }

    /// Prometheus text exposition (OpenMetrics 1.0 text).
    pub fn render(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
