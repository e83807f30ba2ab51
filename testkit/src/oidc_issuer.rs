//! A loopback OIDC issuer: what an identity provider (Keycloak, Dex, Azure AD) shows the
//! operator, served over real HTTP on `127.0.0.1`.
//!
//! It does: `GET /.well-known/openid-configuration` (`issuer`, `jwks_uri`), `GET /jwks` with
//! its current Ed25519 public key and `Cache-Control: max-age=1`, minting EdDSA tokens with that
//! key ([`OidcIssuer::mint`]), and key rotation ([`OidcIssuer::rotate`]: a new key, the old one
//! gone from the JWK Set). It does not: log users in, serve tokens over HTTP (tests mint them),
//! RSA or EC keys, TLS.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use base64::Engine;
use ed25519_dalek::pkcs8::EncodePrivateKey;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

/// A signing key of the issuer.
struct Key {
    kid: String,
    signing: ed25519_dalek::SigningKey,
}

impl Key {
    fn generate() -> Self {
        Self {
            kid: format!("k{:016x}", rand::random::<u64>()),
            signing: ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng),
        }
    }

    fn jwk(&self) -> Value {
        let x = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(self.signing.verifying_key().as_bytes());
        json!({"kty": "OKP", "crv": "Ed25519", "x": x, "kid": self.kid, "alg": "EdDSA", "use": "sig"})
    }
}

struct Shared {
    issuer: String,
    key: Mutex<Key>,
    jwks_reads: AtomicUsize,
}

/// A running issuer; it stops when dropped.
pub struct OidcIssuer {
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl OidcIssuer {
    /// Starts on a free loopback port.
    pub async fn start() -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr: SocketAddr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            issuer: format!("http://127.0.0.1:{}", addr.port()),
            key: Mutex::new(Key::generate()),
            jwks_reads: AtomicUsize::new(0),
        });
        let app = Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/jwks", get(jwks))
            .with_state(shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { shared, task })
    }

    /// The issuer URL (`iss` of its tokens).
    pub fn issuer(&self) -> &str {
        &self.shared.issuer
    }

    /// How many times its JWK Set was read.
    pub fn jwks_reads(&self) -> usize {
        self.shared.jwks_reads.load(Ordering::SeqCst)
    }

    /// Replaces the signing key: tokens of the old one no longer verify once readers refresh.
    pub fn rotate(&self) {
        *self.shared.key.lock().unwrap() = Key::generate();
    }

    /// A token signed with the current key: `claims` plus `iss`, `iat` (now) and `exp` (in five
    /// minutes) unless `claims` sets them.
    pub fn mint(&self, claims: Value) -> String {
        let now = chrono::Utc::now().timestamp();
        let mut full = json!({"iss": self.shared.issuer, "iat": now, "exp": now + 300});
        if let (Some(full), Value::Object(extra)) = (full.as_object_mut(), claims) {
            full.extend(extra);
        }
        let key = self.shared.key.lock().unwrap();
        let der = key.signing.to_pkcs8_der().expect("an Ed25519 key encodes");
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(key.kid.clone());
        jsonwebtoken::encode(&header, &full, &EncodingKey::from_ed_der(der.as_bytes()))
            .expect("a token encodes")
    }
}

impl Drop for OidcIssuer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn discovery(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    let doc = json!({
        "issuer": shared.issuer,
        "jwks_uri": format!("{}/jwks", shared.issuer),
        "id_token_signing_alg_values_supported": ["EdDSA"],
    });
    (
        [(header::CONTENT_TYPE, "application/json")],
        doc.to_string(),
    )
}

async fn jwks(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    shared.jwks_reads.fetch_add(1, Ordering::SeqCst);
    let jwk = shared.key.lock().unwrap().jwk();
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "public, max-age=1"),
        ],
        json!({"keys": [jwk]}).to_string(),
    )
}
