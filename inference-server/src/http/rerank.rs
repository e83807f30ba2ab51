//! Rerank routes: text-embeddings-inference's `/rerank` and Cohere's / Jina's `/v1/rerank`.
//! Both score every text against the query with the cross-encoder and answer best first.

use axum::extract::State;
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::access_log::RequestId;
use super::embeddings::Usage;
use super::errors::ApiJson;
use super::router::AppState;
use crate::cost::{Bill, RequestCost};
use crate::engine::{RerankEngine, RerankRequest, Reranked};
use crate::error::Error;
use nlu_crds::routes::Route;
use nlu_crds::serve::Task;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TeiRerankRequest {
    #[schema(schema_with = super::openapi::text)]
    pub query: String,
    #[schema(schema_with = super::openapi::texts)]
    pub texts: Vec<String>,
    /// Return the model's logits instead of its scores (the sigmoid of the logits for a
    /// one-label model; see `activation` in `/info`). Default false.
    #[serde(default)]
    pub raw_scores: bool,
    /// Return each text with its score. Default false.
    #[serde(default)]
    pub return_text: bool,
    /// Cut (query, text) pairs longer than the limit instead of refusing them: the longer of
    /// the two loses tokens from its end first. Default false.
    pub truncate: Option<bool>,
}

/// One text's rank in text-embeddings-inference's shape.
#[derive(Debug, Serialize, ToSchema, PartialEq)]
pub struct Rank {
    /// The text's position in the request.
    pub index: usize,
    /// The text, when the request asked for it (`return_text`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    pub score: f32,
}

/// A document: a string, or an object with its text (as Cohere's and Jina's clients may send).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged, expecting = "a string or an object {\"text\": string}")]
pub enum Document {
    Text(String),
    Object(DocumentText),
}

#[derive(Debug, Deserialize, Serialize, ToSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DocumentText {
    pub text: String,
}

impl Document {
    fn into_text(self) -> String {
        match self {
            Document::Text(text) | Document::Object(DocumentText { text }) => text,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CohereRerankRequest {
    /// Accepted for compatibility; the server runs the one model it loaded and names that one
    /// in the response.
    pub model: Option<String>,
    #[schema(schema_with = super::openapi::text)]
    pub query: String,
    #[schema(min_items = 1)]
    pub documents: Vec<Document>,
    /// Answer only the best this many documents. Default: all.
    #[schema(minimum = 1)]
    pub top_n: Option<usize>,
    /// Return each document's text with its score. Default false (as Cohere).
    #[serde(default)]
    pub return_documents: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CohereRerankResponse {
    /// The request's id (its `X-Request-Id`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub model: String,
    /// Best first.
    pub results: Vec<CohereResult>,
    pub usage: Usage,
}

#[derive(Debug, Serialize, ToSchema, PartialEq)]
pub struct CohereResult {
    /// The document's position in the request.
    pub index: usize,
    /// The model's score (the sigmoid of the logit for a one-label model).
    pub relevance_score: f32,
    /// The document, when the request asked for it (`return_documents`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub document: Option<DocumentText>,
}

/// The rerank engine, or why this server has none.
fn engine(state: &AppState) -> Result<&RerankEngine, Error> {
    state.require(Task::Rerank)?;
    state
        .engine()?
        .rerank()
        .ok_or_else(|| Error::internal("the loaded model is not a reranker"))
}

/// Pure: the indices of `scores`, best first (ties keep the request's order), at most `top_n`
/// of them.
pub fn ranking(scores: &[f32], top_n: Option<usize>) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    order.truncate(top_n.unwrap_or(usize::MAX));
    order
}

/// Pure: refuses a `top_n` of 0 (a request for nothing is a mistake, not an empty answer).
pub fn check_top_n(top_n: Option<usize>) -> Result<(), Error> {
    if top_n == Some(0) {
        return Err(Error::invalid(
            "invalid_top_n",
            "top_n is 0; ask for at least 1 document or leave it out for all",
        ));
    }
    Ok(())
}

/// Pure: the ranked answer of the texts scored `scores`, each item made by `item(index, score,
/// text)`, where `text` is `Some` only when the texts are `returned` (kept for the answer).
fn ranked<T>(
    returned: Option<Vec<String>>,
    scores: &[f32],
    top_n: Option<usize>,
    item: impl Fn(usize, f32, Option<String>) -> T,
) -> Vec<T> {
    let mut texts: Vec<Option<String>> = returned
        .map(|texts| texts.into_iter().map(Some).collect())
        .unwrap_or_default();
    ranking(scores, top_n)
        .into_iter()
        .map(|i| item(i, scores[i], texts.get_mut(i).and_then(Option::take)))
        .collect()
}

/// text-embeddings-inference compatible rerank: every text's score against the query, best
/// first.
#[utoipa::path(post, path = Route::Rerank.openapi_path(), tag = "rerank",
    request_body = TeiRerankRequest,
    security((), ("bearer" = [])),
    responses((status = 200, description = "One rank per text, best first", body = Vec<Rank>), super::openapi::ModelErrors))]
pub async fn rerank(
    State(state): State<AppState>,
    mut bill: Bill,
    ApiJson(req): ApiJson<TeiRerankRequest>,
) -> Result<(RequestCost, Json<Vec<Rank>>), Error> {
    let engine = engine(&state)?;
    // Copied only when the answer carries them.
    let returned = req.return_text.then(|| req.texts.clone());
    let Reranked { scores, .. } = engine
        .rerank(
            RerankRequest {
                query: req.query,
                texts: req.texts,
                truncate: req.truncate.unwrap_or(false),
                raw_scores: req.raw_scores,
            },
            &mut bill,
        )
        .await?;
    let ranks = ranked(returned, &scores, None, |index, score, text| Rank {
        index,
        text,
        score,
    });
    Ok((bill.cost(), Json(ranks)))
}

/// Cohere- and Jina-compatible rerank: the best `top_n` documents for the query. Pairs longer
/// than the limit are cut (as theirs are), never refused.
#[utoipa::path(post, path = Route::CohereRerank.openapi_path(), tag = "rerank",
    request_body = CohereRerankRequest,
    security((), ("bearer" = [])),
    responses((status = 200, description = "The best documents, best first", body = CohereRerankResponse), super::openapi::ModelErrors))]
