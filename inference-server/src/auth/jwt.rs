//! Bearer tokens: taken from the `Authorization` header, verified against the JWK Set file
//! (`--jwks`) when the operator issued them, or against the tenants' identity providers
//! (`--identities`) when one of those did; both files are re-read when they change, so keys
//! rotate without a restart.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use axum::http::{header, HeaderMap};
use nlu_crds::access::identity::{unverified_issuer, FederatedVerifier};
use nlu_crds::access::jwks::ed25519_keys;
use nlu_crds::access::verify::DEFAULT_LEEWAY_SECS;
use nlu_crds::access::{Caller, QualifiedName, TokenError, Verifier};

use crate::reloading::Reloading;

/// Why no usable token was presented.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BearerError {
    Missing,
    Malformed,
}

/// The token of an `Authorization: Bearer <token>` header (scheme case-insensitive).
pub fn bearer(headers: &HeaderMap) -> Result<&str, BearerError> {
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or(BearerError::Missing)?;
    let value = value.to_str().map_err(|_| BearerError::Malformed)?;
    let (scheme, token) = value.split_once(' ').ok_or(BearerError::Malformed)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(BearerError::Malformed);
    }
    Ok(token)
}

/// Verifies tokens with the keys currently in the JWK Set file.
pub struct TokenVerifier {
    verifier: Reloading<CachingVerifier>,
}

/// Most verified tokens remembered; the cache starts over when full.
const CACHE_CAPACITY: usize = 10_000;

/// A verifier that remembers the tokens whose signatures it checked: tenants send the same
/// token for its whole lifetime, and the signature check is most of the cost of auth. Lifetime
/// (`exp`, `nbf`) is checked again on every use; a new JWK Set or identities file brings a new,
/// empty cache, so a removed key or mapping stops working at once.
struct CachingVerifier {
    verifier: Verifier,
    /// The operator's issuer: its tokens go to `verifier`, all others to `federated`.
    issuer: String,
    federated: Option<FederatedVerifier>,
    verified: Mutex<HashMap<String, Caller>>,
}

impl CachingVerifier {
    fn check(&self, token: &str) -> Result<Caller, TokenError> {
        let federated = self
            .federated
            .as_ref()
            .filter(|_| unverified_issuer(token).is_some_and(|iss| iss != self.issuer));
        match federated {
            Some(federated) => federated.verify(token),
            None => self.verifier.verify(token)?.caller(),
        }
    }

    fn verify(&self, token: &str) -> Result<Caller, TokenError> {
        let now = chrono::Utc::now().timestamp();
        let leeway = DEFAULT_LEEWAY_SECS as i64;
        let mut verified = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(claims) = verified.get(token) {
            if claims.exp.saturating_add(leeway) >= now && claims.nbf.saturating_sub(leeway) <= now
            {
                return Ok(claims.clone());
            }
            verified.remove(token);
        }
        drop(verified);
        let claims = self.check(token)?;
        let mut verified = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        if verified.len() >= CACHE_CAPACITY {
            verified.clear();
        }
        verified.insert(token.to_string(), claims.clone());
        Ok(claims)
    }
}

impl TokenVerifier {
    /// `identities`: the tenants' identity providers (`--identities`), when given.
    pub fn start(
        jwks: PathBuf,
        identities: Option<PathBuf>,
        issuer: String,
        service: QualifiedName,
        max_lifetime: Duration,
    ) -> anyhow::Result<Self> {
        let files = std::iter::once(jwks.clone())
            .chain(identities.clone())
            .collect();
        let load = move || {
            let bytes = std::fs::read(&jwks)
                .map_err(|e| anyhow::anyhow!("cannot read JWK Set {}: {e}", jwks.display()))?;
            let keys = ed25519_keys(&bytes)?;
            if keys.is_empty() {
                tracing::warn!(file = %jwks.display(), "the JWK Set has no Ed25519 keys: every operator token is refused");
            }
            let verifier = Verifier::new(keys, &issuer, &service, DEFAULT_LEEWAY_SECS)
                .with_max_lifetime(max_lifetime);
            let federated = match &identities {
                // Missing: a ConfigMap of an older operator, without the key yet. Only the
                // operator's tokens work until the file appears (it is watched like the rest).
                Some(path) if !path.exists() => {
                    tracing::warn!(file = %path.display(), "--identities does not exist (yet): no identity provider's token is accepted");
                    None
                }
                Some(path) => {
                    let bytes = std::fs::read(path).map_err(|e| {
                        anyhow::anyhow!("cannot read --identities {}: {e}", path.display())
                    })?;
                    Some(FederatedVerifier::parse(
                        &bytes,
                        DEFAULT_LEEWAY_SECS,
                        max_lifetime,
                    )?)
                }
                None => None,
            };
            Ok(CachingVerifier {
                verifier,
                issuer: issuer.clone(),
                federated,
                verified: Mutex::default(),
            })
        };
        let verifier = Reloading::start("JWK Set", files, load)?;
        let loaded = verifier.get();
        tracing::info!(
            keys = loaded.verifier.key_count(),
            identity_provider_keys = loaded.federated.as_ref().map_or(0, |f| f.key_count()),
            "JWK Set loaded"
        );
        Ok(Self { verifier })
    }

    pub fn verify(&self, token: &str) -> Result<Caller, TokenError> {
        self.verifier.get().verify(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn with(value: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_static(value));
        h
    }

    #[test]
    fn bearer_header_forms() {
        assert_eq!(bearer(&HeaderMap::new()), Err(BearerError::Missing));
        assert_eq!(bearer(&with("Bearer abc.def.ghi")), Ok("abc.def.ghi"));
        assert_eq!(bearer(&with("bearer  abc ")), Ok("abc"));
        for bad in ["Basic dXNlcjpwYXNz", "Bearer", "Bearer ", "abc"] {
            assert_eq!(bearer(&with(bad)), Err(BearerError::Malformed), "{bad}");
        }
    }
}
