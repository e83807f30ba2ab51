//! End-to-end helpers: cluster access, waiting, tenants' tokens and HTTPS calls through the
//! ingress, on either backend: the process cluster ([`process`], the default, run by
//! `cargo test -p e2e`) or kind (`NLU_E2E_BACKEND=kind`, set by `e2e/run.sh`), which prepares:
//! - the chart installed in `nlu-system`, ingress-nginx with its HTTPS port mapped to
//!   `127.0.0.1:$NLU_E2E_HTTPS_PORT`, cert-manager with the ClusterIssuer [`CLUSTER_ISSUER`];
//! - the namespace [`NAMESPACE`] with the PVC [`MODEL_CLAIM`] holding the UniNLU model folder
//!   under [`MODEL_PATH`] and the GTE one under [`EMBED_MODEL_PATH`]. The Redis Secret
//!   `nlu-redis` is the operator's to write (the namespace's Redis ACL user).

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{HeaderMap, StatusCode};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::{Api, Client, Resource};
use nlu_crds::{NluService, Tenant};
use nlu_operator::tenant::signing_key::{KeyRing, SIGNING_KEY_SECRET};
use nlu_operator::tenant::token_secret::{secret_name, KID_ANNOTATION};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::net::TcpStream;
use tokio::sync::OnceCell;

pub mod process;

/// Namespace of the services and tenants under test.
pub const NAMESPACE: &str = "nlu-e2e";
/// cert-manager ClusterIssuer (a test CA) that signs the ingress certificates.
pub const CLUSTER_ISSUER: &str = "e2e-ca";
/// PVC with the model folder, and the folder inside it.
pub const MODEL_CLAIM: &str = "models";
pub const MODEL_PATH: &str = "uninlu";
/// Model folder of the embedding service in the same claim.
pub const EMBED_MODEL_PATH: &str = "gte";
/// The operator's leader-election Lease (in its namespace).
pub const OPERATOR_LEASE: &str = "nlu-operator";
/// Field manager of everything the tests apply.
const MANAGER: &str = "nlu-e2e";

/// The cluster the suite runs against.
pub struct Cluster {
    pub client: Client,
    https_port: u16,
}

/// Where the suite runs: kind when `NLU_E2E_BACKEND=kind` (as `e2e/run.sh` sets it), else the
/// process cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendKind {
    Kind,
    Process,
}

pub fn backend_kind() -> BackendKind {
    match std::env::var("NLU_E2E_BACKEND") {
        Ok(b) if b == "kind" => BackendKind::Kind,
        _ => BackendKind::Process,
    }
}

/// A connection to the cluster of the selected backend: kind through the current kubeconfig
/// context (as `e2e/run.sh` sets it), else the process cluster of this test process.
/// One per test: every `#[tokio::test]` has its own runtime, and a client's background tasks
/// die with the runtime that spawned them.
pub async fn cluster() -> Cluster {
    // One crypto provider for kube's client and ours; an error means it is already installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
    if backend_kind() == BackendKind::Kind {
        let client = Client::try_default()
            .await
            .expect("no Kubernetes cluster configured: run the suite through e2e/run.sh");
        let https_port = std::env::var("NLU_E2E_HTTPS_PORT")
            .ok()
            .map(|p| p.parse().expect("NLU_E2E_HTTPS_PORT must be a port number"))
            .unwrap_or(8443);
        return Cluster { client, https_port };
    }
    let backend = process::backend().await;
    Cluster {
        client: backend.cluster.client(),
        https_port: backend.cluster.ingress_address().port(),
    }
}

