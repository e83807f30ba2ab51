//! Ingress as one loopback HTTPS front (ingress-nginx's part) and the certificates behind it
//! (cert-manager's part).
//!
//! - Front: one TLS listener on 127.0.0.1; the certificate is chosen by SNI from the Secrets
//!   named in the Ingresses' `tls[]`; each HTTP/1.1 request is routed by host and path
//!   (`Prefix`, `Exact`; `ImplementationSpecific` as a prefix) to a ready pod behind the backend
//!   Service, and passed on as it came (path not rewritten, as ingress-nginx without a
//!   rewrite annotation). No route: 404; no ready pod: 503. Ingress classes are not checked.
//! - Certificates: an Ingress with `cert-manager.io/cluster-issuer` or `cert-manager.io/issuer`
//!   gets each `tls[]` Secret (type `kubernetes.io/tls`, with `ca.crt`) issued for its hosts by
//!   the cluster's test CA, once; a Secret that exists is left alone.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{ListParams, PostParams};
use kube::{Api, Client, ResourceExt};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use super::kubelet::PodTable;
use super::pod_plan::secret_data;
use super::services::{endpoints, ServiceTable};

/// One path rule of one Ingress.
#[derive(Clone, Debug, PartialEq)]
pub struct Route {
    pub namespace: String,
    pub host: String,
    pub path: String,
    pub exact: bool,
    pub service: String,
    /// Service port by number (a named port is resolved through the Service's ports).
    pub port: Value,
}

/// The routing table and certificates, rebuilt from the API on every pass.
#[derive(Default)]
struct Table {
    routes: Vec<Route>,
    certs: BTreeMap<String, Arc<CertifiedKey>>,
}

/// The route for `host` + `path`: exact matches first, then the longest prefix (on path
/// segments).
pub fn route<'a>(routes: &'a [Route], host: &str, path: &str) -> Option<&'a Route> {
    let host = host.split(':').next().unwrap_or(host);
    let on_host = routes
        .iter()
        .filter(|r| r.host.is_empty() || r.host == host);
    let prefix_matches = |r: &&Route| {
        let p = r.path.trim_end_matches('/');
        path == p || path.starts_with(&format!("{p}/")) || p.is_empty()
    };
    on_host
        .clone()
        .find(|r| r.exact && r.path == path)
        .or_else(|| {
            on_host
                .filter(|r| !r.exact)
                .filter(prefix_matches)
                .max_by_key(|r| r.path.len())
        })
}

fn routes_of(ingress: &Ingress) -> Vec<Route> {
    let ns = ingress.namespace().unwrap_or_default();
    let spec = serde_json::to_value(&ingress.spec).unwrap_or_default();
    let mut out = Vec::new();
    for rule in spec["rules"].as_array().into_iter().flatten() {
        for p in rule["http"]["paths"].as_array().into_iter().flatten() {
            let backend = &p["backend"]["service"];
            out.push(Route {
                namespace: ns.clone(),
                host: rule["host"].as_str().unwrap_or_default().to_owned(),
                path: p["path"].as_str().unwrap_or("/").to_owned(),
                exact: p["pathType"] == "Exact",
                service: backend["name"].as_str().unwrap_or_default().to_owned(),
                port: if backend["port"]["number"].is_null() {
                    backend["port"]["name"].clone()
                } else {
                    backend["port"]["number"].clone()
                },
            });
        }
    }
    out
}

struct Resolver(Arc<RwLock<Table>>);

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Resolver")
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let name = hello.server_name()?;
        self.0.read().unwrap().certs.get(name).cloned()
    }
}

/// The test CA that signs every Ingress certificate.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl TestCa {
    pub fn new() -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "process cluster test CA");
        let key = KeyPair::generate().expect("CA key");
        TestCa {
            issuer: CertifiedIssuer::self_signed(params, key).expect("CA certificate"),
        }
    }

    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// (certificate PEM, key PEM) for `hosts`.
    fn issue(&self, hosts: Vec<String>) -> (String, String) {
        let key = KeyPair::generate().expect("leaf key");
        let cert = CertificateParams::new(hosts)
            .expect("leaf params")
            .signed_by(&key, &self.issuer)
            .expect("leaf certificate");
        (cert.pem(), key.serialize_pem())
    }
}

