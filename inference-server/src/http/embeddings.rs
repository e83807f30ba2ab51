//! Embedding routes: OpenAI `/v1/embeddings`, text-embeddings-inference `/embed`, `/similarity`.

use axum::extract::State;
use axum::Json;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::errors::ApiJson;
use crate::error::Error;
use super::router::AppState;
use nlu_crds::serve::Task;
use crate::cost::{Bill, RequestCost};
use crate::engine::{EmbedRequest, Embedded, EmbeddingEngine};
use nlu_crds::routes::Route;

/// A string or a list of strings.
#[derive(Debug, Deserialize)]
#[serde(untagged, expecting = "a string or an array of strings")]
pub enum Inputs {
    One(String),
    Many(Vec<String>),
}

impl Inputs {
    pub fn into_vec(self) -> Vec<String> {
        match self {
            Inputs::One(s) => vec![s],
            Inputs::Many(v) => v,
        }
    }
}

#[derive(Debug, Default, Clone, Copy, Deserialize, PartialEq, Eq, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum EncodingFormat {
    #[default]
    Float,
    /// Little-endian f32 bytes, base64: what the official OpenAI clients ask for by default.
    Base64,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OpenAiRequest {
    #[schema(schema_with = super::openapi::inputs)]
    pub input: Inputs,
    /// Accepted for compatibility; the server runs the one model it loaded and names that one
    /// in the response.
    pub model: Option<String>,
    #[serde(default)]
    pub encoding_format: EncodingFormat,
    /// End-user id, accepted for compatibility and not used.
    pub user: Option<String>,
    /// Keep only the first this many dimensions (Matryoshka), then normalise as the server
    /// does; at most the model's size (see `/info`).
    #[schema(minimum = 1)]
    pub dimensions: Option<usize>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OpenAiResponse {
    /// Always `list`.
    #[schema(value_type = String)]
    pub object: &'static str,
    pub data: Vec<OpenAiEmbedding>,
    pub model: String,
    pub usage: Usage,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OpenAiEmbedding {
    /// Always `embedding`.
    #[schema(value_type = String)]
    pub object: &'static str,
    pub index: usize,
    pub embedding: EmbeddingValue,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum EmbeddingValue {
    Float(Vec<f32>),
    Base64(String),
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub total_tokens: usize,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TeiRequest {
    #[schema(schema_with = super::openapi::inputs)]
    pub inputs: Inputs,
    /// Default: the server's setting (on unless started with --no-normalize).
    pub normalize: Option<bool>,
    /// Cut inputs longer than the limit instead of refusing them.
    #[serde(default)]
    pub truncate: bool,
    /// Keep only the first this many dimensions (Matryoshka), then normalise if `normalize`;
    /// at most the model's size (see `/info`).
    #[schema(minimum = 1)]
    pub dimensions: Option<usize>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SparseRequest {
    #[schema(schema_with = super::openapi::inputs)]
    pub inputs: Inputs,
    /// Cut inputs longer than the limit instead of refusing them.
    #[serde(default)]
    pub truncate: bool,
}

/// One token's lexical weight (text-embeddings-inference's `SparseValue`).
#[derive(Debug, Serialize, ToSchema)]
pub struct SparseValue {
    /// The token id.
    pub index: u32,
    /// Its weight, > 0.
    pub value: f32,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ColbertRequest {
    #[schema(schema_with = super::openapi::inputs)]
    pub inputs: Inputs,
    /// Scale each vector to unit length. Default: the server's setting (on unless started
    /// with --no-normalize).
    pub normalize: Option<bool>,
    /// Cut inputs longer than the limit instead of refusing them.
    #[serde(default)]
    pub truncate: bool,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SimilarityRequest {
    #[schema(schema_with = super::openapi::text)]
    pub source_sentence: String,
    #[schema(schema_with = super::openapi::texts)]
    pub sentences_to_compare: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SimilarityResponse {
    pub scores: Vec<f32>,
}

/// The embedding engine, or why this server has none.
pub fn engine(state: &AppState) -> Result<&EmbeddingEngine, Error> {
    state.require(Task::Embedding)?;
    state
        .engine()?
        .embedding()
        .ok_or_else(|| Error::internal("the loaded model is not an embedding model"))
}

fn model_name(state: &AppState) -> String {
    state
        .engine
        .get()
        .map(|e| e.info().model.clone())
        .unwrap_or_default()
}

/// OpenAI-compatible embeddings.
#[utoipa::path(post, path = Route::OpenAiEmbeddings.openapi_path(), tag = "embedding",
    request_body = OpenAiRequest,
    security((), ("bearer" = [])),
    responses((status = 200, description = "One embedding per input, in input order", body = OpenAiResponse), super::openapi::ModelErrors))]
pub async fn openai(
    State(state): State<AppState>,
    mut bill: Bill,
    ApiJson(req): ApiJson<OpenAiRequest>,
) -> Result<(RequestCost, Json<OpenAiResponse>), Error> {
    let engine = engine(&state)?;
    let Embedded { vectors, tokens } = engine
        .embed(
            EmbedRequest {
                texts: req.input.into_vec(),
                truncate: false,
                normalize: engine.normalize_default(),
                dimensions: req.dimensions,
            },
            &mut bill,
        )
        .await?;
    let data = vectors
        .into_iter()
        .enumerate()
        .map(|(index, v)| OpenAiEmbedding {
            object: "embedding",
            index,
            embedding: encode(v, req.encoding_format),
        })
        .collect();
    Ok((
        bill.cost(),
        Json(OpenAiResponse {
            object: "list",
            data,
            model: model_name(&state),
            usage: Usage {
                prompt_tokens: tokens,
                total_tokens: tokens,
            },
        }),
    ))
}

fn encode(vector: Vec<f32>, format: EncodingFormat) -> EmbeddingValue {
    match format {
        EncodingFormat::Float => EmbeddingValue::Float(vector),
        EncodingFormat::Base64 => {
            let bytes: Vec<u8> = vector.iter().flat_map(|x| x.to_le_bytes()).collect();
            EmbeddingValue::Base64(base64::engine::general_purpose::STANDARD.encode(bytes))
        }
    }
}

/// text-embeddings-inference compatible embeddings: one vector per input.
#[utoipa::path(post, path = Route::Embed.openapi_path(), tag = "embedding",
    request_body = TeiRequest,
    security((), ("bearer" = [])),
    responses((status = 200, description = "One vector per input, in input order", body = Vec<Vec<f32>>), super::openapi::ModelErrors))]
pub async fn tei(
    State(state): State<AppState>,
    mut bill: Bill,
    ApiJson(req): ApiJson<TeiRequest>,
) -> Result<(RequestCost, Json<Vec<Vec<f32>>>), Error> {
    let engine = engine(&state)?;
    let normalize = req.normalize.unwrap_or(engine.normalize_default());
    let embedded = engine
        .embed(
            EmbedRequest {
                texts: req.inputs.into_vec(),
                truncate: req.truncate,
                normalize,
                dimensions: req.dimensions,
            },
            &mut bill,
        )
        .await?;
    Ok((bill.cost(), Json(embedded.vectors)))
}

/// bge-m3's lexical (sparse) weights, in text-embeddings-inference's shape: per input the
/// tokens with a positive weight, ascending by token id, special tokens left out. Only for
/// models whose folder has bge-m3's `sparse_linear` head (404 otherwise).
#[utoipa::path(post, path = Route::EmbedSparse.openapi_path(), tag = "embedding",
    request_body = SparseRequest,
    security((), ("bearer" = [])),
    responses((status = 200, description = "One list of token weights per input, in input order", body = Vec<Vec<SparseValue>>), super::openapi::ModelErrors))]
pub async fn sparse(
    State(state): State<AppState>,
    mut bill: Bill,
    ApiJson(req): ApiJson<SparseRequest>,
) -> Result<(RequestCost, Json<Vec<Vec<SparseValue>>>), Error> {
    let weights = engine(&state)?
        .embed_sparse(req.inputs.into_vec(), req.truncate, &mut bill)
        .await?;
    let values = weights
        .into_iter()
        .map(|text| {
            text.into_iter()
                .map(|(index, value)| SparseValue { index, value })
                .collect()
        })
        .collect();
    Ok((bill.cost(), Json(values)))
}

/// bge-m3's multi-vector (ColBERT) output: per input one vector per token after the first
/// (`<s>`), the closing `</s>` included, as FlagEmbedding returns `colbert_vecs`. Only for
/// models whose folder has bge-m3's `colbert_linear` head (404 otherwise).
#[utoipa::path(post, path = Route::EmbedColbert.openapi_path(), tag = "embedding",
    request_body = ColbertRequest,
    security((), ("bearer" = [])),
    responses((status = 200, description = "One list of token vectors per input, in input order", body = Vec<Vec<Vec<f32>>>), super::openapi::ModelErrors))]
