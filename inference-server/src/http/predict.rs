//! UniNLU routes: `POST /api/predict`, and the second seed app's `POST /predict`.

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
use crate::uninlu::{task_of, Prediction};
use nlu_crds::access::UninluTask;
use nlu_crds::routes::Route;

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
    /// Give each span a `score`: the probability the model gives it (see docs). Default false,
    /// which answers exactly what the original pipeline answers.
    #[serde(default)]
    pub scores: bool,
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
///
/// Auth on: needs the scope `predict`, or `predict:<task>` for the task the schema and text
/// express (docs/auth.md, "Per-task scopes"); a request whose task cannot be told needs
/// `predict`.
#[utoipa::path(post, path = Route::Predict.openapi_path(), tag = "uninlu",
    request_body = PredictRequest,
    security((), ("bearer" = [])),
    responses((status = 200, description = "Complete chains, root to leaf", body = Prediction), super::openapi::ModelErrors))]
pub async fn predict(
    State(state): State<AppState>,
    bill: Bill,
    ApiJson(req): ApiJson<PredictRequest>,
) -> Result<(RequestCost, Json<Prediction>), Error> {
    let scores = req.scores;
    let (text, schema) = text_and_schema(req)?;
    run(&state, bill, text, schema, scores, None).await
}

/// The second seed app's request: a task type and the text.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"task_type": "ner", "input_text": "2022年北京冬奥会在北京举行"}))]
pub struct TaskRequest {
    /// One of the server's task types (built in: ner, relation, event, attribute_sentiment,
    /// sentiment, classification, text_matching, nli, reading_comprehension; more with
    /// --task-presets). An unknown one is a 400 listing the known ones.
    pub task_type: String,
    /// The text, without the labels: the task type puts them before it.
    #[schema(min_length = 1, pattern = r"\S")]
    pub input_text: String,
    /// Replaces the task type's schema (reading_comprehension has none: its schema is the
    /// question, e.g. `{"谷爱凌获得了什么奖牌？": null}`). `null`: the task type's.
    #[schema(schema_with = super::openapi::optional_uninlu_schema)]
    pub schema: Option<Value>,
}

/// The second seed app's route: UniNLU under a named task type, for clients written against
/// `POST /predict {"task_type", "input_text"}`. Answers as `/api/predict` does.
///
/// Auth on: a built-in task type used with its own schema needs the scope of the task it names
/// (`predict:ner` for `ner`, ...) or `predict`; a request that brings its schema, and a
/// `--task-presets` entry, needs the scope of the task its text and schema express, as on
/// `/api/predict`.
#[utoipa::path(post, path = Route::TaskPredict.openapi_path(), tag = "uninlu",
    request_body = TaskRequest,
    security((), ("bearer" = [])),
    responses((status = 200, description = "Complete chains, root to leaf", body = Prediction), super::openapi::ModelErrors))]
pub async fn task(
    State(state): State<AppState>,
    bill: Bill,
    ApiJson(req): ApiJson<TaskRequest>,
) -> Result<(RequestCost, Json<Prediction>), Error> {
    if req.input_text.trim().is_empty() {
        return Err(Error::invalid("empty_input", "input_text must not be empty"));
    }
    let named = match req.schema {
        None => state.presets.task(&req.task_type),
        Some(_) => None,
    };
    let (text, schema) = state
        .presets
        .request(&req.task_type, &req.input_text, req.schema)?;
    run(&state, bill, text, schema, false, named).await
}

/// Runs one prediction, with span scores only when asked, if the tenant's scopes allow its
/// task: `named` when the task type names it, else told from text and schema.
async fn run(
    state: &AppState,
    mut bill: Bill,
    text: String,
    schema: Value,
    scores: bool,
    named: Option<UninluTask>,
) -> Result<(RequestCost, Json<Prediction>), Error> {
    state.require(Task::Uninlu)?;
    let engine = state
        .engine()?
        .uninlu()
        .ok_or_else(|| Error::internal("the loaded model is not a UniNLU model"))?;
    let schema = engine.schema(&schema)?;
    bill.allow_task(named.or_else(|| task_of(&text, &schema)))?;
    let prediction = engine.predict(text, schema, &mut bill).await?;
    let prediction = if scores {
        prediction
    } else {
        prediction.without_scores()
    };
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
