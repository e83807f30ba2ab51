//! Tokens of a tenant's own identity provider (an OIDC issuer), accepted beside the operator's.
//!
//! The operator fetches each issuer's JWK Set and publishes [`Identities`] beside the operator's
//! JWK Set (`identities.json` in the same ConfigMap): per issuer, the keys servers accept and the
//! Tenants whose `spec.identity` names it. A server accepts such a token only when it is signed
//! by one of those keys with an asymmetric algorithm (RS256, ES256, EdDSA), carries the issuer,
//! is within its lifetime, and its audience and claims select exactly one Tenant
//! ([`FederatedVerifier`]). The request then goes through the same record check as an operator
//! token, where the record's identity fingerprint must match the mapping's ([`fingerprint`]).

use std::collections::HashMap;
use std::time::Duration;

use base64::Engine;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::claims::{Credential, QualifiedName, Scope};
use super::verify::{checked_header, lifetime_check, now, token_error, Caller, TokenError};
use super::AccessError;

/// Smallest RSA modulus accepted, in bits (NIST SP 800-131A).
const MIN_RSA_BITS: usize = 2048;

/// One condition on a claim of the token; a Tenant's conditions must all hold.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "crd", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct ClaimMatch {
    /// Name of a top-level claim of the token, e.g. `azp`, `client_id` or `groups`.
    #[cfg_attr(feature = "crd", schemars(length(min = 1, max = 128)))]
    pub claim: String,
    /// The claim is this string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "crd", schemars(length(max = 512)))]
    pub equals: Option<String>,
    /// The claim is a list of strings holding this one (a group claim), or this string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "crd", schemars(length(max = 512)))]
    pub contains: Option<String>,
}

impl ClaimMatch {
    /// Whether the token's claims satisfy this condition; one naming both or neither of
    /// `equals` and `contains` (the CRD refuses it) never holds.
    pub fn holds(&self, claims: &Map<String, Value>) -> bool {
        let Some(value) = claims.get(&self.claim) else {
            return false;
        };
        match (&self.equals, &self.contains) {
            (Some(want), None) => value.as_str() == Some(want),
            (None, Some(want)) => match value {
                Value::Array(items) => items.iter().any(|v| v.as_str() == Some(want.as_str())),
                Value::String(s) => s == want,
                _ => false,
            },
            _ => false,
        }
    }
}

/// The identity mapping of a Tenant: tokens of `issuer` carrying `audience` whose claims satisfy
/// every one of `claims`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Mapping {
    /// The Tenant, `namespace/name`.
    pub tenant: String,
    /// The Tenant's `metadata.uid` (the record must hold the same).
    pub tid: String,
    pub audience: String,
    pub claims: Vec<ClaimMatch>,
    /// [`fingerprint`] of the mapping, which the tenant record holds while it is current.
    pub fingerprint: String,
}

/// One trusted issuer: its signing keys (as fetched from its `jwks_uri`, only the usable
/// ones) and the Tenants it may speak for.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TrustedIssuer {
    /// The issuer URL, as tokens carry it in `iss`.
    pub issuer: String,
    pub keys: Vec<Jwk>,
    pub tenants: Vec<Mapping>,
}

/// The document `identities.json`: every issuer a Tenant of the namespace trusts, by issuer URL.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct Identities {
    pub issuers: Vec<TrustedIssuer>,
}