/// The front and the issuer, kept in step with the API.
pub struct IngressFront {
    client: Client,
    ca: Arc<TestCa>,
    table: Arc<RwLock<Table>>,
}

impl IngressFront {
    /// Binds the HTTPS listener; returns the front and its address.
    pub async fn start(
        client: Client,
        ca: Arc<TestCa>,
        services: ServiceTable,
        pods: PodTable,
    ) -> (IngressFront, SocketAddr) {
        let table: Arc<RwLock<Table>> = Arc::default();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(Resolver(table.clone())));
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("ingress port");
        let address = listener.local_addr().expect("bound address");
        let routes = table.clone();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (acceptor, routes, services, pods) = (
                    acceptor.clone(),
                    routes.clone(),
                    services.clone(),
                    pods.clone(),
                );
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(move |request| {
                        forward(request, routes.clone(), services.clone(), pods.clone())
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        (IngressFront { client, ca, table }, address)
    }

    pub async fn run(self) {
        let period = Duration::from_millis(200);
        super::every("ingress", period, async || self.pass().await).await
    }

    async fn pass(&self) -> Result<(), kube::Error> {
        let ingresses = Api::<Ingress>::all(self.client.clone())
            .list(&ListParams::default())
            .await?
            .items;
        let mut routes = Vec::new();
        let mut certs = BTreeMap::new();
        for ingress in &ingresses {
            routes.extend(routes_of(ingress));
            let ns = ingress.namespace().unwrap_or_default();
            let issued = ingress
                .annotations()
                .contains_key("cert-manager.io/cluster-issuer")
                || ingress.annotations().contains_key("cert-manager.io/issuer");
            let spec = serde_json::to_value(&ingress.spec).unwrap_or_default();
            for tls in spec["tls"].as_array().into_iter().flatten() {
                let Some(secret_name) = tls["secretName"].as_str() else {
                    continue;
                };
                let hosts: Vec<String> = tls["hosts"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|h| h.as_str().map(str::to_owned))
                    .collect();
                let api: Api<Secret> = Api::namespaced(self.client.clone(), &ns);
                let mut secret = api.get_opt(secret_name).await?;
                if secret.is_none() && issued {
                    secret = Some(self.issue(&api, &ns, secret_name, hosts.clone()).await?);
                }
                let Some(key) = secret.as_ref().and_then(certified_key) else {
                    continue;
                };
                for host in hosts {
                    certs.insert(host, key.clone());
                }
            }
        }
        *self.table.write().unwrap() = Table { routes, certs };
        Ok(())
    }

    async fn issue(
        &self,
        api: &Api<Secret>,
        ns: &str,
        name: &str,
        hosts: Vec<String>,
    ) -> Result<Secret, kube::Error> {
        let (cert, key) = self.ca.issue(hosts);
        let secret: Secret = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
            "metadata": {"name": name, "namespace": ns,
                         "annotations": {"cert-manager.io/issuer-name": "process-cluster-test-ca"}},
            "stringData": {"tls.crt": cert, "tls.key": key, "ca.crt": self.ca.pem()},
        }))
        .expect("a TLS Secret");
        api.create(&PostParams::default(), &secret).await
    }
}

fn certified_key(secret: &Secret) -> Option<Arc<CertifiedKey>> {
    let data = secret_data(&serde_json::to_value(secret).ok()?);
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(data.get("tls.crt")?)
        .collect::<Result<_, _>>()
        .ok()?;
    let key = PrivateKeyDer::from_pem_slice(data.get("tls.key")?).ok()?;
    let provider = rustls::crypto::ring::default_provider();
    CertifiedKey::from_der(certs, key, &provider)
        .ok()
        .map(Arc::new)
}

