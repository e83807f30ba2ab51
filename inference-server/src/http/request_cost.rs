//! A request's bill at the edge: made from the request's extensions (the tenant's meter, absent
//! under `--auth none`) and `--max-request-cost`, and its total sent back as `X-Request-Cost`.

use axum::extract::{FromRequestParts, OptionalFromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderName, HeaderValue};
use axum::response::{IntoResponseParts, ResponseParts};

use super::AppState;
use crate::auth::Meter;
use crate::cost::{Bill, Payer, RequestCost};

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
            .map(|axum::Extension(m)| Box::new(m) as Box<dyn Payer>);
        Ok(Bill::new(meter, state.max_request_cost))
    }
}

static REQUEST_COST: HeaderName = HeaderName::from_static("x-request-cost");

impl IntoResponseParts for RequestCost {
    type Error = std::convert::Infallible;

    fn into_response_parts(self, mut res: ResponseParts) -> Result<ResponseParts, Self::Error> {
        res.headers_mut()
            .insert(REQUEST_COST.clone(), HeaderValue::from(self.0));
        Ok(res)
    }
}