impl Cluster {
    pub fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), NAMESPACE)
    }

    /// Creates or updates `obj` with server-side apply.
    pub async fn apply<K>(&self, obj: &K) -> anyhow::Result<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + Serialize
            + DeserializeOwned
            + std::fmt::Debug,
        <K as Resource>::DynamicType: Default,
    {
        let name = obj.meta().name.clone().context("object without a name")?;
        Ok(self
            .api::<K>()
            .patch(
                &name,
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(obj),
            )
            .await?)
    }

    /// Deletes `name` if it exists.
    pub async fn delete<K>(&self, name: &str) -> anyhow::Result<()>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + DeserializeOwned
            + std::fmt::Debug,
        <K as Resource>::DynamicType: Default,
    {
        match self
            .api::<K>()
            .delete(name, &DeleteParams::foreground())
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Deletes Tenant `name` if it exists and waits until it is gone (past the operator's
    /// finalizer).
    pub async fn remove_tenant(&self, name: &str) -> anyhow::Result<()> {
        self.delete::<Tenant>(name).await?;
        wait_for(
            &format!("old Tenant {name} gone"),
            Duration::from_secs(60),
            || async {
                Ok(self
                    .api::<Tenant>()
                    .get_opt(name)
                    .await?
                    .is_none()
                    .then_some(()))
            },
        )
        .await
    }

    /// Stops every operator replica and waits until none runs: on kind the chart's
    /// Deployment `nlu-system/nlu-operator` scaled to 0, on the process cluster its process.
    pub async fn stop_operator(&self) -> anyhow::Result<()> {
        match backend_kind() {
            BackendKind::Process => process::backend().await.stop_operator(),
            BackendKind::Kind => self.scale_operator(0).await,
        }
    }

    /// Starts the operator again (one replica) and waits until it runs.
    pub async fn start_operator(&self) -> anyhow::Result<()> {
        self.add_operator("operator", 1).await
    }

    /// Starts a second operator beside the running one: it stands by until the Lease is free.
    pub async fn add_standby_operator(&self) -> anyhow::Result<()> {
        self.add_operator("operator-standby", 2).await
    }

    /// One more operator: on the process cluster a process with this Lease identity, on kind
    /// the chart's Deployment at `replicas`.
    async fn add_operator(&self, identity: &str, replicas: i32) -> anyhow::Result<()> {
        match backend_kind() {
            BackendKind::Process => {
                process::backend().await.start_operator(identity);
                Ok(())
            }
            BackendKind::Kind => self.scale_operator(replicas).await,
        }
    }

    /// The identity holding the operator's leader Lease, once one holds it.
    pub async fn lease_holder(&self) -> anyhow::Result<String> {
        let leases: Api<Lease> = Api::namespaced(self.client.clone(), process::OPERATOR_NAMESPACE);
        wait_for(
            "a leader in the operator Lease",
            Duration::from_secs(60),
            || async {
                let lease = leases.get_opt(OPERATOR_LEASE).await?;
                Ok(lease
                    .and_then(|l| l.spec?.holder_identity)
                    .filter(|h| !h.is_empty()))
            },
        )
        .await
    }

    /// Stops the operator replica named `identity` (its process, or on kind its pod, which the
    /// Deployment replaces with a new standby).
    pub async fn stop_operator_replica(&self, identity: &str) -> anyhow::Result<()> {
        match backend_kind() {
            BackendKind::Process => process::backend().await.stop_operator_named(identity),
            BackendKind::Kind => {
                let pods: Api<Pod> =
                    Api::namespaced(self.client.clone(), process::OPERATOR_NAMESPACE);
                pods.delete(identity, &DeleteParams::default()).await?;
                Ok(())
            }
        }
    }

    /// Back to one operator replica after scenarios that changed how many run.
    pub async fn one_operator(&self) -> anyhow::Result<()> {
        // On kind, scaling to one replica is enough; the process cluster restarts from none.
        if backend_kind() == BackendKind::Process {
            self.stop_operator().await?;
        }
        self.start_operator().await
    }

    /// Asks the operator to rotate its token signing key, as a person would: `nlu-operator
    /// rotate-key` (with `--revoke-old` when `revoke_old`: earlier keys are dropped at once),
    /// which returns once the operator has done it.
    pub async fn rotate_signing_key(&self, revoke_old: bool) -> anyhow::Result<()> {
        let mut cli = tokio::process::Command::new(nlu_testkit::workspace_binary(
            "nlu-operator",
            "nlu-operator",
        ));
        cli.args([
            "rotate-key",
            "--operator-namespace",
            process::OPERATOR_NAMESPACE,
        ])
        .args(["--wait-seconds", "60"]);
        if revoke_old {
            cli.arg("--revoke-old");
        }
        if backend_kind() == BackendKind::Process {
            cli.env("KUBECONFIG", process::backend().await.cluster.kubeconfig());
        }
        let out = cli.output().await.context("run nlu-operator rotate-key")?;
        anyhow::ensure!(
            out.status.success(),
            "nlu-operator rotate-key failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    }

    /// Moves the retirement time of every retired signing key to the past, as the clock would
    /// after the longest token lifetime (plus the operator's margin): the operator then drops
    /// them from the published key set.
    pub async fn let_retired_keys_expire(&self) -> anyhow::Result<()> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), process::OPERATOR_NAMESPACE);
        let mut secret = api.get(SIGNING_KEY_SECRET).await?;
        let mut ring = KeyRing::from_secret(&secret)?;
        anyhow::ensure!(
            !ring.retired.is_empty(),
            "the signing key Secret lists no retired keys"
        );
        let past = chrono::Utc::now() - chrono::Duration::seconds(1);
        for key in &mut ring.retired {
            key.retire_after = past;
        }
        secret.data = Some(ring.to_secret_data());
        api.replace(
            SIGNING_KEY_SECRET,
            &kube::api::PostParams::default(),
            &secret,
        )
        .await?;
        Ok(())
    }

    /// The `kid` of the key that signed the tenant's current token (its Secret's annotation).
    pub async fn token_kid(&self, tenant: &str) -> anyhow::Result<String> {
        let secret = self.api::<Secret>().get(&secret_name(tenant)).await?;
        secret
            .metadata
            .annotations
            .and_then(|a| a.get(KID_ANNOTATION).cloned())
            .context("a token Secret without its kid annotation")
    }

    /// A Redis outage: the process backend's redis-server stopped, on kind the chart's Redis
    /// Deployment scaled to 0 (its pods gone).
    pub async fn stop_redis(&self) -> anyhow::Result<()> {
        match backend_kind() {
            BackendKind::Process => {
                process::backend().await.redis.lock().unwrap().stop();
                Ok(())
            }
            BackendKind::Kind => self.scale_redis(0).await,
        }
    }

    /// Redis back, empty (neither backend persists it): the operator must write the tenant
    /// records again.
    pub async fn start_redis(&self) -> anyhow::Result<()> {
        match backend_kind() {
            BackendKind::Process => {
                process::backend().await.redis.lock().unwrap().restart();
                Ok(())
            }
            BackendKind::Kind => self.scale_redis(1).await,
        }
    }

    async fn scale_redis(&self, replicas: i32) -> anyhow::Result<()> {
        let api: Api<Deployment> =
            Api::namespaced(self.client.clone(), process::OPERATOR_NAMESPACE);
        let selector = "app.kubernetes.io/component=redis";
        let list = api
            .list(&kube::api::ListParams::default().labels(selector))
            .await?;
        let redis = list
            .items
            .first()
            .context("no chart Redis Deployment in nlu-system")?;
        let name = redis
            .metadata
            .name
            .clone()
            .context("a Deployment without a name")?;
        self.scale(&api, &name, replicas).await
    }

    async fn scale_operator(&self, replicas: i32) -> anyhow::Result<()> {
        let api: Api<Deployment> =
            Api::namespaced(self.client.clone(), process::OPERATOR_NAMESPACE);
        self.scale(&api, "nlu-operator", replicas).await
    }

    /// Sets a Deployment's replicas and waits until exactly that many are ready.
    async fn scale(&self, api: &Api<Deployment>, name: &str, replicas: i32) -> anyhow::Result<()> {
        let patch = serde_json::json!({"spec": {"replicas": replicas}});
        api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        wait_for(
            &format!("Deployment {name} at {replicas} ready replicas"),
            Duration::from_secs(120),
            || async {
                let status = api.get(name).await?.status.unwrap_or_default();
                let ready = status.ready_replicas.unwrap_or(0);
                let total = status.replicas.unwrap_or(0);
                Ok((ready == replicas && total == replicas).then_some(()))
            },
        )
        .await
    }

    /// The tenant's current token, once the operator has issued it.
    pub async fn tenant_token(&self, tenant: &str) -> anyhow::Result<String> {
        let secret = secret_name(tenant);
        wait_for(
            &format!("Secret {secret} with a token"),
            Duration::from_secs(60),
            || async {
                let Some(s) = self.api::<Secret>().get_opt(&secret).await? else {
                    return Ok(None);
                };
                Ok(secret_text(&s, "token"))
            },
        )
        .await
    }

    /// An HTTPS client for `host`, trusting the CA that signed the ingress certificate in
    /// `tls_secret` (cert-manager's CA issuer puts it under `ca.crt`).
    pub async fn https(&self, host: &str, tls_secret: &str) -> anyhow::Result<Https> {
        let ca = wait_for(
            &format!("certificate Secret {tls_secret}"),
            Duration::from_secs(120),
            || async {
                let Some(s) = self.api::<Secret>().get_opt(tls_secret).await? else {
                    return Ok(None);
                };
                Ok(secret_text(&s, "ca.crt"))
            },
        )
        .await?;
        Https::new(&ca, host, self.https_port)
    }
}

