//! Token verification: EdDSA only, key chosen by `kid`, issuer, audience and lifetime checked.
//! Shared so the operator's tests can prove that the tokens it mints pass the server.

use std::collections::HashMap;
use std::time::Duration;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};

use super::claims::{Claims, Credential, QualifiedName, Scope};

/// Seconds of clock skew tolerated on `exp`, `nbf` and `iat`.
pub const DEFAULT_LEEWAY_SECS: u64 = 10;
/// Longest token lifetime (`exp - iat`) servers accept by default (`--max-token-lifetime`), and
/// the longest `Tenant.spec.token.ttl` the CRD allows (its CEL rule says `8760h`).
pub const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(8760 * 3600);
/// Largest token accepted, in bytes: tokens the operator mints are well under 2 KiB; anything
/// far larger is refused before any decoding work.
pub const MAX_TOKEN_BYTES: usize = 8192;

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
    #[error("token is issued in the future")]
    IssuedInFuture,
    #[error("token lifetime exceeds what this server accepts")]
    LifetimeTooLong,
    #[error("token names critical header extensions (crit), which this server does not support")]
    UnsupportedCritical,
    #[error("token is larger than 8192 bytes")]
    TooLarge,
    #[error("token of the identity provider matches no tenant's identity mapping")]
    NoTenant,
    #[error("token of the identity provider matches more than one tenant's identity mapping")]
    AmbiguousTenant,
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
            TokenError::IssuedInFuture => "issued_in_future",
            TokenError::LifetimeTooLong => "lifetime_too_long",
            TokenError::UnsupportedCritical => "unsupported_crit",
            TokenError::TooLarge => "too_large",
            TokenError::NoTenant => "no_tenant",
            TokenError::AmbiguousTenant => "ambiguous_tenant",
        }
    }
}

/// Verifies tokens for one service against a set of Ed25519 public keys.
pub struct Verifier {
    keys: HashMap<String, DecodingKey>,
    validation: Validation,
    max_lifetime: Duration,
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
        Self {
            keys,
            validation,
            max_lifetime: MAX_TOKEN_LIFETIME,
        }
    }

    /// Refuses tokens whose `exp - iat` is longer than `max` (default [`MAX_TOKEN_LIFETIME`]).
    pub fn with_max_lifetime(self, max: Duration) -> Self {
        Self {
            max_lifetime: max,
            ..self
        }
    }

    pub fn key_count(&self) -> usize {
        self.keys.len()
    }

    /// Checks size, header (`alg`, `kid`, no `crit`), signature, issuer, audience, `exp`,
    /// `nbf`, `iat` (not in the future) and lifetime; returns the claims.
    /// Scope and `gen` are checked by the caller, which knows the route and the tenant record.
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        let header = checked_header(token, &[Algorithm::EdDSA])?;
        let key = header
            .kid
            .as_deref()
            .and_then(|kid| self.keys.get(kid))
            .ok_or(TokenError::UnknownKey)?;
        let data = jsonwebtoken::decode::<Claims>(token, key, &self.validation)
            .map_err(|e| token_error(&e))?;
        data.claims.tenant().map_err(|_| TokenError::Malformed)?;
        let claims = &data.claims;
        lifetime_check(
            claims.iat,
            claims.exp,
            now(),
            self.validation.leeway,
            self.max_lifetime,
        )?;
        Ok(data.claims)
    }
}

/// Who a verified token speaks for, whichever issuer signed it: what the server checks and logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub tenant: QualifiedName,
    /// The token's `sub`: the tenant for the operator's tokens, the user or client for an
    /// identity provider's (empty when it has none).
    pub subject: String,
    /// The token's `jti` (empty when it has none).
    pub token_id: String,
    /// Operations the token grants; the tenant record can narrow them further.
    pub scopes: Vec<Scope>,
    pub credential: Credential,
    /// Expiry and start of validity, seconds since the Unix epoch.
    pub exp: i64,
    pub nbf: i64,
}

impl Caller {
    /// Whether the token holds one of `scopes` (each of them would allow the call).
    pub fn grants(&self, scopes: &[Scope]) -> bool {
        self.scopes.iter().any(|s| scopes.contains(s))
    }
}

