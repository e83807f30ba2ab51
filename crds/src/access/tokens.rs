//! Ed25519 signing keys and minting of EdDSA tokens.

use std::time::Duration;

use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey, KeypairBytes};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rand::RngCore;

use super::claims::{Claims, QualifiedName, Scope};
use super::jwks;
use super::AccessError;

/// Issuer used when none is given: the operator's name.
pub const DEFAULT_ISSUER: &str = "nlu-operator";

/// An Ed25519 signing key with its key id (the RFC 7638 thumbprint of its public JWK).
pub struct SigningKey {
    key: ed25519_dalek::SigningKey,
    encoding: EncodingKey,
    kid: String,
}

impl SigningKey {
    pub fn generate() -> Self {
        Self::from_dalek(ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng))
    }

    /// Reads a PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`) Ed25519 key, v1 or v2.
    pub fn from_pkcs8_pem(pem: &str) -> Result<Self, AccessError> {
        ed25519_dalek::SigningKey::from_pkcs8_pem(pem)
            .map(Self::from_dalek)
            .map_err(|e| AccessError::SigningKey(e.to_string()))
    }

    fn from_dalek(key: ed25519_dalek::SigningKey) -> Self {
        let der = pkcs8_v1(&key)
            .to_pkcs8_der()
            .expect("an Ed25519 key always encodes as PKCS#8");
        let kid = jwks::thumbprint(&key.verifying_key());
        Self {
            encoding: EncodingKey::from_ed_der(der.as_bytes()),
            key,
            kid,
        }
    }

    /// PKCS#8 v1 PEM (seed only), the form `openssl genpkey -algorithm ed25519` writes.
    pub fn to_pkcs8_pem(&self) -> String {
        pkcs8_v1(&self.key)
            .to_pkcs8_pem(LineEnding::LF)
            .expect("an Ed25519 key always encodes as PKCS#8")
            .to_string()
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn verifying_key(&self) -> ed25519_dalek::VerifyingKey {
        self.key.verifying_key()
    }

    /// The public half as a JWK (`kid`, `alg: EdDSA`, `use: sig`).
    pub fn public_jwk(&self) -> jsonwebtoken::jwk::Jwk {
        jwks::public_jwk(&self.verifying_key())
    }

    /// Signs claims as a compact EdDSA JWT with this key's `kid` in the header.
    pub fn mint(&self, claims: &Claims) -> Result<String, AccessError> {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        Ok(jsonwebtoken::encode(&header, claims, &self.encoding)?)
    }
}

fn pkcs8_v1(key: &ed25519_dalek::SigningKey) -> KeypairBytes {
    KeypairBytes {
        secret_key: key.to_bytes(),
        public_key: None,
    }
}

/// What a token is for; turned into [`Claims`] at a given time.
#[derive(Debug, Clone)]
pub struct TokenRequest {
    pub issuer: String,
    pub tenant: QualifiedName,
    pub audience: Vec<QualifiedName>,
    /// Operations granted; empty grants all of them (as an empty `Tenant.spec.scopes` does).
    pub scopes: Vec<Scope>,
    pub ttl: Duration,
    pub gen: u64,
    /// The Tenant's `metadata.uid` (the `tid` claim).
    pub tenant_uid: String,
}

impl TokenRequest {
    /// The claims for a token issued at `now` (Unix seconds) with token id `jti`.
    pub fn claims_at(&self, now: i64, jti: String) -> Claims {
        let mut scope = if self.scopes.is_empty() {
            Scope::OPERATIONS.to_vec()
        } else {
            self.scopes.clone()
        };
        scope.sort();
        scope.dedup();
        Claims {
            iss: self.issuer.clone(),
            sub: self.tenant.to_string(),
            aud: self.audience.iter().map(ToString::to_string).collect(),
            exp: now.saturating_add(i64::try_from(self.ttl.as_secs()).unwrap_or(i64::MAX)),
            iat: now,
            nbf: now,
            jti,
            gen: self.gen,
            tid: self.tenant_uid.clone(),
            scope,
        }
    }

    /// Mints a token valid from now for `ttl`, with a random `jti`.
    pub fn mint(&self, key: &SigningKey) -> Result<(String, Claims), AccessError> {
        let claims = self.claims_at(chrono::Utc::now().timestamp(), random_jti());
        Ok((key.mint(&claims)?, claims))
    }
}

/// A random token id (`jti`): 16 bytes from the OS, as hex.
pub fn random_jti() -> String {
    let mut bytes = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

    /// RFC 8037 Appendix A.1: the example Ed25519 private key as PKCS#8 v1 PEM.
    fn rfc8037_key() -> SigningKey {
        let d: [u8; 32] = B64
            .decode("nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A")
            .unwrap()
            .try_into()
            .unwrap();
        SigningKey::from_dalek(ed25519_dalek::SigningKey::from_bytes(&d))
    }

    #[test]
    fn rfc8037_key_has_the_rfc_public_key_and_thumbprint_kid() {
        let key = rfc8037_key();
        let jwk = serde_json::to_value(key.public_jwk()).unwrap();
        assert_eq!(jwk["x"], "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo");
        assert_eq!(jwk["kty"], "OKP");
        assert_eq!(jwk["crv"], "Ed25519");
        // RFC 8037 A.3.
        assert_eq!(key.kid(), "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k");
        assert_eq!(jwk["kid"], key.kid());
    }

    #[test]
    fn signing_matches_rfc8037_a4_signature() {
        // EdDSA is deterministic: the signing input of RFC 8037 A.4 must give its signature.
        let input = "eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc";
        let sig =
            jsonwebtoken::crypto::sign(input.as_bytes(), &rfc8037_key().encoding, Algorithm::EdDSA)
                .unwrap();
        assert_eq!(
            sig,
            "hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg"
        );
    }

    #[test]
    fn pem_round_trips_and_keeps_the_kid() {
        let key = SigningKey::generate();
        let pem = key.to_pkcs8_pem();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        let again = SigningKey::from_pkcs8_pem(&pem).unwrap();
        assert_eq!(again.kid(), key.kid());
        assert!(SigningKey::from_pkcs8_pem("not a key").is_err());
    }

    #[test]
    fn minted_token_has_kid_header_and_requested_claims() {
        let key = SigningKey::generate();
        let req = TokenRequest {
            issuer: DEFAULT_ISSUER.into(),
            tenant: "team-a/alice".parse().unwrap(),
            audience: vec![
                "team-a/gte".parse().unwrap(),
                "team-a/uninlu".parse().unwrap(),
            ],
            scopes: vec![],
            ttl: Duration::from_secs(3600),
            gen: 2,
            tenant_uid: "uid-alice".into(),
        };
        let (token, claims) = req.mint(&key).unwrap();
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(header.alg, Algorithm::EdDSA);
        assert_eq!(header.kid.as_deref(), Some(key.kid()));
        let payload: serde_json::Value =
            serde_json::from_slice(&B64.decode(token.split('.').nth(1).unwrap()).unwrap()).unwrap();
        assert_eq!(payload, serde_json::to_value(&claims).unwrap());
        assert_eq!(claims.sub, "team-a/alice");
        assert_eq!(claims.aud, vec!["team-a/gte", "team-a/uninlu"]);
        assert_eq!(
            claims.scope,
            vec![Scope::Predict, Scope::Embed, Scope::Rerank],
            "empty scopes grant all"
        );
        assert_eq!(claims.exp - claims.iat, 3600);
        assert_eq!(claims.nbf, claims.iat);
        assert_eq!(claims.gen, 2);
        assert_eq!(claims.jti.len(), 32);
    }
}