pub async fn cohere_rerank(
    State(state): State<AppState>,
    request_id: Option<Extension<RequestId>>,
    mut bill: Bill,
    ApiJson(req): ApiJson<CohereRerankRequest>,
) -> Result<(RequestCost, Json<CohereRerankResponse>), Error> {
    let engine = engine(&state)?;
    check_top_n(req.top_n)?;
    let texts: Vec<String> = req.documents.into_iter().map(Document::into_text).collect();
    // Copied only when the answer carries them.
    let returned = req.return_documents.then(|| texts.clone());
    let Reranked { scores, tokens } = engine
        .rerank(
            RerankRequest {
                query: req.query,
                texts,
                truncate: true,
                raw_scores: false,
            },
            &mut bill,
        )
        .await?;
    let results = ranked(
        returned,
        &scores,
        req.top_n,
        |index, relevance_score, text| CohereResult {
            index,
            relevance_score,
            document: text.map(|text| DocumentText { text }),
        },
    );
    Ok((
        bill.cost(),
        Json(CohereRerankResponse {
            id: request_id.map(|Extension(RequestId(id))| id),
            model: state.engine()?.info().model.clone(),
            results,
            usage: Usage {
                prompt_tokens: tokens,
                total_tokens: tokens,
            },
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::errors::parse_json;

    #[test]
    fn ranking_is_best_first_stable_and_cut_at_top_n() {
        let scores = [0.1, 0.9, 0.5, 0.9, -2.0];
        assert_eq!(ranking(&scores, None), [1, 3, 2, 0, 4]);
        assert_eq!(ranking(&scores, Some(2)), [1, 3]);
        assert_eq!(ranking(&scores, Some(10)), [1, 3, 2, 0, 4]);
        assert_eq!(ranking(&[], None), Vec::<usize>::new());
        // NaN never panics the sort; it goes first (total order), visibly wrong.
        assert_eq!(ranking(&[0.5, f32::NAN], None), [1, 0]);
    }

    #[test]
    fn top_n_zero_is_refused() {
        assert_eq!(check_top_n(Some(0)).unwrap_err().code, "invalid_top_n");
        assert!(check_top_n(Some(1)).is_ok());
        assert!(check_top_n(None).is_ok());
    }

    #[test]
    fn ranked_items_carry_the_text_only_when_asked() {
        let texts = || vec!["a".to_owned(), "b".to_owned(), "c".to_owned()];
        let rank = |index, score, text| Rank { index, text, score };
        assert_eq!(
            ranked(None, &[0.2, 0.7, 0.1], None, rank),
            [
                Rank {
                    index: 1,
                    text: None,
                    score: 0.7
                },
                Rank {
                    index: 0,
                    text: None,
                    score: 0.2
                },
                Rank {
                    index: 2,
                    text: None,
                    score: 0.1
                },
            ]
        );
        assert_eq!(
            ranked(Some(texts()), &[0.2, 0.7, 0.1], Some(1), rank),
            [Rank {
                index: 1,
                text: Some("b".into()),
                score: 0.7
            }]
        );
        let json = serde_json::to_value(Rank {
            index: 0,
            text: None,
            score: 0.5,
        })
        .unwrap();
        assert_eq!(json, serde_json::json!({"index": 0, "score": 0.5}));
        let json = serde_json::to_value(CohereResult {
            index: 2,
            relevance_score: 0.5,
            document: Some(DocumentText { text: "c".into() }),
        })
        .unwrap();
        assert_eq!(
            json,
            serde_json::json!({"index": 2, "relevance_score": 0.5, "document": {"text": "c"}})
        );
    }

    #[test]
    fn documents_are_strings_or_text_objects() {
        let r: CohereRerankRequest =
            parse_json(br#"{"query": "q", "documents": ["a", {"text": "b"}], "top_n": 1}"#)
                .unwrap();
        let texts: Vec<String> = r.documents.into_iter().map(Document::into_text).collect();
        assert_eq!(texts, ["a", "b"]);
        assert!(!r.return_documents);
        let e =
            parse_json::<CohereRerankRequest>(br#"{"query": "q", "documents": [1]}"#).unwrap_err();
        assert!(e.message.contains("a string or an object"), "{}", e.message);
        let r: TeiRerankRequest =
            parse_json(br#"{"query": "q", "texts": ["a"], "truncate": null}"#).unwrap();
        assert_eq!(
            (r.truncate, r.raw_scores, r.return_text),
            (None, false, false)
        );
        assert!(
            parse_json::<TeiRerankRequest>(br#"{"query": "q", "texts": ["a"], "top_n": 1}"#)
                .is_err()
        );
    }
}
