//! One controller of the operator running on the test's runtime, talking to the routing proxy.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nlu_operator::config::{OperatorConfig, Policy};
use nlu_operator::context::Context;
use nlu_operator::metrics::Metrics;
use nlu_testkit::{ApiServer, ClusterProxy, RecordedRequest};
use tokio_util::sync::CancellationToken;

/// A controller under test, its proxy, and a client (through the same proxy) for the test.
pub struct Running {
    pub proxy: ClusterProxy,
    pub client: kube::Client,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    /// The NluService controller, watching `namespace` only.
    pub async fn nlu_service(server: &ApiServer, namespace: &str) -> Running {
        Running::nlu_service_with(server, namespace, Policy::default()).await
    }

    /// The NluService controller with `policy`, watching `namespace` only.
    pub async fn nlu_service_with(server: &ApiServer, namespace: &str, policy: Policy) -> Running {
        let config = OperatorConfig {
            namespace: Some(namespace.into()),
            policy,
            ..OperatorConfig::default()
        };
        Running::start(server, config, |ctx, stop| {
            nlu_operator::nlu_service::controller::run(ctx, stop)
        })
        .await
    }

    /// The Tenant controller (with its key manager and JWKS publisher), watching `namespace`;
    /// its signing key lives in `<namespace>-system`.
    pub async fn tenant(server: &ApiServer, namespace: &str, redis_url: &str) -> Running {
        let config = OperatorConfig {
            namespace: Some(namespace.into()),
            operator_namespace: format!("{namespace}-system"),
            redis_url: Some(redis_url.into()),
            ..OperatorConfig::default()
        };
        Running::start(server, config, |ctx, stop| {
            nlu_operator::tenant::run(ctx, stop)
        })
        .await
    }

    /// Both controllers, as `nlu-operator run` runs them, watching `namespace`, with the
    /// operator's Redis at `redis_url`.
    pub async fn operator(server: &ApiServer, namespace: &str, redis_url: &str) -> Running {
        let config = OperatorConfig {
            namespace: Some(namespace.into()),
            operator_namespace: format!("{namespace}-system"),
            redis_url: Some(redis_url.into()),
            ..OperatorConfig::default()
        };
        Running::start(server, config, |ctx, stop| async move {
            tokio::join!(
                nlu_operator::nlu_service::controller::run(ctx.clone(), stop.clone()),
                nlu_operator::tenant::run(ctx, stop),
            );
        })
        .await
    }

    async fn start<F, Fut>(server: &ApiServer, config: OperatorConfig, run: F) -> Running
    where
        F: FnOnce(Arc<Context>, CancellationToken) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        // The controllers' warnings go to the test's captured output: shown when a test fails.
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter("warn")
            .try_init();
        let proxy = ClusterProxy::start(server.client().await).await;
        let ctx = Arc::new(Context::new(
            proxy.client(),
            config,
            Arc::new(Metrics::new()),
        ));
        let stop = CancellationToken::new();
        let task = tokio::spawn(run(ctx, stop.clone()));
        let client = proxy.client();
        Running {
            proxy,
            client,
            stop,
            task,
        }
    }

    /// Requests so far whose path is `path` exactly and whose method is not GET.
    pub fn writes_to(&self, path: &str) -> Vec<RecordedRequest> {
        self.proxy
            .requests()
            .into_iter()
            .filter(|r| r.path == path && r.method != http::Method::GET)
            .collect()
    }

    /// Number of requests so far with this method and path.
    pub fn count(&self, method: http::Method, path: &str) -> usize {
        self.proxy
            .requests()
            .iter()
            .filter(|r| r.method == method && r.path == path)
            .count()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.cancel();
        self.task.abort();
    }
}

/// Polls `probe` every 50 ms until it gives a value; panics after `seconds` naming `what`.
pub async fn eventually<T, Fut>(what: &str, seconds: u64, mut probe: impl FnMut() -> Fut) -> T
where
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(seconds);
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {seconds} s waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A sample of `manifests/samples/` as a typed object, renamed into `namespace`.
pub fn sample<K: serde::de::DeserializeOwned>(file: &str, namespace: &str, name: &str) -> K {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../manifests/samples")
        .join(file);
    let mut object: serde_json::Value =
        serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    object["metadata"] = serde_json::json!({"name": name, "namespace": namespace});
    serde_json::from_value(object).unwrap()
}

/// Creates `object` (JSON, named in its metadata) in `namespace` as someone other than the
/// operator would; returns the namespace's Api of that kind and the object as the server answered.
pub async fn create_theirs<K>(
    client: &kube::Client,
    namespace: &str,
    object: serde_json::Value,
) -> (kube::Api<K>, K)
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::Serialize
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let api = kube::Api::<K>::namespaced(client.clone(), namespace);
    let created = api
        .create(
            &kube::api::PostParams::default(),
            &serde_json::from_value(object).unwrap(),
        )
        .await
        .unwrap();
    (api, created)
}

/// The first Event in `namespace` with `reason`, once there is one; it must be a Warning.
pub async fn warning_event(client: &kube::Client, namespace: &str, reason: &str) {
    let events: kube::Api<k8s_openapi::api::events::v1::Event> =
        kube::Api::namespaced(client.clone(), namespace);
    let event = eventually(&format!("a {reason} event"), 20, || async {
        events
            .list(&Default::default())
            .await
            .ok()?
            .items
            .into_iter()
            .find(|e| e.reason.as_deref() == Some(reason))
    })
    .await;
    assert_eq!(event.type_.as_deref(), Some("Warning"), "{event:?}");
}
