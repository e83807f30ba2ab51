//! Tokens of a tenant's own identity provider at the server: `--identities` as the operator
//! writes it, the tenant record in a real Redis, real HTTP. The operator's side (discovery, JWK
//! Set, rotation) is tested against a loopback issuer in operator/ and e2e/.

use nlu_crds::access::identity::{fingerprint, ClaimMatch, Identities, Mapping, TrustedIssuer};
use nlu_crds::access::jwks::public_jwk;
use nlu_crds::access::{SigningKey, TenantRecord};
use reqwest::StatusCode;

use crate::harness::*;

const IDP: &str = "https://idp.example";

fn conditions() -> Vec<ClaimMatch> {
    vec![ClaimMatch {
        claim: "azp".into(),
        equals: Some("billing-app".into()),
        contains: None,
    }]
}

/// An EdDSA token of the identity provider's `key` with `azp`.
fn idp_token(key: &SigningKey, azp: &str) -> String {
    let now = chrono::Utc::now().timestamp();
    let claims = serde_json::json!({"iss": IDP, "aud": "nlu-api", "azp": azp, "sub": "user-7",
                                    "iat": now, "exp": now + 300});
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    header.kid = Some(key.kid().to_string());
    let encoding = jsonwebtoken::EncodingKey::from_ed_pem(key.to_pkcs8_pem().as_bytes()).unwrap();
    jsonwebtoken::encode(&header, &claims, &encoding).unwrap()
}

/// `identities.json` as the operator writes it: `idp`'s key and one mapping for `tenant`.
fn identities_doc(idp: &SigningKey, tenant: &str) -> Identities {
    Identities {
        issuers: vec![TrustedIssuer {
            issuer: IDP.into(),
            keys: vec![public_jwk(&idp.verifying_key())],
            tenants: vec![Mapping {
                tenant: tenant.into(),
                tid: TENANT_UID.into(),
                audience: "nlu-api".into(),
                claims: conditions(),
                fingerprint: fingerprint(IDP, "nlu-api", &conditions()),
            }],
        }],
    }
}

/// A server on the shared Redis reading the identity providers from `identities`.
async fn federated_server(keys: &Keys, prefix: &str, identities: &std::path::Path) -> TestServer {
    let args = auth_args(
        &shared_redis().url(),
        &keys.jwks_path(),
        prefix,
        &["--identities", identities.to_str().unwrap()],
    );
    TestServer::start(&args).await
}

#[tokio::test]
async fn a_mapped_token_passes_the_tenant_record_and_its_identity_fingerprint() {
    let redis = shared_redis();
    let (keys, prefix, idp) = (Keys::new(), unique_prefix(), SigningKey::generate());
    let tenant = "team-a/billing";
    let current = fingerprint(IDP, "nlu-api", &conditions());
    let identities = keys.dir.path().join("identities.json");
    let doc = serde_json::to_vec(&identities_doc(&idp, tenant)).unwrap();
    std::fs::write(&identities, doc).unwrap();
    let record = |identity: Option<&str>| TenantRecord {
        identity: identity.map(String::from),
        ..open_record()
    };
    put_record(&redis.url(), &prefix, tenant, &record(Some(&current))).await;
    let server = federated_server(&keys, &prefix, &identities).await;
    let token = idp_token(&idp, "billing-app");
    let status = |token: String| {
        let server = &server;
        async move { server.call("/v1/embeddings", Some(&token)).await.status() }
    };

    assert_eq!(status(token.clone()).await, StatusCode::OK);
    assert_eq!(
        status(keys.token(tenant)).await,
        StatusCode::OK,
        "the operator's token too"
    );
    let unmapped = server
        .call("/v1/embeddings", Some(&idp_token(&idp, "other-app")))
        .await;
    assert_eq!(unmapped.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(error_code(unmapped).await, "invalid_token");

    // The record is the authority: a changed or removed mapping refuses at once, before the
    // servers' copy of identities.json follows.
    for (case, identity) in [("changed", Some("0123")), ("removed", None)] {
        put_record(&redis.url(), &prefix, tenant, &record(identity)).await;
        let refused = server.call("/v1/embeddings", Some(&token)).await;
        assert_eq!(refused.status(), StatusCode::UNAUTHORIZED, "{case}");
        assert_eq!(error_code(refused).await, "invalid_token", "{case}");
    }
    put_record(
        &redis.url(),
        &prefix,
        tenant,
        &TenantRecord {
            enabled: false,
            ..record(Some(&current))
        },
    )
    .await;
    assert_eq!(
        status(token.clone()).await,
        StatusCode::FORBIDDEN,
        "suspended"
    );
    put_record(&redis.url(), &prefix, tenant, &record(Some(&current))).await;
    assert_eq!(status(token).await, StatusCode::OK);
}

/// A server started before the operator wrote `identities.json` (an older operator's ConfigMap)
/// serves the operator's tokens, and the identity provider's once the file appears.
#[tokio::test]
async fn a_missing_identities_file_is_waited_for() {
    let redis = shared_redis();
    let (keys, prefix, idp) = (Keys::new(), unique_prefix(), SigningKey::generate());
    let tenant = "team-a/billing";
    let record = TenantRecord {
        identity: Some(fingerprint(IDP, "nlu-api", &conditions())),
        ..open_record()
    };
    put_record(&redis.url(), &prefix, tenant, &record).await;
    let identities = keys.dir.path().join("identities.json");
    let server = federated_server(&keys, &prefix, &identities).await;
    let token = idp_token(&idp, "billing-app");
    let operator_token = keys.token(tenant);
    let call = |token: String| {
        let server = &server;
        async move { server.call("/v1/embeddings", Some(&token)).await.status() }
    };
    assert_eq!(call(operator_token).await, StatusCode::OK);
    assert_eq!(call(token.clone()).await, StatusCode::UNAUTHORIZED);

    let doc = serde_json::to_vec(&identities_doc(&idp, tenant)).unwrap();
    std::fs::write(&identities, doc).unwrap();
    eventually(10, "the identities file read", || async {
        call(token.clone()).await == StatusCode::OK
    })
    .await;
}