pub async fn colbert(
    State(state): State<AppState>,
    mut bill: Bill,
    ApiJson(req): ApiJson<ColbertRequest>,
) -> Result<(RequestCost, Json<Vec<Vec<Vec<f32>>>>), Error> {
    let engine = engine(&state)?;
    let normalize = req.normalize.unwrap_or(engine.normalize_default());
    let vectors = engine
        .embed_colbert(req.inputs.into_vec(), req.truncate, normalize, &mut bill)
        .await?;
    Ok((bill.cost(), Json(vectors)))
}

/// Cosine similarity of each sentence to the source sentence.
#[utoipa::path(post, path = Route::Similarity.openapi_path(), tag = "embedding",
    request_body = SimilarityRequest,
    security((), ("bearer" = [])),
    responses((status = 200, description = "One score per compared sentence, in order", body = SimilarityResponse), super::openapi::ModelErrors))]
pub async fn similarity(
    State(state): State<AppState>,
    mut bill: Bill,
    ApiJson(req): ApiJson<SimilarityRequest>,
) -> Result<(RequestCost, Json<SimilarityResponse>), Error> {
    let engine = engine(&state)?;
    if req.sentences_to_compare.is_empty() {
        return Err(Error::invalid(
            "empty_input",
            "sentences_to_compare must not be empty",
        ));
    }
    let mut texts = Vec::with_capacity(req.sentences_to_compare.len() + 1);
    texts.push(req.source_sentence);
    texts.extend(req.sentences_to_compare);
    let Embedded { vectors, .. } = engine
        .embed(
            EmbedRequest {
                texts,
                truncate: false,
                normalize: true,
                dimensions: None,
            },
            &mut bill,
        )
        .await?;
    let (source, others) = vectors.split_first().expect("one vector per input");
    let scores = others.iter().map(|v| dot(source, v)).collect();
    Ok((bill.cost(), Json(SimilarityResponse { scores })))
}

