//! Token verification: EdDSA only, key chosen by `kid`, issuer, audience and lifetime checked.
//! Shared so the operator's tests can prove that the tokens it mints pass the server.

use std::collections::HashMap;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};

use super::claims::{Claims, QualifiedName};

/// Seconds of clock skew tolerated on `exp` and `nbf`.
pub const DEFAULT_LEEWAY_SECS: u64 = 10;

/// Why a presented token is not accepted. All of these are answered with 401.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token is malformed")]
    Malformed,
    #[error("token algorithm is not EdDSA")]
    WrongAlgorithm,
    #[error("token key id is missing or unknown")]
    UnknownKey,
    #[error("token signature is invalid")]
    BadSignature,
    #[error("token has expired")]
    Expired,
    #[error("token is not valid yet")]
    NotYetValid,
    #[error("token issuer is not trusted")]
    WrongIssuer,
    #[error("token is not meant for this service")]
    WrongAudience,
    #[error("token was revoked")]
    Revoked,
}

impl TokenError {
    /// Stable machine-readable name (metrics label, error code detail).
    pub fn reason(&self) -> &'static str {
        match self {
            TokenError::Malformed => "malformed",
            TokenError::WrongAlgorithm => "wrong_algorithm",
            TokenError::UnknownKey => "unknown_key",
            TokenError::BadSignature => "bad_signature",
            TokenError::Expired => "expired",
            TokenError::NotYetValid => "not_yet_valid",
            TokenError::WrongIssuer => "wrong_issuer",
            TokenError::WrongAudience => "wrong_audience",
            TokenError::Revoked => "revoked",
        }
    }
}

/// Verifies tokens for one service against a set of Ed25519 public keys.
pub struct Verifier {
    keys: HashMap<String, DecodingKey>,
    validation: Validation,
}

impl Verifier {
    pub fn new(
        keys: HashMap<String, DecodingKey>,
        issuer: &str,
        service: &QualifiedName,
        leeway_secs: u64,
    ) -> Self {
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.algorithms = vec![Algorithm::EdDSA];
        validation.leeway = leeway_secs;
        validation.validate_nbf = true;
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[service.to_string()]);
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        Self { keys, validation }
    }

    pub fn key_count(&self) -> usize {
        self.keys.len()
    }

    /// Checks signature, `kid`, issuer, audience, `exp` and `nbf`; returns the claims.
    /// Scope and `gen` are checked by the caller, which knows the route and the tenant record.
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
        if header.alg != Algorithm::EdDSA {
            return Err(TokenError::WrongAlgorithm);
        }
        let key = header
            .kid
            .as_deref()
            .and_then(|kid| self.keys.get(kid))
            .ok_or(TokenError::UnknownKey)?;
        let data =
            jsonwebtoken::decode::<Claims>(token, key, &self.validation).map_err(|e| {
                match e.kind() {
                    ErrorKind::InvalidSignature => TokenError::BadSignature,
                    ErrorKind::ExpiredSignature => TokenError::Expired,
                    ErrorKind::ImmatureSignature => TokenError::NotYetValid,
                    ErrorKind::InvalidIssuer => TokenError::WrongIssuer,
                    ErrorKind::InvalidAudience => TokenError::WrongAudience,
                    ErrorKind::InvalidAlgorithm => TokenError::WrongAlgorithm,
                    _ => TokenError::Malformed,
                }
            })?;
        data.claims.tenant().map_err(|_| TokenError::Malformed)?;
        Ok(data.claims)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::access::jwks::{ed25519_keys, jwk_set};
    use crate::access::tokens::{SigningKey, TokenRequest};
    use crate::access::Scope;

    fn setup() -> (SigningKey, Verifier, TokenRequest) {
        let key = SigningKey::generate();
        let set = serde_json::to_vec(&jwk_set([&key.verifying_key()])).unwrap();
        let service: QualifiedName = "ns/svc".parse().unwrap();
        let verifier = Verifier::new(ed25519_keys(&set).unwrap(), "iss", &service, 5);
        let req = TokenRequest {
            issuer: "iss".into(),
            tenant: "ns/alice".parse().unwrap(),
            audience: vec!["ns/other".parse().unwrap(), service],
            scopes: vec![Scope::Embed],
            ttl: Duration::from_secs(60),
            gen: 1,
        };
        (key, verifier, req)
    }

    fn now() -> i64 {
        chrono::Utc::now().timestamp()
    }

    #[test]
    fn accepts_a_minted_token_for_one_of_its_audiences() {
        let (key, verifier, req) = setup();
        let (token, claims) = req.mint(&key).unwrap();
        assert_eq!(verifier.verify(&token), Ok(claims));
    }

    #[test]
    fn rejects_lifetime_issuer_audience_and_key_problems() {
        let (key, verifier, req) = setup();
        let mint = |claims: &Claims| key.mint(claims).unwrap();
        let base = req.claims_at(now(), "j".into());
        let cases = [
            (
                Claims {
                    exp: now() - 60,
                    ..base.clone()
                },
                TokenError::Expired,
            ),
            (
                Claims {
                    nbf: now() + 60,
                    ..base.clone()
                },
                TokenError::NotYetValid,
            ),
            (
                Claims {
                    iss: "evil".into(),
                    ..base.clone()
                },
                TokenError::WrongIssuer,
            ),
            (
                Claims {
                    aud: vec!["ns/other".into()],
                    ..base.clone()
                },
                TokenError::WrongAudience,
            ),
        ];
        for (claims, want) in cases {
            assert_eq!(
                verifier.verify(&mint(&claims)),
                Err(want.clone()),
                "{want:?}"
            );
        }
        let stranger = SigningKey::generate();
        assert_eq!(
            verifier.verify(&stranger.mint(&base).unwrap()),
            Err(TokenError::UnknownKey)
        );
        // Right kid, wrong signer: a forged token.
        let forged = {
            let good = mint(&base);
            let other = stranger.mint(&base).unwrap();
            let (head, _) = good.rsplit_once('.').unwrap();
            format!("{head}.{}", other.rsplit_once('.').unwrap().1)
        };
        assert_eq!(verifier.verify(&forged), Err(TokenError::BadSignature));
        assert_eq!(verifier.verify("garbage"), Err(TokenError::Malformed));
        let good = mint(&base);
        assert!(verifier.verify(&good[..good.len() - 5]).is_err());
        assert!(verifier.verify(&good[..good.len() / 2]).is_err());
    }

    #[test]
    fn rejects_non_eddsa_algorithms_even_with_the_public_key_as_hmac_secret() {
        let (key, verifier, req) = setup();
        let claims = req.claims_at(now(), "j".into());
        let mut header = jsonwebtoken::Header::new(Algorithm::HS256);
        header.kid = Some(key.kid().to_string());
        let secret = jsonwebtoken::EncodingKey::from_secret(key.verifying_key().as_bytes());
        let hs = jsonwebtoken::encode(&header, &claims, &secret).unwrap();
        assert_eq!(verifier.verify(&hs), Err(TokenError::WrongAlgorithm));

        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let none_header = b64.encode(format!(r#"{{"alg":"none","kid":"{}"}}"#, key.kid()));
        let payload = b64.encode(serde_json::to_vec(&claims).unwrap());
        assert!(verifier
            .verify(&format!("{none_header}.{payload}."))
            .is_err());
    }
}
