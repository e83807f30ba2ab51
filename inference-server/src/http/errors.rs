//! The one error shape of the API, `{"error": {"code", "message"}}`, and the JSON body extractor
//! that turns every malformed body into it (never a 500, never axum's plain-text rejections).

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::de::DeserializeOwned;
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::{Error, Kind};
use crate::listener::BodyDeadline;

/// The one status table: every error of the server reaches the client through it.
pub fn status(kind: Kind) -> StatusCode {
    match kind {
        Kind::Invalid => StatusCode::BAD_REQUEST,
        Kind::Unauthenticated => StatusCode::UNAUTHORIZED,
        Kind::Forbidden => StatusCode::FORBIDDEN,
        Kind::NotFound => StatusCode::NOT_FOUND,
        Kind::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        Kind::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
        Kind::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        Kind::TooComplex => StatusCode::UNPROCESSABLE_ENTITY,
        Kind::Exhausted => StatusCode::TOO_MANY_REQUESTS,
        Kind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        Kind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Kind::TimedOut => StatusCode::GATEWAY_TIMEOUT,
    }
}

/// The body of every error answer.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"error": {"code": "invalid_request", "message": "missing field text"}}))]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable machine-readable reason, e.g. `invalid_json`, `too_large`, `missing_token`.
    pub code: String,
    /// What went wrong, for people.
    pub message: String,
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = status(self.kind);
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_owned(),
                message: self.message,
            },
        };
        let mut response = (status, Json(body)).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

/// A JSON body parsed into `T`, with every failure mapped to an [`Error`]:
/// too large -> 413; not all there by the listener's [`BodyDeadline`] -> 408; not UTF-8, not
/// JSON, or the wrong shape (types, unknown fields) -> 400.
/// The content type is not checked, so `curl -d` works as is.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = Error;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let deadline = req.extensions().get::<BodyDeadline>().copied();
        let read = Bytes::from_request(req, state);
        let read = match deadline {
            Some(BodyDeadline(at)) => tokio::time::timeout_at(at, read).await.map_err(|_| {
                Error::new(
                    Kind::BodyTimeout,
                    "body_timeout",
                    "the request body did not arrive in time (--body-read-timeout)",
                )
            })?,
            None => read.await,
        };
        let bytes = read.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                Error::too_large("the request body is larger than the server's limit (--max-body-bytes)")
            } else {
                Error::invalid("invalid_body", rejection.body_text())
            }
        })?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// Pure: body bytes to `T` or the client's error.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    let text = std::str::from_utf8(bytes)
        .map_err(|e| Error::invalid("invalid_utf8", format!("the request body is not UTF-8: {e}")))?;
    serde_json::from_str(text).map_err(|e| {
        use serde_json::error::Category;
        match e.classify() {
            Category::Data => Error::invalid("invalid_request", e.to_string()),
            Category::Syntax | Category::Eof | Category::Io => {
                Error::invalid("invalid_json", format!("the request body is not valid JSON: {e}"))
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        text: String,
    }

    #[test]
    fn json_failures_are_client_errors() {
        let code = |b: &[u8]| parse_json::<Body>(b).unwrap_err();
        assert_eq!(code(b"\xff\xfe").code, "invalid_utf8");
        assert_eq!(code(b"{").code, "invalid_json");
        assert_eq!(code(b"").kind, Kind::Invalid);
        let wrong_type = code(br#"{"text": 1}"#);
        assert_eq!(
            (wrong_type.kind, wrong_type.code),
            (Kind::Invalid, "invalid_request")
        );
        assert!(code(br#"{"text": "a", "extra": 1}"#).message.contains("unknown field"));
        assert!(parse_json::<Body>(br#"{"text": "a"}"#).is_ok());
    }

    #[test]
    fn every_kind_has_its_own_status_and_retry_after_is_sent() {
        let kinds = [
            Kind::Invalid,
            Kind::Unauthenticated,
            Kind::Forbidden,
            Kind::NotFound,
            Kind::MethodNotAllowed,
            Kind::BodyTimeout,
            Kind::TooLarge,
            Kind::TooComplex,
            Kind::Exhausted,
            Kind::Internal,
            Kind::Unavailable,
            Kind::TimedOut,
        ];
        let statuses: Vec<u16> = kinds.iter().map(|k| status(*k).as_u16()).collect();
        assert_eq!(
            statuses,
            [400, 401, 403, 404, 405, 408, 413, 422, 429, 500, 503, 504]
        );
        let response = Error::new(Kind::Exhausted, "rate_limited", "slow down")
            .retry_after(7)
            .into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "7");
    }
}
