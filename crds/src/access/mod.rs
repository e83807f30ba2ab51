//! The tenant-access contract: what the operator writes and the server reads.
//!
//! - [`claims`]: the JWT claims and the operations (scopes) a token may grant.
//! - [`tokens`]: Ed25519 signing keys and minting of EdDSA tokens (operator and `nlu-server token`).
//! - [`jwks`]: the public JWK Set that servers verify against (kid = RFC 7638 thumbprint).
//! - [`verify`]: token verification, shared so the operator can prove its tokens pass the server.
//! - [`identity`]: tokens of a tenant's own OIDC identity provider: the keys and mappings the
//!   operator publishes and their verification.
//! - [`redis_keys`]: Redis key names, the tenant record and the atomic quota script.
//! - [`redis_acl`]: the Redis ACL user of a service namespace (rules, name, credential URL).
//! - `redis_client` (feature `redis-client`): how both binaries open Redis (one server or a
//!   Redis Cluster), TLS roots included.

pub mod claims;
pub mod identity;
pub mod jwks;
pub mod redis_acl;
#[cfg(feature = "redis-client")]
pub mod redis_client;
pub mod redis_keys;
pub mod tokens;
pub mod verify;

pub use claims::{Claims, Credential, QualifiedName, Scope, UninluTask};
pub use jwks::{public_jwk, thumbprint};
pub use redis_keys::{QuotaOutcome, RedisKeys, TenantRecord};
pub use tokens::{SigningKey, TokenRequest};
pub use verify::{Caller, TokenError, Verifier};

/// Errors from the access contract that are not about a presented token.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error("invalid name {0:?}: expected namespace/name")]
    InvalidName(String),
    #[error("unknown scope {0:?}: expected predict, predict:<task> (ner, relation, event, sentiment, classification, match, nli, mrc), embed or rerank")]
    UnknownScope(String),
    #[error("invalid signing key: {0}")]
    SigningKey(String),
    #[error("invalid JWK set: {0}")]
    Jwks(String),
    #[error("invalid tenant record: {0}")]
    Record(String),
    #[error("could not sign token: {0}")]
    Sign(#[from] jsonwebtoken::errors::Error),
}