/// Cosine similarity of two unit vectors.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::errors::parse_json;

    #[test]
    fn inputs_accept_string_or_list_only() {
        let r: OpenAiRequest = parse_json(br#"{"input": "a"}"#).unwrap();
        assert_eq!(r.input.into_vec(), vec!["a"]);
        let r: OpenAiRequest =
            parse_json(br#"{"input": ["a", "b"], "encoding_format": "base64"}"#).unwrap();
        assert_eq!(r.encoding_format, EncodingFormat::Base64);
        let e = parse_json::<OpenAiRequest>(br#"{"input": [1, 2]}"#).unwrap_err();
        assert!(
            e.message.contains("a string or an array of strings"),
            "{}",
            e.message
        );
        assert!(parse_json::<TeiRequest>(br#"{"inputs": "a", "trunc": true}"#).is_err());
    }

    #[test]
    fn base64_is_little_endian_f32() {
        let EmbeddingValue::Base64(s) = encode(vec![1.0, -2.0], EncodingFormat::Base64) else {
            panic!()
        };
        let bytes = base64::engine::general_purpose::STANDARD.decode(s).unwrap();
        assert_eq!(
            bytes,
            [1.0f32.to_le_bytes(), (-2.0f32).to_le_bytes()].concat()
        );
    }
}
