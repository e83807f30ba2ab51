//! A request's cost: the token positions its model work runs (embeddings: the inputs' tokens;
//! UniNLU: the text's windows in the lower layers, then every prompt over every window in the
//! upper layers). Each piece of work is costed before it runs, checked against
//! `--max-request-cost` and charged to the tenant's token quotas, so no work runs unpaid and a
//! refusal comes before the work it refuses.

use axum::extract::{FromRequestParts, OptionalFromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderName, HeaderValue};
use axum::response::{IntoResponseParts, ResponseParts};

use crate::auth::Meter;
use crate::http::{ApiError, AppState};

/// The running bill of one request.
pub struct Bill {
    /// The tenant's quotas; `None` under `--auth none`.
    meter: Option<Meter>,
    /// `--max-request-cost`.
    limit: u64,
    total: u64,
}

impl Bill {
    pub fn new(meter: Option<Meter>, limit: u64) -> Self {
        Self {
            meter,
            limit,
            total: 0,
        }
    }

    /// Admits `tokens` more of this request's work: refused (413) when the request would then
    /// cost more than `--max-request-cost`, else charged to the tenant (see [`Meter::charge`]).
    pub async fn charge(&mut self, tokens: usize) -> Result<(), ApiError> {
        let tokens = u64::try_from(tokens).unwrap_or(u64::MAX);
        let total = over_limit(self.total, tokens, self.limit)?;
        if let Some(meter) = &self.meter {
            meter.charge(tokens).await?;
        }
        self.total = total;
        Ok(())
    }

    /// A stable number for the request's tenant, under which its work takes turns with other
    /// tenants' in the batcher (one tenant for all under `--auth none`).
    pub fn tenant_key(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let Some(meter) = &self.meter else { return 0 };
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        meter.tenant().hash(&mut hasher);
        hasher.finish()
    }

    /// What the request has cost so far: the `X-Request-Cost` of its answer.
    pub fn cost(&self) -> RequestCost {
        RequestCost(self.total)
    }
}

/// Pure: the new total, or the 413 that names it and the limit.
fn over_limit(spent: u64, tokens: u64, limit: u64) -> Result<u64, ApiError> {
    let total = spent.saturating_add(tokens);
    if total > limit {
        return Err(ApiError::new(
            axum::http::StatusCode::PAYLOAD_TOO_LARGE,
            "request_too_costly",
            format!(
                "this request costs at least {total} token positions; the limit is {limit} \
                 (--max-request-cost): send a shorter text, fewer inputs or a smaller schema"
            ),
        ));
    }
    Ok(total)
}

impl FromRequestParts<AppState> for Bill {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let meter =
            <axum::Extension<Meter> as OptionalFromRequestParts<AppState>>::from_request_parts(
                parts, state,
            )
            .await?
            .map(|axum::Extension(m)| m);
        Ok(Bill::new(meter, state.max_request_cost))
    }
}

/// `X-Request-Cost`: the token positions the request's model work ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestCost(pub u64);

pub static REQUEST_COST: HeaderName = HeaderName::from_static("x-request-cost");

impl IntoResponseParts for RequestCost {
    type Error = std::convert::Infallible;

    fn into_response_parts(self, mut res: ResponseParts) -> Result<ResponseParts, Self::Error> {
        res.headers_mut()
            .insert(REQUEST_COST.clone(), HeaderValue::from(self.0));
        Ok(res)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_is_inclusive_and_names_the_total() {
        assert_eq!(over_limit(0, 100, 100).unwrap(), 100);
        assert_eq!(over_limit(60, 40, 100).unwrap(), 100);
        let e = over_limit(60, 41, 100).unwrap_err();
        assert_eq!((e.status.as_u16(), e.code), (413, "request_too_costly"));
        assert!(
            e.message.contains("at least 101") && e.message.contains("is 100"),
            "{}",
            e.message
        );
        assert!(
            over_limit(u64::MAX, 1, u64::MAX).is_ok(),
            "saturates instead of wrapping"
        );
    }

    #[tokio::test]
    async fn without_a_meter_only_the_limit_applies() {
        let mut bill = Bill::new(None, 10);
        bill.charge(4).await.unwrap();
        bill.charge(6).await.unwrap();
        assert_eq!(bill.cost(), RequestCost(10));
        assert_eq!(bill.charge(1).await.unwrap_err().code, "request_too_costly");
        assert_eq!(
            bill.cost(),
            RequestCost(10),
            "a refused charge costs nothing"
        );
    }
}
