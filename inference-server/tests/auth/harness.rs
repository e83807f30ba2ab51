//! Test harness: `redis-server` processes, key files, tokens, and a server with the auth layer
//! in front of trivial model routes.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Extension, Router};
use clap::Parser;
use nlu_crds::access::jwks::jwk_set;
use nlu_crds::access::redis_client::{self, RedisConnection, Timeouts};
use nlu_crds::access::{Claims, Credential, RedisKeys, SigningKey, TenantRecord, TokenRequest};
use nlu_server::auth::{Auth, AuthArgs, Tenant};
use nlu_testkit::RedisServer;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

/// A real `redis-server` for the tests that stop and restart it.
pub fn redis() -> RedisServer {
    RedisServer::start()
        .expect("the auth tests need redis-server (apt-get install -y redis-server)")
}

/// The Redis shared by the tests that never kill it (tests keep apart by key prefix).
pub fn shared_redis() -> &'static RedisServer {
    static REDIS: OnceLock<RedisServer> = OnceLock::new();
    REDIS.get_or_init(redis)
}

/// A prefix no other test uses.
pub fn unique_prefix() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!("t{}:", N.fetch_add(1, Ordering::Relaxed))
}

/// Where a test keeps tenant records and counters: the `--redis-url` the server gets (one server,
/// TLS, or a cluster) and, for TLS, the CA file it trusts (`--redis-ca-file`).
pub struct RedisTarget {
    pub url: String,
    pub ca_file: Option<tempfile::NamedTempFile>,
}

impl RedisTarget {
    pub fn new(url: String) -> Self {
        RedisTarget { url, ca_file: None }
    }

    /// A TLS-only server, trusted through a file holding its CA.
    pub fn tls(redis: &RedisServer) -> Self {
        let ca_file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(ca_file.path(), redis.ca_pem().expect("a TLS server")).unwrap();
        RedisTarget {
            url: redis.url(),
            ca_file: Some(ca_file),
        }
    }

    /// The server's flags beyond `--redis-url`.
    pub fn flags(&self) -> Vec<String> {
        match &self.ca_file {
            Some(ca) => vec!["--redis-ca-file".into(), ca.path().to_str().unwrap().into()],
            None => vec![],
        }
    }

    /// A connection opened the way the server opens it, so tests write and read where it does.
    pub fn conn(&self) -> RedisConnection {
        let ca_pem = self
            .ca_file
            .as_ref()
            .map(|f| std::fs::read(f.path()).unwrap());
        let timeouts = Timeouts {
            timeout: Duration::from_secs(5),
            max_delay: Duration::from_millis(200),
        };
        redis_client::connect(&self.url, ca_pem, timeouts).unwrap()
    }
}

pub fn redis_conn(url: &str) -> RedisConnection {
    RedisTarget::new(url.into()).conn()
}

pub async fn put_record(url: &str, prefix: &str, tenant: &str, record: &TenantRecord) {
    write_record(&mut redis_conn(url), prefix, tenant, record).await;
}

/// Replaces the tenant's record over `conn`.
pub async fn write_record(
    conn: &mut RedisConnection,
    prefix: &str,
    tenant: &str,
    record: &TenantRecord,
) {
    let key = RedisKeys::new(prefix).tenant(&tenant.parse().unwrap());
    let _: () = redis::cmd("DEL").arg(&key).query_async(conn).await.unwrap();
    let _: () = redis::cmd("HSET")
        .arg(&key)
        .arg(record.to_fields())
        .query_async(conn)
        .await
        .unwrap();
}

/// The uid of the Tenant behind every test record and token (the `tid` claim).
pub const TENANT_UID: &str = "uid-test-tenant";

/// A record that allows everything with no limits.
pub fn open_record() -> TenantRecord {
    TenantRecord {
        enabled: true,
        gen: 1,
        uid: TENANT_UID.into(),
        ..TenantRecord::default()
    }
}

/// What the tokens of [`Keys::token`] speak for.
pub fn credential() -> Credential {
    Credential {
        tid: TENANT_UID.into(),
        gen: 1,
        identity: None,
    }
}

pub const SERVICE: &str = "team-a/gte";
pub const ISSUER: &str = "nlu-operator";

/// Signing keys and the JWK Set file the server watches.
pub struct Keys {
    pub dir: tempfile::TempDir,
    pub key: SigningKey,
}

impl Keys {
    pub fn new() -> Self {
        let keys = Keys {
            dir: tempfile::tempdir().unwrap(),
            key: SigningKey::generate(),
        };
        keys.publish(&[&keys.key]);
        keys
    }

    pub fn jwks_path(&self) -> PathBuf {
        self.dir.path().join("jwks.json")
    }

    /// Replaces the JWK Set file atomically (as the kubelet swaps a ConfigMap).
    pub fn publish(&self, keys: &[&SigningKey]) {
        let public: Vec<_> = keys.iter().map(|k| k.verifying_key()).collect();
        let set = jwk_set(&public);
        let tmp = self.dir.path().join("jwks.json.tmp");
        std::fs::write(&tmp, serde_json::to_vec(&set).unwrap()).unwrap();
        std::fs::rename(&tmp, self.jwks_path()).unwrap();
    }

