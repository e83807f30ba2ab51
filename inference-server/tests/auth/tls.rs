//! HTTPS with certificates made at test time: a client trusting only the test CA gets through
//! (HTTP/2 by ALPN), plain HTTP to the TLS port fails, a swapped certificate is picked up.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{header, Request, StatusCode, Version};
use axum::routing::get;
use axum::Router;
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use nlu_crds::access::TenantRecord;
use nlu_server::listener::ListenerArgs;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::pki_types::CertificateDer;
use tokio::net::{TcpListener, TcpStream};

use crate::connections::*;
use crate::harness::*;

struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        Ca {
            issuer: CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap(),
        }
    }

    /// Writes a leaf certificate for localhost signed by this CA, and its key, atomically.
    fn issue_into(&self, dir: &Path) {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .signed_by(&key, &self.issuer)
            .unwrap();
        for (name, pem) in [("tls.key", key.serialize_pem()), ("tls.crt", cert.pem())] {
            let tmp = dir.join(format!("{name}.tmp"));
            std::fs::write(&tmp, pem).unwrap();
            std::fs::rename(&tmp, dir.join(name)).unwrap();
        }
    }

    /// An HTTPS client (HTTP/2 or 1.1 by ALPN) that trusts this CA only.
    fn client(&self) -> Https {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from(self.issuer.der().to_vec()))
            .unwrap();
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(config)
            .https_only()
            .enable_all_versions()
            .build();
        Https(Client::builder(TokioExecutor::new()).build(connector))
    }
}

struct Https(Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>);

struct Reply {
    status: StatusCode,
    version: Version,
    remaining: Option<String>,
    body: String,
}

impl Https {
    async fn post(&self, url: &str, token: &str) -> Result<Reply, String> {
        self.send(
            Request::post(url).header(header::AUTHORIZATION, format!("Bearer {token}")),
            "{}",
        )
        .await
    }