fn secret_text(secret: &Secret, key: &str) -> Option<String> {
    let bytes = secret.data.as_ref()?.get(key)?;
    let text = String::from_utf8(bytes.0.clone()).ok()?;
    (!text.trim().is_empty()).then(|| text.trim().to_string())
}

/// Polls `check` every half second until it yields a value, or fails after `timeout` naming
/// what it waited for and the last error seen.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    let start = Instant::now();
    let mut last_error = None;
    loop {
        match check().await {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => {}
            Err(e) => last_error = Some(e),
        }
        if start.elapsed() > timeout {
            match last_error {
                Some(e) => {
                    bail!("timed out after {timeout:?} waiting for {what}; last error: {e:#}")
                }
                None => bail!("timed out after {timeout:?} waiting for {what}"),
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Whether a condition of this type is `True` in a status.
pub fn condition_true(
    conditions: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
    kind: &str,
) -> bool {
    conditions
        .iter()
        .any(|c| c.type_ == kind && c.status == "True")
}

/// The UniNLU service most tests call: autoscaled 1..3, behind a TLS ingress, JWT auth.
pub const SERVICE: &str = "uninlu";
pub const SERVICE_HOST: &str = "uninlu.nlu-e2e.test";
pub const SERVICE_TLS_SECRET: &str = "uninlu-tls";
pub const MIN_REPLICAS: i32 = 1;
pub const MAX_REPLICAS: i32 = 3;

/// An NluService serving the test model from the PVC, exposed at `host` with a certificate
/// from the test CA.
pub fn uninlu_service(name: &str, host: &str, tls_secret: &str) -> NluService {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "nlu.dev/v1alpha1",
        "kind": "NluService",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "model": {"task": "uninlu", "source": {"pvc": {"claimName": MODEL_CLAIM, "path": MODEL_PATH}}},
            "autoscaling": {"minReplicas": MIN_REPLICAS, "maxReplicas": MAX_REPLICAS, "targetCPUUtilizationPercentage": 80},
            "resources": {"requests": {"cpu": shared_cpu_request(), "memory": "128Mi"}, "limits": {"memory": "1Gi"}},
            "ingress": {
                "host": host,
                "className": "nginx",
                "tls": {"clusterIssuer": CLUSTER_ISSUER, "secretName": tls_secret}
            },
            "auth": {"mode": "jwt", "failurePolicy": "FailClosed"}
        }
    }))
    .expect("the NluService literal matches the CRD types")
}

