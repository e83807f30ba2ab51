//! text-embeddings-inference's `/tokenize` and `/decode`, on the server's own tokenizer: what a
//! client needs to count, cut or inspect tokens the way the model will see them.

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::embeddings::{engine, Inputs};
use super::errors::ApiJson;
use super::router::AppState;
use crate::cost::{Bill, RequestCost};
use crate::error::Error;
use crate::engine::Token;
use nlu_crds::routes::Route;

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenizeRequest {
    #[schema(schema_with = super::openapi::inputs)]
    pub inputs: Inputs,
    /// Add the model's special tokens (`[CLS]`, `[SEP]`), as embedding does. Default true.
    #[serde(default = "yes")]
    pub add_special_tokens: bool,
    /// Cut inputs longer than the limit instead of refusing them, as `/embed` does.
    #[serde(default)]
    pub truncate: bool,
}

/// One token in text-embeddings-inference's shape.
#[derive(Debug, Serialize, ToSchema)]
pub struct SimpleToken {
    pub id: u32,
    /// The characters of the input it covers, or a special token's name.
    pub text: String,
    pub special: bool,
    /// First code point of the input it covers (`null` for a special token). Code points, as
    /// everywhere in this API (text-embeddings-inference counts bytes).
    pub start: Option<usize>,
    /// One past its last code point.
    pub stop: Option<usize>,
}

impl From<Token> for SimpleToken {
    fn from(t: Token) -> Self {
        SimpleToken {
            id: t.id,
            text: t.text,
            special: t.special,
            start: t.span.map(|s| s.0),
            stop: t.span.map(|s| s.1),
        }
    }
}

/// One list of ids or a list of them.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(
    untagged,
    expecting = "an array of token ids or an array of arrays of them"
)]
pub enum Ids {
    One(Vec<u32>),
    Many(Vec<Vec<u32>>),
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DecodeRequest {
    pub ids: Ids,
    /// Leave out special tokens. Default true.
    #[serde(default = "yes")]
    pub skip_special_tokens: bool,
}

/// Each input's tokens, as the model sees them. Counts as a request; costs no token positions.
#[utoipa::path(post, path = Route::Tokenize.openapi_path(), tag = "embedding",
    request_body = TokenizeRequest,
    security((), ("bearer" = [])),
    responses((status = 200, description = "One list of tokens per input, in input order", body = Vec<Vec<SimpleToken>>), super::openapi::ModelErrors))]
pub async fn tokenize(
    State(state): State<AppState>,
    bill: Bill,
    ApiJson(req): ApiJson<TokenizeRequest>,
) -> Result<(RequestCost, Json<Vec<Vec<SimpleToken>>>), Error> {
    let tokens = engine(&state)?
        .tokenize(req.inputs.into_vec(), req.truncate, req.add_special_tokens)
        .await?;
    let tokens = tokens
        .into_iter()
        .map(|t| t.into_iter().map(SimpleToken::from).collect())
        .collect();
    Ok((bill.cost(), Json(tokens)))
}

/// The text of token ids. Counts as a request; costs no token positions.
#[utoipa::path(post, path = Route::Decode.openapi_path(), tag = "embedding",
    request_body = DecodeRequest,
    security((), ("bearer" = [])),
    responses((status = 200, description = "One text per list of ids, in order", body = Vec<String>), super::openapi::ModelErrors))]
pub async fn decode(
    State(state): State<AppState>,
    bill: Bill,
    ApiJson(req): ApiJson<DecodeRequest>,
) -> Result<(RequestCost, Json<Vec<String>>), Error> {
    let ids = match req.ids {
        Ids::One(ids) => vec![ids],
        Ids::Many(lists) => lists,
    };
    let texts = engine(&state)?.decode(ids, req.skip_special_tokens).await?;
    Ok((bill.cost(), Json(texts)))
}