    async fn send(
        &self,
        request: axum::http::request::Builder,
        body: &'static str,
    ) -> Result<Reply, String> {
        let request = request
            .body(Full::new(Bytes::from_static(body.as_bytes())))
            .unwrap();
        let response = self
            .0
            .request(request)
            .await
            .map_err(|e| format!("{e:?}"))?;
        let (status, version) = (response.status(), response.version());
        let remaining = response
            .headers()
            .get("x-ratelimit-remaining")
            .map(|v| v.to_str().unwrap().to_string());
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok(Reply {
            status,
            version,
            remaining,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }
}

/// Serves `app` over HTTPS on a loopback port, certificate and key from `certs`, with the
/// listener `flags`; returns the port.
async fn serve_https(app: Router, certs: &Path, flags: &[&str]) -> u16 {
    let tls =
        nlu_server::tls::server_config(&certs.join("tls.crt"), &certs.join("tls.key")).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let args = ListenerArgs::parse_from(["listener"].iter().chain(flags));
    tokio::spawn(nlu_server::listener::serve(
        listener,
        app,
        args,
        Some(tls),
        Default::default(),
        std::future::pending(),
    ));
    port
}

#[tokio::test]
async fn https_with_the_test_ca_plain_http_fails_and_certificate_swaps_are_picked_up() {
    let redis = shared_redis();
    let keys = Keys::new();
    let prefix = unique_prefix();
    let tenant = "team-a/secure";
    put_record(
        &redis.url(),
        &prefix,
        tenant,
        &TenantRecord {
            requests_per_day: 100,
            ..open_record()
        },
    )
    .await;
    let certs = tempfile::tempdir().unwrap();
    let (first_ca, second_ca) = (Ca::new("first test CA"), Ca::new("second test CA"));
    first_ca.issue_into(certs.path());

    let app = app(&auth_args(&redis.url(), &keys.jwks_path(), &prefix, &[]));
    let port = serve_https(app, certs.path(), &[]).await;
    let url = format!("https://localhost:{port}/v1/embeddings");
    let token = keys.token(tenant);

    let reply = first_ca.client().post(&url, &token).await.unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.version, Version::HTTP_2, "ALPN negotiates h2");
    assert_eq!(reply.remaining.as_deref(), Some("99"));
    assert_eq!(reply.body, "team-a/secure");

    let plain = reqwest::Client::new()
        .post(format!("http://localhost:{port}/v1/embeddings"))
        .bearer_auth(&token)
        .send()
        .await;
    assert!(
        plain.is_err(),
        "plain HTTP to the TLS port must fail: {plain:?}"
    );
    assert!(
        second_ca.client().post(&url, &token).await.is_err(),
        "a client trusting another CA is refused"
    );

    second_ca.issue_into(certs.path());
    eventually(10, "the new certificate is served", || async {
        second_ca
            .client()
            .post(&url, &token)
            .await
            .is_ok_and(|r| r.status == StatusCode::OK)
    })
    .await;
    assert!(
        first_ca.client().post(&url, &token).await.is_err(),
        "the old certificate is gone"
    );
}

/// The real `serve` (model, batching, routes) with auth and TLS from its command line.
#[tokio::test]
async fn the_real_server_serves_tenants_over_https() {
    let redis = shared_redis();
    let keys = Keys::new();
    let prefix = unique_prefix();
    let tenant = "team-a/real";
    put_record(
        &redis.url(),
        &prefix,
        tenant,
        &TenantRecord {
            requests_per_day: 10,
            ..open_record()
        },
    )
    .await;
    let certs = tempfile::tempdir().unwrap();
    let ca = Ca::new("test CA");
    ca.issue_into(certs.path());
    let path = |p: &Path| p.to_str().unwrap().to_string();
    let args = [
        "--model",
        &gte_tiny(),
        "--task",
        "embedding",
        "--tls-cert",
        &path(&certs.path().join("tls.crt")),
        "--tls-key",
        &path(&certs.path().join("tls.key")),
    ]
    .map(String::from)
    .into_iter()
    .chain(jwt_flags(&redis.url(), &keys, &prefix))
    .collect::<Vec<_>>();
    let base = format!("https://localhost:{}", real_server(&args).await);
    let client = ca.client();
    eventually(120, "the model is loaded and Redis reachable", || async {
        client
            .send(Request::get(format!("{base}/readyz")), "")
            .await
            .is_ok_and(|r| r.status == StatusCode::OK)
    })
    .await;

    let token = keys.token(tenant);
    let ok = client
        .send(
            Request::post(format!("{base}/v1/embeddings"))
                .header(header::AUTHORIZATION, format!("Bearer {token}")),
            r#"{"input": ["hello", "world"]}"#,
        )
        .await
        .unwrap();
    assert_eq!(
        (ok.status, ok.remaining.as_deref()),
        (StatusCode::OK, Some("9")),
        "{}",
        ok.body
    );
    let body: serde_json::Value = serde_json::from_str(&ok.body).unwrap();
    assert_eq!(body["data"].as_array().map(Vec::len), Some(2));

    let anonymous = client
        .send(
            Request::post(format!("{base}/v1/embeddings")),
            r#"{"input": "hello"}"#,
        )
        .await
        .unwrap();
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    let probe = client
        .send(Request::get(format!("{base}/healthz")), "")
        .await
        .unwrap();
    assert_eq!(probe.status, StatusCode::OK, "probes need no token");
    let metrics = client
        .send(Request::get(format!("{base}/metrics")), "")
        .await
        .unwrap()
        .body;
    assert!(
        metrics.contains(r#"status="200",tenant="team-a/real""#),
        "{metrics}"
    );
}

/// The start of a ClientHello that never ends: a handshake record header, and the message type.
const UNFINISHED_CLIENT_HELLO: &[u8] = &[0x16, 0x03, 0x01, 0x02, 0x00, 0x01];

/// A test CA, its certificate served by [`hello`] over HTTPS with the listener `flags`.
async fn hello_over_https(flags: &[&str]) -> (Ca, tempfile::TempDir, u16) {
    let certs = tempfile::tempdir().unwrap();
    let ca = Ca::new("test CA");
    ca.issue_into(certs.path());
    let app = Router::new().route("/", get(|| async { "hello" }));
    let port = serve_https(app, certs.path(), flags).await;
    (ca, certs, port)
}

async fn get_hello(ca: &Ca, port: u16) {
    let reply = ca
        .client()
        .send(Request::get(format!("https://localhost:{port}/")), "")
        .await
        .unwrap();
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (StatusCode::OK, "hello")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_handshake_that_never_starts_is_cut_off_at_the_header_read_timeout() {
    let timeout = Duration::from_millis(300);
    let (ca, _certs, port) = hello_over_https(&["--header-read-timeout", "300ms"]).await;
    let started = Instant::now();
    let mut silent = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    wait_closed(&mut silent).await;
    assert_timed_out(started.elapsed(), timeout, "closed");
    // A client that does shake hands is served.
    get_hello(&ca, port).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_stalled_handshakes_do_not_hold_up_a_tls_client() {
    // A header-read timeout longer than the test: the stalled handshakes stay open throughout.
    let (ca, _certs, port) = hello_over_https(&["--header-read-timeout", "120s"]).await;
    // A new client for every request: a new connection and handshake each time.
    let request = || get_hello(&ca, port);
    let baseline = median_latency(20, request).await;
    let addr = ([127, 0, 0, 1], port).into();
    let stalled = hold_connections(addr, 1000, UNFINISHED_CLIENT_HELLO).await;
    let loaded = median_latency(20, request).await;
    assert_usual_latency(baseline, loaded);
    drop(stalled);
}