/// The fingerprint of an identity mapping (SHA-256 of its issuer, audience and conditions, hex):
/// written into the tenant record and beside the mapping, so a token matched against an old
/// copy of the mapping is refused once the record has a new one.
pub fn fingerprint(issuer: &str, audience: &str, claims: &[ClaimMatch]) -> String {
    let canonical = serde_json::json!([issuer, audience, claims]).to_string();
    Sha256::digest(canonical.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The algorithm a key of an identity provider is used with, `None` for a key that is never
/// accepted: no `kid`, not for signatures, a symmetric or unknown type, a curve other than P-256
/// and Ed25519, an RSA modulus under 2048 bits, or an `alg` that contradicts the key type.
pub fn signing_algorithm(jwk: &Jwk) -> Option<Algorithm> {
    jwk.common.key_id.as_ref()?;
    if jwk
        .common
        .public_key_use
        .as_ref()
        .is_some_and(|u| *u != PublicKeyUse::Signature)
    {
        return None;
    }
    let (algorithm, named) = match &jwk.algorithm {
        AlgorithmParameters::RSA(p) => {
            let modulus = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(&p.n)
                .ok()?;
            let bits = modulus.iter().skip_while(|b| **b == 0).count() * 8;
            (bits >= MIN_RSA_BITS).then_some((Algorithm::RS256, KeyAlgorithm::RS256))?
        }
        AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => {
            (Algorithm::ES256, KeyAlgorithm::ES256)
        }
        AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
            (Algorithm::EdDSA, KeyAlgorithm::EdDSA)
        }
        _ => return None,
    };
    match jwk.common.key_algorithm {
        None => Some(algorithm),
        Some(alg) if alg == named => Some(algorithm),
        Some(_) => None,
    }
}

/// An issuer as the verifier holds it.
struct Issuer {
    keys: HashMap<String, (Algorithm, DecodingKey)>,
    tenants: Vec<(QualifiedName, Mapping)>,
}

/// Verifies tokens of the identity providers in an [`Identities`] document.
pub struct FederatedVerifier {
    issuers: HashMap<String, Issuer>,
    leeway: u64,
    max_lifetime: Duration,
}

/// The claims read before the signature is checked: only to pick the issuer's keys.
#[derive(Deserialize)]
struct Unverified {
    iss: Option<String>,
}

/// The `iss` of a token, read before anything is checked: only to choose which keys verify
/// it (`None`: not a JWT, or no `iss`).
pub fn unverified_issuer(token: &str) -> Option<String> {
    jsonwebtoken::dangerous::insecure_decode_claims::<Unverified>(token)
        .ok()?
        .iss
}

impl FederatedVerifier {
    /// Reads an `identities.json` document. Keys servers never accept are left out (the
    /// operator already leaves them out; this keeps a hand-made file as strict); a mapping with
    /// an invalid tenant name makes the whole document invalid.
    pub fn parse(json: &[u8], leeway: u64, max_lifetime: Duration) -> Result<Self, AccessError> {
        let doc: Identities =
            serde_json::from_slice(json).map_err(|e| AccessError::Jwks(e.to_string()))?;
        let mut issuers = HashMap::new();
        for trusted in doc.issuers {
            let keys = trusted
                .keys
                .iter()
                .filter_map(|jwk| {
                    let algorithm = signing_algorithm(jwk)?;
                    let key = DecodingKey::from_jwk(jwk).ok()?;
                    Some((jwk.common.key_id.clone()?, (algorithm, key)))
                })
                .collect();
            let tenants = trusted
                .tenants
                .into_iter()
                .map(|m| Ok((m.tenant.parse::<QualifiedName>()?, m)))
                .collect::<Result<_, AccessError>>()?;
            issuers.insert(trusted.issuer, Issuer { keys, tenants });
        }
        Ok(Self {
            issuers,
            leeway,
            max_lifetime,
        })
    }

    /// Keys over all issuers.
    pub fn key_count(&self) -> usize {
        self.issuers.values().map(|i| i.keys.len()).sum()
    }

    /// Checks size, header (`alg` asymmetric and the key's, `kid` of the issuer, no `crit`),
    /// signature, issuer, audience, `exp`, `nbf`, `iat` and lifetime, then finds the one Tenant
    /// whose mapping the token satisfies.
    pub fn verify(&self, token: &str) -> Result<Caller, TokenError> {
        let asymmetric = [Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA];
        let header = checked_header(token, &asymmetric)?;
        let iss = unverified_issuer(token).ok_or(TokenError::WrongIssuer)?;
        let issuer = self.issuers.get(&iss).ok_or(TokenError::WrongIssuer)?;
        let (algorithm, key) = header
            .kid
            .as_deref()
            .and_then(|kid| issuer.keys.get(kid))
            .ok_or(TokenError::UnknownKey)?;
        if *algorithm != header.alg {
            return Err(TokenError::WrongAlgorithm);
        }
        let mut validation = Validation::new(*algorithm);
        validation.leeway = self.leeway;
        validation.validate_nbf = true;
        validation.set_issuer(&[&iss]);
        let audiences: Vec<&str> = issuer
            .tenants
            .iter()
            .map(|(_, m)| m.audience.as_str())
            .collect();
        validation.set_audience(&audiences);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        let claims = jsonwebtoken::decode::<Map<String, Value>>(token, key, &validation)
            .map_err(|e| token_error(&e))?
            .claims;
        let number = |name: &str| claims.get(name).and_then(Value::as_i64);
        let exp = number("exp").ok_or(TokenError::Malformed)?;
        let now = now();
        // A token without `iat` is judged by the time it has left.
        let iat = number("iat").unwrap_or(now);
        lifetime_check(iat, exp, now, self.leeway, self.max_lifetime)?;
        let carried: Vec<&str> = match claims.get("aud") {
            Some(Value::String(one)) => vec![one.as_str()],
            Some(Value::Array(many)) => many.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        let mut matching = issuer.tenants.iter().filter(|(_, m)| {
            carried.contains(&m.audience.as_str()) && m.claims.iter().all(|c| c.holds(&claims))
        });
        let (tenant, mapping) = matching.next().ok_or(TokenError::NoTenant)?;
        if matching.next().is_some() {
            return Err(TokenError::AmbiguousTenant);
        }
        let text = |name: &str| {
            claims
                .get(name)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        Ok(Caller {
            tenant: tenant.clone(),
            subject: text("sub"),
            token_id: text("jti"),
            // The record's scopes narrow these, as they narrow an operator token's.
            scopes: Scope::OPERATIONS.to_vec(),
            credential: Credential {
                tid: mapping.tid.clone(),
                gen: 0,
                identity: Some(mapping.fingerprint.clone()),
            },
            exp,
            nbf: number("nbf").unwrap_or(i64::MIN),
        })
    }
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;

    use super::*;
    use crate::access::jwks::public_jwk;
    use crate::access::tokens::SigningKey;

    const ISSUER: &str = "https://idp.example";

    fn claim(name: &str, equals: Option<&str>, contains: Option<&str>) -> ClaimMatch {
        ClaimMatch {
            claim: name.into(),
            equals: equals.map(Into::into),
            contains: contains.map(Into::into),
        }
    }

    fn mapping(tenant: &str, audience: &str, claims: Vec<ClaimMatch>) -> Mapping {
        Mapping {
            tenant: tenant.into(),
            tid: format!("uid-{tenant}"),
            audience: audience.into(),
            fingerprint: fingerprint(ISSUER, audience, &claims),
            claims,
        }
    }

    /// A verifier trusting `key` for `tenants` under [`ISSUER`], and a minter of its tokens.
    fn setup(tenants: Vec<Mapping>) -> (FederatedVerifier, impl Fn(Value) -> String) {
        let key = SigningKey::generate();
        let doc = Identities {
            issuers: vec![TrustedIssuer {
                issuer: ISSUER.into(),
                keys: vec![public_jwk(&key.verifying_key())],
                tenants,
            }],
        };
        let json = serde_json::to_vec(&doc).unwrap();
        let verifier = FederatedVerifier::parse(&json, 5, Duration::from_secs(3600)).unwrap();
        let encoding = EncodingKey::from_ed_pem(key.to_pkcs8_pem().as_bytes()).unwrap();
        let kid = key.kid().to_string();
        let mint = move |extra: Value| {
            let now = now();
            let mut claims = json!({"iss": ISSUER, "aud": "api", "iat": now, "exp": now + 300});
            claims
                .as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            let mut header = Header::new(Algorithm::EdDSA);
            header.kid = Some(kid.clone());
            jsonwebtoken::encode(&header, &claims, &encoding).unwrap()
        };
        (verifier, mint)
    }

    #[test]
    fn claim_conditions_compare_strings_and_lists() {
        let claims = json!({"azp": "app", "groups": ["a", "b"], "n": 1});
        let claims = claims.as_object().unwrap();
        assert!(claim("azp", Some("app"), None).holds(claims));
        assert!(!claim("azp", Some("ap"), None).holds(claims));
        assert!(claim("groups", None, Some("b")).holds(claims));
        assert!(claim("azp", None, Some("app")).holds(claims));
        assert!(
            !claim("groups", Some("b"), None).holds(claims),
            "a list is not a string"
        );
        assert!(
            !claim("n", Some("1"), None).holds(claims),
            "a number is not a string"
        );
        assert!(!claim("missing", None, Some("x")).holds(claims));
        assert!(
            !claim("azp", Some("app"), Some("app")).holds(claims),
            "both: never"
        );
        assert!(!claim("azp", None, None).holds(claims), "neither: never");
    }

    #[test]
    fn only_asymmetric_signature_keys_with_a_kid_are_usable() {
        let ed = public_jwk(&SigningKey::generate().verifying_key());
        assert_eq!(signing_algorithm(&ed), Some(Algorithm::EdDSA));
        let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        let (n2048, n1024) = (b64(&[0xc5; 256]), b64(&[0xc5; 128]));
        let p256 = json!({"kty": "EC", "crv": "P-256", "kid": "e", "x": b64(&[1; 32]), "y": b64(&[2; 32])});
        let usable = [
            (
                json!({"kty": "RSA", "kid": "r", "n": n2048, "e": "AQAB"}),
                Some(Algorithm::RS256),
            ),
            (
                json!({"kty": "RSA", "kid": "r", "n": n2048, "e": "AQAB", "alg": "RS256"}),
                Some(Algorithm::RS256),
            ),
            (p256.clone(), Some(Algorithm::ES256)),
            (
                json!({"kty": "RSA", "kid": "r", "n": n1024, "e": "AQAB"}),
                None,
            ),
            (
                json!({"kty": "RSA", "kid": "r", "n": n2048, "e": "AQAB", "alg": "RS512"}),
                None,
            ),
            (json!({"kty": "RSA", "n": n2048, "e": "AQAB"}), None),
            (
                json!({"kty": "RSA", "kid": "r", "n": n2048, "e": "AQAB", "use": "enc"}),
                None,
            ),
            (json!({"kty": "oct", "kid": "h", "k": b64(b"secret")}), None),
            (
                json!({"kty": "EC", "crv": "P-384", "kid": "e", "x": b64(&[1; 48]), "y": b64(&[2; 48])}),
                None,
            ),
        ];
        for (jwk, want) in usable {
            let parsed: Jwk = serde_json::from_value(jwk.clone()).unwrap();
            assert_eq!(signing_algorithm(&parsed), want, "{jwk}");
        }
    }

    #[test]
    fn a_token_selects_exactly_one_mapped_tenant() {
        let (verifier, mint) = setup(vec![
            mapping(
                "ns/billing",
                "api",
                vec![claim("azp", Some("billing"), None)],
            ),
            mapping("ns/team", "api", vec![claim("groups", None, Some("team"))]),
        ]);
        let caller = verifier
            .verify(&mint(json!({"azp": "billing", "sub": "u1", "jti": "j1"})))
            .unwrap();
        assert_eq!(caller.tenant.to_string(), "ns/billing");
        assert_eq!(
            (caller.subject.as_str(), caller.token_id.as_str()),
            ("u1", "j1")
        );
        assert_eq!(caller.credential.tid, "uid-ns/billing");
        assert_eq!(
            caller.credential.identity,
            Some(fingerprint(
                ISSUER,
                "api",
                &[claim("azp", Some("billing"), None)]
            ))
        );
        let team = verifier.verify(&mint(
            json!({"groups": ["x", "team"], "aud": ["other", "api"]}),
        ));
        assert_eq!(team.unwrap().tenant.to_string(), "ns/team");

        let cases = [
            (json!({"azp": "someone"}), TokenError::NoTenant),
            (
                json!({"azp": "billing", "groups": ["team"]}),
                TokenError::AmbiguousTenant,
            ),
            (
                json!({"azp": "billing", "aud": "other"}),
                TokenError::WrongAudience,
            ),
            (
                json!({"azp": "billing", "iss": "https://evil.example"}),
                TokenError::WrongIssuer,
            ),
            (
                json!({"azp": "billing", "exp": now() - 60}),
                TokenError::Expired,
            ),
            (
                json!({"azp": "billing", "exp": now() + 7200}),
                TokenError::LifetimeTooLong,
            ),
        ];
        for (claims, want) in cases {
            assert_eq!(
                verifier.verify(&mint(claims.clone())),
                Err(want),
                "{claims}"
            );
        }
    }

    #[test]
    fn symmetric_unknown_and_foreign_keys_are_refused() {
        let (verifier, mint) = setup(vec![mapping(
            "ns/a",
            "api",
            vec![claim("azp", Some("a"), None)],
        )]);
        let good = mint(json!({"azp": "a"}));
        let header = jsonwebtoken::decode_header(&good).unwrap();
        let claims: Value = jsonwebtoken::dangerous::insecure_decode_claims(&good).unwrap();

        let mut hs = Header::new(Algorithm::HS256);
        hs.kid = header.kid.clone();
        let hs = jsonwebtoken::encode(&hs, &claims, &EncodingKey::from_secret(b"k")).unwrap();
        assert_eq!(verifier.verify(&hs), Err(TokenError::WrongAlgorithm));

        let other = SigningKey::generate();
        let encoding = EncodingKey::from_ed_pem(other.to_pkcs8_pem().as_bytes()).unwrap();
        let mut unknown = Header::new(Algorithm::EdDSA);
        unknown.kid = Some(other.kid().to_string());
        let unknown = jsonwebtoken::encode(&unknown, &claims, &encoding).unwrap();
        assert_eq!(verifier.verify(&unknown), Err(TokenError::UnknownKey));

        let mut forged = Header::new(Algorithm::EdDSA);
        forged.kid = header.kid;
        let forged = jsonwebtoken::encode(&forged, &claims, &encoding).unwrap();
        assert_eq!(verifier.verify(&forged), Err(TokenError::BadSignature));
        assert_eq!(unverified_issuer(&good).as_deref(), Some(ISSUER));
        assert_eq!(unverified_issuer("not.a.jwt"), None);
    }

    #[test]
    fn a_document_with_a_bad_tenant_name_is_refused() {
        let doc = json!({"issuers": [{"issuer": ISSUER, "keys": [], "tenants": [
            {"tenant": "no-namespace", "tid": "u", "audience": "a", "claims": [], "fingerprint": "f"}]}]});
        assert!(
            FederatedVerifier::parse(doc.to_string().as_bytes(), 5, Duration::from_secs(60))
                .is_err()
        );
    }
}