/// The cpu request of the autoscaled test services. The process cluster's HPA acts on CPU but
/// does not schedule by requests: twice this machine's cores keeps utilization under 50 %, so
/// the scenarios' incidental load never scales them (one client drives a 100m request to ~970 %
/// and 3 replicas within 2 s). kind schedules by requests on one node and has no metrics
/// pipeline: a tenth of a core there.
pub fn shared_cpu_request() -> String {
    match backend_kind() {
        BackendKind::Process => {
            (2 * std::thread::available_parallelism().map_or(1, |n| n.get())).to_string()
        }
        BackendKind::Kind => "100m".into(),
    }
}

/// An embedding NluService (one replica) serving the GTE model of the claim with CLS pooling
/// (the fixture's), exposed at `host`: [`uninlu_service`] with another model and no autoscaling.
pub fn embedding_service(name: &str, host: &str, tls_secret: &str) -> NluService {
    let mut svc = uninlu_service(name, host, tls_secret);
    svc.spec.model = serde_json::from_value(serde_json::json!({
        "task": "embedding", "pooling": "cls",
        "source": {"pvc": {"claimName": MODEL_CLAIM, "path": EMBED_MODEL_PATH}}
    }))
    .expect("the model literal matches the CRD types");
    svc.spec.autoscaling = None;
    svc.spec.replicas = Some(1);
    svc
}

