//! The server's one error vocabulary: what went wrong ([`Kind`]), a stable machine-readable
//! code and a message for people. Every room below HTTP (auth, cost, engine, batching, uninlu)
//! speaks it; only `http/errors.rs` turns a kind into a status code, so each status is decided in
//! one table and no room below HTTP knows about status codes.

/// What kind of failure, in the terms of the request rather than of HTTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Malformed: not JSON, wrong fields, an invalid schema, an empty input.
    Invalid,
    /// No credentials, or credentials that do not hold (bad, expired or revoked token).
    Unauthenticated,
    /// A known caller that may not do this (suspended, scope or service not granted).
    Forbidden,
    /// No such route, or a route of the other task.
    NotFound,
    /// The route does not take this method.
    MethodNotAllowed,
    /// The request body did not arrive in time.
    BodyTimeout,
    /// More than the server accepts at once: body, text, inputs, request cost.
    TooLarge,
    /// Well-formed but too complex to run: schema depth, keys, prompts.
    TooComplex,
    /// One of the caller's limits is used up for now; a later retry can succeed.
    Exhausted,
    /// The server's own failure.
    Internal,
    /// The server cannot take work now: loading, queue full, draining, quota backend down.
    Unavailable,
    /// The request did not finish within the server's time limit.
    TimedOut,
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct Error {
    pub kind: Kind,
    /// Stable machine-readable reason, e.g. `invalid_json`, `too_large`, `missing_token`.
    pub code: &'static str,
    pub message: String,
    /// Seconds after which a retry can succeed (for `Exhausted` and `Unavailable`).
    pub retry_after: Option<u32>,
}

impl Error {
    pub fn new(kind: Kind, code: &'static str, message: impl Into<String>) -> Self {
        Error {
            kind,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// The same error, saying when to retry.
    pub fn retry_after(self, seconds: u32) -> Self {
        Error {
            retry_after: Some(seconds),
            ..self
        }
    }

    pub fn invalid(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(Kind::Invalid, code, message)
    }

    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(Kind::TooLarge, "too_large", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(Kind::NotFound, "not_found", message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(Kind::Internal, "internal", message)
    }
}