type Answer = Response<Full<Bytes>>;

fn plain(status: StatusCode, text: &str) -> Answer {
    let mut answer = Response::new(Full::new(Bytes::from(text.to_owned())));
    *answer.status_mut() = status;
    answer
}

async fn forward(
    request: Request<Incoming>,
    routes: Arc<RwLock<Table>>,
    services: ServiceTable,
    pods: PodTable,
) -> Result<Answer, std::convert::Infallible> {
    let host = request
        .headers()
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let path = request.uri().path().to_owned();
    let Some(route) = route(&routes.read().unwrap().routes, &host, &path).cloned() else {
        return Ok(plain(StatusCode::NOT_FOUND, "no ingress rule"));
    };
    let backends = backends(&route, &services, &pods);
    if backends.is_empty() {
        return Ok(plain(StatusCode::SERVICE_UNAVAILABLE, "no ready endpoint"));
    }
    // Round robin; a backend that refuses the connection is skipped for the next one, as
    // ingress-nginx's `proxy_next_upstream error` does (a pod may stop between two passes).
    let first = next_index();
    for i in 0..backends.len() {
        let backend = backends[(first + i) % backends.len()];
        if let Ok(stream) = tokio::net::TcpStream::connect(backend).await {
            return Ok(pass_on(request, stream)
                .await
                .unwrap_or_else(|e| plain(StatusCode::BAD_GATEWAY, &format!("{backend}: {e}"))));
        }
    }
    Ok(plain(
        StatusCode::BAD_GATEWAY,
        "no endpoint accepted the connection",
    ))
}

fn backends(route: &Route, services: &ServiceTable, pods: &PodTable) -> Vec<SocketAddr> {
    let table = services.lock().unwrap();
    let Some(entry) = table.get(&(route.namespace.clone(), route.service.clone())) else {
        return Vec::new();
    };
    let port = match &route.port {
        Value::String(name) => entry
            .ports
            .iter()
            .find(|(_, (n, _))| n == name)
            .map(|(p, _)| *p),
        other => other.as_u64().and_then(|n| u16::try_from(n).ok()),
    };
    port.map(|p| endpoints(entry, p, &pods.lock().unwrap(), &route.namespace))
        .unwrap_or_default()
}

/// A counter for round robin over the backends of all routes.
fn next_index() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

async fn pass_on(
    request: Request<Incoming>,
    stream: tokio::net::TcpStream,
) -> Result<Answer, String> {
    let (mut parts, body) = request.into_parts();
    let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    parts.uri = path.parse().map_err(|e| format!("{e}"))?;
    parts
        .headers
        .insert("x-forwarded-proto", http::HeaderValue::from_static("https"));
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    let response = sender
        .send_request(Request::from_parts(parts, Full::new(body)))
        .await
        .map_err(|e| e.to_string())?;
    let (parts, body) = response.into_parts();
    let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok(Response::from_parts(parts, Full::new(body)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(host: &str, path: &str, exact: bool, service: &str) -> Route {
        Route {
            namespace: "ns".into(),
            host: host.into(),
            path: path.into(),
            exact,
            service: service.into(),
            port: json!(80),
        }
    }

    #[test]
    fn routing_by_host_then_exact_then_longest_prefix() {
        let routes = [
            r("a.test", "/", false, "root"),
            r("a.test", "/api", false, "api"),
            r("a.test", "/api/predict", true, "exact"),
            r("b.test", "/", false, "other"),
        ];
        let service =
            |host: &str, path: &str| route(&routes, host, path).map(|r| r.service.as_str());
        assert_eq!(service("a.test", "/api/predict"), Some("exact"));
        assert_eq!(service("a.test:443", "/api/x"), Some("api"));
        assert_eq!(service("a.test", "/apix"), Some("root"));
        assert_eq!(service("b.test", "/api"), Some("other"));
        assert_eq!(service("c.test", "/"), None);
    }
}