/// A tenant of `services` with the given scopes and per-minute limit (0 = unlimited).
pub fn tenant(name: &str, services: &[&str], scopes: &[&str], requests_per_minute: i64) -> Tenant {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "nlu.dev/v1alpha1",
        "kind": "Tenant",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "services": services,
            "scopes": scopes,
            "quota": {"requestsPerDay": 0, "requestsPerMinute": requests_per_minute},
            "token": {"ttl": "1h"}
        }
    }))
    .expect("the Tenant literal matches the CRD types")
}

/// Held by a scenario that stops or changes what every scenario of its test binary shares
/// (Redis, the operator, the signing key), so that such scenarios run one at a time.
pub async fn one_at_a_time() -> tokio::sync::MutexGuard<'static, ()> {
    static SHARED: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    SHARED.lock().await
}

static SERVICE_READY: OnceCell<()> = OnceCell::const_new();

/// Applies the shared UniNLU service once per test run and waits until it reports Ready (model
/// loaded, pods ready).
pub async fn ready_service() -> anyhow::Result<Cluster> {
    let cluster = cluster().await;
    SERVICE_READY
        .get_or_try_init(|| async {
            cluster
                .apply(&uninlu_service(SERVICE, SERVICE_HOST, SERVICE_TLS_SECRET))
                .await?;
            wait_for(
                &format!("NluService {SERVICE} Ready"),
                Duration::from_secs(300),
                || async {
                    let svc = cluster.api::<NluService>().get(SERVICE).await?;
                    Ok(svc
                        .status
                        .filter(|s| condition_true(&s.conditions, "Ready"))
                        .map(|_| ()))
                },
            )
            .await
        })
        .await?;
    Ok(cluster)
}

/// The shared service Ready, an HTTPS client for it, and the token of a new tenant `name` of
/// it (granted `predict`, unlimited) once the service answers it with 200.
pub async fn served_tenant(name: &str) -> anyhow::Result<(Cluster, Https, String)> {
    let cluster = ready_service().await?;
    let https = cluster.https(SERVICE_HOST, SERVICE_TLS_SECRET).await?;
    let token = tenant_with_token(&tenant(name, &[SERVICE], &["predict"], 0)).await?;
    answers(&https, Some(&token), 200, 30).await;
    Ok((cluster, https, token))
}

/// A tenant applied and its token issued.
pub async fn tenant_with_token(tenant: &Tenant) -> anyhow::Result<String> {
    let cluster = cluster().await;
    let name = tenant
        .metadata
        .name
        .clone()
        .context("tenant without a name")?;
    // A fresh record per run: a leftover tenant would carry yesterday's counters and token.
    cluster.remove_tenant(&name).await?;
    cluster.apply(tenant).await?;
    cluster.tenant_token(&name).await
}

/// HTTPS to one ingress host, resolved to the ingress port on 127.0.0.1 (kind's mapped port or
/// the process cluster's front).
#[derive(Clone)]
pub struct Https {
    config: Arc<rustls::ClientConfig>,
    host: String,
    port: u16,
}

/// An HTTP answer.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: serde_json::Value,
}

impl Answer {
    /// The `error.code` of a JSON error answer.
    pub fn error_code(&self) -> Option<&str> {
        self.body.pointer("/error/code").and_then(|c| c.as_str())
    }
}