    pub fn request(tenant: &str) -> TokenRequest {
        TokenRequest {
            issuer: ISSUER.into(),
            tenant: tenant.parse().unwrap(),
            audience: vec![SERVICE.parse().unwrap()],
            scopes: vec![],
            ttl: Duration::from_secs(600),
            gen: 1,
            tenant_uid: TENANT_UID.into(),
        }
    }

    pub fn token(&self, tenant: &str) -> String {
        Self::request(tenant).mint(&self.key).unwrap().0
    }

    pub fn claims(tenant: &str) -> Claims {
        Self::request(tenant).claims_at(chrono::Utc::now().timestamp(), "test".into())
    }
}

/// A server with the auth layer in front of trivial model routes that echo the tenant.
pub struct TestServer {
    pub client: reqwest::Client,
    pub base: String,
}

#[derive(Clone)]
struct AppState {
    auth: Arc<Auth>,
    registry: Arc<Registry>,
}

async fn echo_tenant(Extension(tenant): Extension<Tenant>) -> String {
    tenant.id.to_string()
}

async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    match state.auth.readiness() {
        Ok(()) => (StatusCode::OK, "ready".to_string()),
        Err(reason) => (StatusCode::SERVICE_UNAVAILABLE, reason.to_string()),
    }
}

async fn metrics(State(state): State<AppState>) -> String {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &state.registry).unwrap();
    text
}

/// `AuthArgs` as the command line gives them (also checks the flags parse).
pub fn auth_args(redis_url: &str, jwks: &Path, prefix: &str, extra: &[&str]) -> AuthArgs {
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        auth: AuthArgs,
    }
    let mut argv = vec![
        "test",
        "--auth",
        "jwt",
        "--jwks",
        jwks.to_str().unwrap(),
        "--service-id",
        SERVICE,
        "--redis-url",
        redis_url,
        "--redis-prefix",
        prefix,
    ];
    argv.extend_from_slice(extra);
    Cli::try_parse_from(argv).unwrap().auth
}

pub fn app(args: &AuthArgs) -> Router {
    let mut registry = Registry::with_prefix("nlu");
    let auth = Auth::from_args(args, Duration::from_secs(60), &mut registry)
        .unwrap()
        .expect("--auth jwt");
    let state = AppState {
        auth: auth.clone(),
        registry: Arc::new(registry),
    };
    let api = Router::new()
        .route("/api/predict", post(echo_tenant))
        .route("/v1/embeddings", post(echo_tenant))
        .route("/embed", post(echo_tenant))
        .route("/similarity", post(echo_tenant))
        .route("/rerank", post(echo_tenant))
        .route("/v1/rerank", post(echo_tenant));
    auth.protect(api)
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

impl TestServer {
    pub async fn start(args: &AuthArgs) -> Self {
        // reqwest may be built with rustls (features unify across test binaries).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = app(args);
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        TestServer {
            client: reqwest::Client::new(),
            base: format!("http://{addr}"),
        }
    }

    pub async fn call(&self, path: &str, token: Option<&str>) -> reqwest::Response {
        let mut req = self.client.post(format!("{}{path}", self.base)).body("{}");
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        req.send().await.unwrap()
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap()
    }
}

/// The `error.code` of a JSON error body.
pub async fn error_code(response: reqwest::Response) -> String {
    let body: serde_json::Value = response.json().await.expect("errors are JSON");
    body["error"]["code"]
        .as_str()
        .expect("error.code")
        .to_string()
}

/// Polls `check` every 100 ms until it is true or `secs` pass.
pub async fn eventually<F, Fut>(secs: u64, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The value of an unlabelled metric in Prometheus text.
pub fn metric_value(text: &str, name: &str) -> u64 {
    let prefix = format!("{name} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {name} in {text}"))
        .parse()
        .unwrap()
}

/// A tiny model of the shared fixtures (`gte-tiny`, `uninlu-tiny`).
pub fn tiny_model(name: &str) -> String {
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join(format!("../../shared/fixtures/{name}/model"));
    dir.to_str().unwrap().to_string()
}

/// The tiny GTE model of the shared fixtures.
pub fn gte_tiny() -> String {
    tiny_model("gte-tiny")
}

/// `serve` flags for `--auth jwt` against `redis_url` with the keys' JWK Set, as [`SERVICE`].
pub fn jwt_flags(redis_url: &str, keys: &Keys, prefix: &str) -> Vec<String> {
    [
        "--auth",
        "jwt",
        "--jwks",
        keys.jwks_path().to_str().unwrap(),
        "--service-id",
        SERVICE,
        "--redis-url",
        redis_url,
        "--redis-prefix",
        prefix,
    ]
    .map(String::from)
    .to_vec()
}

/// Starts the real `nlu-server serve <args>` in this process on a free port; returns the port.
pub async fn real_server(args: &[String]) -> u16 {
    let argv = ["nlu-server".to_string(), "serve".to_string()]
        .into_iter()
        .chain(args.iter().cloned());
    let parsed = <nlu_server::config::Cli as Parser>::try_parse_from(argv).unwrap();
    let nlu_server::config::Command::Serve(args) = parsed.command else {
        panic!("serve")
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(nlu_server::server::serve(
        *args,
        listener,
        std::future::pending(),
    ));
    port
}