impl Claims {
    /// The caller an operator token speaks for (its `sub` is the tenant).
    pub fn caller(&self) -> Result<Caller, TokenError> {
        Ok(Caller {
            tenant: self.tenant().map_err(|_| TokenError::Malformed)?,
            subject: self.sub.clone(),
            token_id: self.jti.clone(),
            scopes: self.scope.clone(),
            credential: self.credential(),
            exp: self.exp,
            nbf: self.nbf,
        })
    }
}

/// The header of a token no larger than [`MAX_TOKEN_BYTES`], whose `alg` is one of `allowed`
/// and which names no critical extension.
pub(crate) fn checked_header(
    token: &str,
    allowed: &[Algorithm],
) -> Result<jsonwebtoken::Header, TokenError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(TokenError::TooLarge);
    }
    let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
    if !allowed.contains(&header.alg) {
        return Err(TokenError::WrongAlgorithm);
    }
    // RFC 7515 4.1.11: a receiver must refuse extensions it does not understand; this server
    // understands none.
    if header.crit.is_some() {
        return Err(TokenError::UnsupportedCritical);
    }
    Ok(header)
}

/// What a failed `jsonwebtoken::decode` means to the client.
pub(crate) fn token_error(e: &jsonwebtoken::errors::Error) -> TokenError {
    match e.kind() {
        ErrorKind::InvalidSignature => TokenError::BadSignature,
        ErrorKind::ExpiredSignature => TokenError::Expired,
        ErrorKind::ImmatureSignature => TokenError::NotYetValid,
        ErrorKind::InvalidIssuer => TokenError::WrongIssuer,
        ErrorKind::InvalidAudience => TokenError::WrongAudience,
        ErrorKind::InvalidAlgorithm => TokenError::WrongAlgorithm,
        _ => TokenError::Malformed,
    }
}

pub(crate) fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// `iat` not later than now (with the leeway), and `exp - iat` within `max`.
pub(crate) fn lifetime_check(
    iat: i64,
    exp: i64,
    now: i64,
    leeway: u64,
    max: Duration,
) -> Result<(), TokenError> {
    let leeway = i64::try_from(leeway).unwrap_or(i64::MAX);
    if iat > now.saturating_add(leeway) {
        return Err(TokenError::IssuedInFuture);
    }
    let max = i64::try_from(max.as_secs()).unwrap_or(i64::MAX);
    if exp.saturating_sub(iat) > max {
        return Err(TokenError::LifetimeTooLong);
    }
    Ok(())
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
            tenant_uid: "uid-alice".into(),
        };
        (key, verifier, req)
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
    fn rejects_future_iat_long_lifetimes_crit_headers_and_huge_tokens() {
        let (key, verifier, req) = setup();
        let verifier = verifier.with_max_lifetime(Duration::from_secs(3600));
        let base = req.claims_at(now(), "j".into());
        let mint = |claims: &Claims| key.mint(claims).unwrap();
        // Within the leeway (5 s here) is fine; beyond it is not.
        let slightly_ahead = Claims {
            iat: now() + 3,
            ..base.clone()
        };
        assert!(verifier.verify(&mint(&slightly_ahead)).is_ok());
        let ahead = Claims {
            iat: now() + 60,
            ..base.clone()
        };
        assert_eq!(
            verifier.verify(&mint(&ahead)),
            Err(TokenError::IssuedInFuture)
        );
        let long = Claims {
            exp: base.iat + 3601,
            ..base.clone()
        };
        assert_eq!(
            verifier.verify(&mint(&long)),
            Err(TokenError::LifetimeTooLong)
        );
        let longest = Claims {
            exp: base.iat + 3600,
            ..base.clone()
        };
        assert!(verifier.verify(&mint(&longest)).is_ok());

        let mut header = jsonwebtoken::Header::new(Algorithm::EdDSA);
        header.kid = Some(key.kid().to_string());
        header.crit = Some(vec!["exp".into()]);
        let pem = key.to_pkcs8_pem();
        let encoding = jsonwebtoken::EncodingKey::from_ed_pem(pem.as_bytes()).unwrap();
        let crit = jsonwebtoken::encode(&header, &base, &encoding).unwrap();
        assert_eq!(verifier.verify(&crit), Err(TokenError::UnsupportedCritical));

        let huge = Claims {
            sub: format!("{}{}", base.sub, "x".repeat(MAX_TOKEN_BYTES)),
            ..base.clone()
        };
        assert_eq!(verifier.verify(&mint(&huge)), Err(TokenError::TooLarge));
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