impl Https {
    /// A client for `host` on `127.0.0.1:port` that trusts only the PEM certificates in `ca_pem`.
    pub fn new(ca_pem: &str, host: &str, port: u16) -> anyhow::Result<Https> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
            roots.add(cert.context("the CA is not PEM")?)?;
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
        Ok(Https {
            config: Arc::new(config),
            host: host.to_string(),
            port,
        })
    }

    /// POSTs JSON to `path` with an optional bearer token (one connection per request).
    pub async fn post(
        &self,
        path: &str,
        token: Option<&str>,
        body: &serde_json::Value,
    ) -> anyhow::Result<Answer> {
        let tcp = TcpStream::connect(("127.0.0.1", self.port))
            .await
            .with_context(|| format!("connect to the ingress on 127.0.0.1:{}", self.port))?;
        let name = ServerName::try_from(self.host.clone())?;
        let tls = tokio_rustls::TlsConnector::from(self.config.clone())
            .connect(name, tcp)
            .await
            .context(
                "TLS handshake with the ingress (certificate from the test CA for the host)",
            )?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
        tokio::spawn(conn);
        let mut request = hyper::Request::post(path)
            .header(hyper::header::HOST, &self.host)
            .header(hyper::header::CONTENT_TYPE, "application/json");
        if let Some(token) = token {
            request = request.header(hyper::header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = request.body(Full::new(Bytes::from(serde_json::to_vec(body)?)))?;
        let response = sender.send_request(request).await?;
        let (parts, body) = response.into_parts();
        let bytes = body.collect().await?.to_bytes();
        let body = serde_json::from_slice(&bytes).unwrap_or_else(|_| {
            serde_json::Value::String(String::from_utf8_lossy(&bytes).into_owned())
        });
        Ok(Answer {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }
}

/// The UniNLU route.
pub const PREDICT: &str = "/api/predict";

/// Posts the predict case to `path` until it answers `status` (within `secs`), and returns
/// that answer.
pub async fn answers_at(
    https: &Https,
    path: &str,
    token: Option<&str>,
    status: u16,
    secs: u64,
) -> Answer {
    let (request, _) = predict_case().unwrap();
    wait_for(
        &format!("a {status} from {path}"),
        Duration::from_secs(secs),
        || async {
            let answer = https.post(path, token, &request).await?;
            Ok((answer.status == status).then_some(answer))
        },
    )
    .await
    .unwrap()
}

/// [`answers_at`] on /api/predict.
pub async fn answers(https: &Https, token: Option<&str>, status: u16, secs: u64) -> Answer {
    answers_at(https, PREDICT, token, status, secs).await
}

/// A UniNLU request: the first fixture case when `NLU_E2E_EXPECTED` names the fixture's
/// `expected.json` (then the answer must equal its output), else a plain NER request.
pub fn predict_case() -> anyhow::Result<(serde_json::Value, Option<serde_json::Value>)> {
    let expected = std::env::var("NLU_E2E_EXPECTED")
        .ok()
        .or_else(process::fixture_expected);
    predict_case_from(expected.as_deref())
}

fn predict_case_from(
    expected_json: Option<&str>,
) -> anyhow::Result<(serde_json::Value, Option<serde_json::Value>)> {
    let Some(path) = expected_json else {
        return Ok((
            serde_json::json!({"text": "阿里巴巴的总部在杭州。", "schema": {"组织机构": null, "地理位置": null}}),
            None,
        ));
    };
    let cases: serde_json::Value =
        serde_json::from_slice(&std::fs::read(path).with_context(|| format!("read {path}"))?)?;
    let case = cases
        .as_array()
        .and_then(|c| c.first())
        .context("NLU_E2E_EXPECTED holds no case")?;
    let request = serde_json::json!({"text": case["text"], "schema": case["schema"]});
    Ok((request, Some(case["output"].clone())))
}

#[cfg(test)]
mod tests {
    use super::*;

    // The literals above are checked against the CRD types here, without a cluster, so a CRD
    // change that breaks them fails CI rather than the next kind run.
    #[test]
    fn service_and_tenant_literals_match_the_crd_types() {
        let svc = uninlu_service("s", "s.example.test", "s-tls");
        let scaling = svc.spec.autoscaling.as_ref().unwrap();
        assert_eq!(
            (scaling.min_replicas, scaling.max_replicas),
            (MIN_REPLICAS, MAX_REPLICAS)
        );
        let pvc = svc.spec.model.source.pvc.as_ref().unwrap();
        assert_eq!(
            (pvc.claim_name.as_str(), pvc.path.as_deref()),
            (MODEL_CLAIM, Some(MODEL_PATH))
        );
        let tls = svc.spec.ingress.as_ref().unwrap().tls.as_ref().unwrap();
        assert_eq!(tls.cluster_issuer.as_deref(), Some(CLUSTER_ISSUER));

        let t = tenant("t", &["s"], &["predict"], 3);
        assert_eq!(t.spec.services, ["s"]);
        assert_eq!(t.spec.quota.as_ref().unwrap().requests_per_minute, Some(3));
        assert_eq!(t.spec.token_ttl().unwrap(), Duration::from_secs(3600));
    }

    #[test]
    fn predict_case_reads_the_fixture_when_given() {
        let fixture = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../shared/fixtures/uninlu-tiny/expected.json"
        );
        let (request, expected) = predict_case_from(Some(fixture)).unwrap();
        assert!(
            request["text"].is_string() && request["schema"].is_object(),
            "{request}"
        );
        assert!(expected.unwrap().is_array());
    }

    /// A TLS server on loopback with a certificate for `host` from a fresh CA; it answers one
    /// request with 401 and echoes the Host and Authorization headers it got. Returns the CA PEM
    /// and the port.
    async fn one_shot_tls_server(host: &str) -> (String, u16) {
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
        use rustls::pki_types::PrivateKeyDer;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec![host.to_string()])
            .unwrap()
            .signed_by(&key, &ca)
            .unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
        )
        .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
            while let Ok((tcp, _)) = listener.accept().await {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    continue;
                };
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = tls.read(&mut buf).await.unwrap();
                    if n == 0 {
                        break;
                    }
                    request.extend_from_slice(&buf[..n]);
                }
                let request = String::from_utf8_lossy(&request).to_lowercase();
                let header = |name: &str| {
                    request
                        .lines()
                        .find_map(|l| l.strip_prefix(&format!("{name}: ")).map(str::to_string))
                        .unwrap_or_default()
                };
                let body = serde_json::json!({"error": {"code": "missing_token", "message": header("host")}, "auth": header("authorization")})
                    .to_string();
                let response = format!(
                    "HTTP/1.1 401 Unauthorized\r\ncontent-type: application/json\r\nwww-authenticate: Bearer\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                tls.write_all(response.as_bytes()).await.unwrap();
                tls.shutdown().await.ok();
            }
        });
        (ca.pem(), port)
    }

    #[tokio::test]
    async fn https_client_verifies_the_ca_and_host_and_sends_the_token() {
        let host = "svc.nlu-e2e.test";
        let (ca, port) = one_shot_tls_server(host).await;
        let body = serde_json::json!({"text": "x"});

        let answer = Https::new(&ca, host, port)
            .unwrap()
            .post("/api/predict", Some("t0k"), &body)
            .await
            .unwrap();
        assert_eq!(answer.status, 401);
        assert_eq!(answer.error_code(), Some("missing_token"));
        assert_eq!(answer.body["error"]["message"], host, "Host header");
        assert_eq!(answer.body["auth"], "bearer t0k");
        assert_eq!(answer.headers["www-authenticate"], "Bearer");

        // Another host name than the certificate's, or another CA: the handshake must fail.
        let wrong_host = Https::new(&ca, "other.nlu-e2e.test", port)
            .unwrap()
            .post("/", None, &body)
            .await;
        assert!(wrong_host.is_err(), "{wrong_host:?}");
        let (other_ca, _) = one_shot_tls_server(host).await;
        let wrong_ca = Https::new(&other_ca, host, port)
            .unwrap()
            .post("/", None, &body)
            .await;
        assert!(wrong_ca.is_err(), "{wrong_ca:?}");
    }
}
