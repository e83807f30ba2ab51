//! UniNLU route: `POST /api/predict`.

use axum::extract::State;
use axum::Json;
use serde::Deserialize;
use serde_json::Value;
use utoipa::ToSchema;

use super::errors::ApiJson;
use crate::error::Error;
use super::router::AppState;
use nlu_crds::serve::Task;
use crate::cost::{Bill, RequestCost};
use crate::uninlu::Prediction;

/// `text` (or `input`, as the original pipeline call names it) and a schema, which is a JSON
/// object or a string holding one. Kept as raw JSON so the checks below can say what is wrong.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"text": "1月22日，在北京举行的比赛中，中国队战胜了日本队。", "schema": {"地理位置": null, "组织机构": null}}))]
pub struct PredictRequest {
    /// The text; for classification-like tasks `label1,label2|text` (see docs).
    #[schema(value_type = Option<String>, min_length = 1, pattern = r"\S")]
    pub text: Option<Value>,
    /// Another name for `text` (as the original pipeline calls it); give one of the two.
    #[schema(value_type = Option<String>, min_length = 1, pattern = r"\S")]
    pub input: Option<Value>,
    #[schema(required = true, schema_with = super::openapi::uninlu_schema)]
    pub schema: Option<Value>,
}

/// Pure: the request's text and schema, or the client's error.
pub fn text_and_schema(req: PredictRequest) -> Result<(String, Value), Error> {
    let text = match (req.text, req.input) {
        (Some(_), Some(_)) => {
            return Err(Error::invalid(
                "invalid_request",
                "give either text or input, not both",
            ))
        }
        (Some(t), None) | (None, Some(t)) => t,
        (None, None) => {
            return Err(Error::invalid(
                "invalid_request",
                "missing field text",
            ))
        }
    };
    let Value::String(text) = text else {
        return Err(Error::invalid(
            "invalid_request",
            "text must be a string",
        ));
    };
    if text.trim().is_empty() {
        return Err(Error::invalid(
            "empty_input",
            "text must not be empty",
        ));
    }
    let schema = req
        .schema
        .ok_or_else(|| Error::invalid("invalid_request", "missing field schema"))?;
    Ok((text, schema))
}

/// UniNLU: extract spans for a schema (NER, relations, events, sentiment, classification,
/// matching, NLI, reading comprehension).
#[utoipa::path(post, path = "/api/predict", tag = "uninlu",
    request_body = PredictRequest,
    security((), ("bearer" = [])),
    responses((status = 200, description = "Complete chains, root to leaf", body = Prediction), super::openapi::ModelErrors))]
pub async fn predict(
    State(state): State<AppState>,
    mut bill: Bill,
    ApiJson(req): ApiJson<PredictRequest>,
) -> Result<(RequestCost, Json<Prediction>), Error> {
    state.require(Task::Uninlu)?;
    let engine = state
        .engine()?
        .uninlu()
        .ok_or_else(|| Error::internal("the loaded model is not a UniNLU model"))?;
    let (text, schema) = text_and_schema(req)?;
    let prediction = engine.predict(text, schema, &mut bill).await?;
    Ok((bill.cost(), Json(prediction)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::errors::parse_json;

    fn check(body: &str) -> Result<(String, Value), Error> {
        text_and_schema(parse_json(body.as_bytes())?)
    }

    #[test]
    fn text_or_input_is_required_and_a_string() {
        assert_eq!(
            check(r#"{"input": "abc", "schema": {"a": null}}"#)
                .unwrap()
                .0,
            "abc"
        );
        assert_eq!(
            check(r#"{"schema": {"a": null}}"#).unwrap_err().message,
            "missing field text"
        );
        assert_eq!(
            check(r#"{"text": 5, "schema": {}}"#).unwrap_err().message,
            "text must be a string"
        );
        assert_eq!(
            check(r#"{"text": " ", "schema": {}}"#).unwrap_err().code,
            "empty_input"
        );
        assert!(check(r#"{"text": "a"}"#).is_err());
        assert!(check(r#"{"text": "a", "schema": {}, "extra": 1}"#).is_err());
    }
}
