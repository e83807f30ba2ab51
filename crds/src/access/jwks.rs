//! The public JWK Set servers verify against: `{"keys":[{"kty":"OKP","crv":"Ed25519","x","kid",
//! "alg":"EdDSA","use":"sig"}]}`, with `kid` = RFC 7638 thumbprint (SHA-256) of the key.

use std::collections::HashMap;

use base64::Engine;
use ed25519_dalek::VerifyingKey;
use jsonwebtoken::jwk::{
    AlgorithmParameters, CommonParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm,
    OctetKeyPairParameters, OctetKeyPairType, PublicKeyUse, ThumbprintHash,
};
use jsonwebtoken::DecodingKey;

use super::AccessError;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

fn okp(key: &VerifyingKey) -> AlgorithmParameters {
    AlgorithmParameters::OctetKeyPair(OctetKeyPairParameters {
        key_type: OctetKeyPairType::OctetKeyPair,
        curve: EllipticCurve::Ed25519,
        x: B64.encode(key.as_bytes()),
    })
}

/// RFC 7638 thumbprint (SHA-256, base64url) of the key's JWK: its key id.
pub fn thumbprint(key: &VerifyingKey) -> String {
    let jwk = Jwk {
        common: CommonParameters::default(),
        algorithm: okp(key),
    };
    jwk.thumbprint(ThumbprintHash::SHA256)
        .expect("Ed25519 JWKs always have a thumbprint")
}

/// The public JWK of a verifying key, as published in the JWK Set.
pub fn public_jwk(key: &VerifyingKey) -> Jwk {
    Jwk {
        common: CommonParameters {
            public_key_use: Some(PublicKeyUse::Signature),
            key_algorithm: Some(KeyAlgorithm::EdDSA),
            key_id: Some(thumbprint(key)),
            ..CommonParameters::default()
        },
        algorithm: okp(key),
    }
}

/// A JWK Set holding the given public keys.
pub fn jwk_set<'a>(keys: impl IntoIterator<Item = &'a VerifyingKey>) -> JwkSet {
    JwkSet {
        keys: keys.into_iter().map(public_jwk).collect(),
    }
}

/// Parses a JWK Set document and keeps its Ed25519 keys, by `kid`.
///
/// Keys of other types are ignored (a set may be shared with other verifiers); an Ed25519 key
/// without a `kid` or with a malformed `x` makes the whole set invalid, so a broken file is
/// noticed instead of silently dropping a key.
pub fn ed25519_keys(json: &[u8]) -> Result<HashMap<String, DecodingKey>, AccessError> {
    let set: JwkSet = serde_json::from_slice(json).map_err(|e| AccessError::Jwks(e.to_string()))?;
    let mut keys = HashMap::new();
    for jwk in &set.keys {
        let AlgorithmParameters::OctetKeyPair(p) = &jwk.algorithm else {
            continue;
        };
        if p.curve != EllipticCurve::Ed25519 {
            continue;
        }
        let kid = jwk
            .common
            .key_id
            .clone()
            .ok_or_else(|| AccessError::Jwks("Ed25519 key without kid".into()))?;
        let bad_x = || {
            AccessError::Jwks(format!(
                "key {kid}: x is not a 32-byte base64url Ed25519 public key"
            ))
        };
        // Checked here because the verifier slices the key unchecked.
        let bytes: [u8; 32] = B64
            .decode(&p.x)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(bad_x)?;
        VerifyingKey::from_bytes(&bytes).map_err(|_| bad_x())?;
        let key = DecodingKey::from_ed_components(&p.x).map_err(|_| bad_x())?;
        keys.insert(kid, key);
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 8037 Appendix A.2 public key and A.3 thumbprint.
    const RFC_X: &str = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";
    const RFC_KID: &str = "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k";

    fn rfc_key() -> VerifyingKey {
        VerifyingKey::from_bytes(&B64.decode(RFC_X).unwrap().try_into().unwrap()).unwrap()
    }

    #[test]
    fn thumbprint_matches_rfc8037_a3() {
        assert_eq!(thumbprint(&rfc_key()), RFC_KID);
    }

    #[test]
    fn jwk_set_serializes_in_contract_shape_and_parses_back() {
        let json = serde_json::to_value(jwk_set([&rfc_key()])).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"keys":[{"kty":"OKP","crv":"Ed25519","x":RFC_X,"kid":RFC_KID,"alg":"EdDSA","use":"sig"}]})
        );
        let keys = ed25519_keys(json.to_string().as_bytes()).unwrap();
        assert_eq!(keys.keys().collect::<Vec<_>>(), vec![RFC_KID]);
    }

    #[test]
    fn other_key_types_are_skipped_and_broken_ed25519_keys_rejected() {
        let with_rsa = serde_json::json!({"keys":[
            {"kty":"RSA","n":"sXch","e":"AQAB","kid":"r"},
            {"kty":"OKP","crv":"Ed25519","x":RFC_X,"kid":"k"}]});
        assert_eq!(
            ed25519_keys(with_rsa.to_string().as_bytes()).unwrap().len(),
            1
        );
        for bad in [
            serde_json::json!({"keys":[{"kty":"OKP","crv":"Ed25519","x":RFC_X}]}),
            serde_json::json!({"keys":[{"kty":"OKP","crv":"Ed25519","x":"AAAA","kid":"k"}]}),
        ] {
            assert!(ed25519_keys(bad.to_string().as_bytes()).is_err(), "{bad}");
        }
        assert!(ed25519_keys(b"{not json").is_err());
    }
}
