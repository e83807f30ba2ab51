//! `/rerank` (text-embeddings-inference) and `/v1/rerank` (Cohere, Jina) against the scores
//! transformers gives for the fixture rerankers (`tests/fixtures/rerank/expected.json`), and
//! every refusal of a bad request.

use serde_json::{json, Value};

use super::harness::{error_code, gte_tiny, read_json, rerank_fixtures, TestServer};

fn reranker(name: &str) -> String {
    rerank_fixtures().join(name).display().to_string()
}

/// The fixture's pairs: (query, passage, the family's expected ids, logit and sigmoid).
struct Pair {
    query: String,
    passage: String,
    tokens: u64,
    logit: f64,
    sigmoid: f64,
}

fn pairs(family: &str) -> Vec<Pair> {
    let expected = read_json(rerank_fixtures().join("expected.json"));
    assert_eq!(
        expected["max_length"], 512,
        "the server's limit is the model's 512"
    );
    expected["pairs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|case| Pair {
            query: case["query"].as_str().unwrap().to_owned(),
            passage: case["passage"].as_str().unwrap().to_owned(),
            tokens: case[family]["ids"].as_array().unwrap().len() as u64,
            logit: case[family]["logit"].as_f64().unwrap(),
            sigmoid: case[family]["sigmoid"].as_f64().unwrap(),
        })
        .collect()
}

/// The fixture's pairs grouped by query, in order: (query, indices into `pairs`).
fn by_query(pairs: &[Pair]) -> Vec<(String, Vec<usize>)> {
    let mut groups: Vec<(String, Vec<usize>)> = Vec::new();
    for (i, p) in pairs.iter().enumerate() {
        match groups.iter_mut().find(|(q, _)| *q == p.query) {
            Some((_, members)) => members.push(i),
            None => groups.push((p.query.clone(), vec![i])),
        }
    }
    groups
}

fn close(got: &Value, want: f64, what: &str) {
    let got = got
        .as_f64()
        .unwrap_or_else(|| panic!("{what}: not a number: {got}"));
    assert!((got - want).abs() < 1e-4, "{what}: {got} vs {want}");
}

/// Checks that `items` are ranked best first by `field`, that each one's index is a distinct
/// text of the request, and returns the indices in answer order.
fn ranked_indices(items: &Value, field: &str) -> Vec<usize> {
    let items = items
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {items}"));
    let scores: Vec<f64> = items.iter().map(|r| r[field].as_f64().unwrap()).collect();
    assert!(
        scores.windows(2).all(|w| w[0] >= w[1]),
        "not best first: {scores:?}"
    );
    let indices: Vec<usize> = items
        .iter()
        .map(|r| r["index"].as_u64().unwrap() as usize)
        .collect();
    let mut distinct = indices.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), indices.len(), "{indices:?}");
    indices
}

/// POSTs and returns status, body and `X-Request-Cost`.
async fn post_with_cost(
    server: &TestServer,
    path: &str,
    body: &Value,
) -> (u16, Value, Option<u64>) {
    let r = server
        .client
        .post(server.url(path))
        .json(body)
        .send()
        .await
        .unwrap();
    let cost = r
        .headers()
        .get("x-request-cost")
        .map(|v| v.to_str().unwrap().parse().unwrap());
    (r.status().as_u16(), r.json().await.unwrap(), cost)
}

/// Every fixture pair through both routes of a server of `model`, against `family`'s
/// transformers scores.
async fn scores_match_transformers(model: &str, family: &str) {
    let server = TestServer::start(&["--model", &reranker(model), "--task", "rerank"]).await;
    let pairs = pairs(family);
    let long = pairs
        .iter()
        .position(|p| p.tokens == 512)
        .expect("one pair fills the limit");
    for (query, members) in by_query(&pairs) {
        let texts: Vec<&str> = members.iter().map(|&i| pairs[i].passage.as_str()).collect();
        let truncate = members.contains(&long);
        let tokens: u64 = members.iter().map(|&i| pairs[i].tokens).sum();

        // TEI: scores (sigmoid), best first, each text's own.
        let request = json!({"query": query, "texts": texts, "truncate": truncate});
        let (status, body, cost) = post_with_cost(&server, "/rerank", &request).await;
        assert_eq!(status, 200, "{family} {query}: {body}");
        assert_eq!(
            cost,
            Some(tokens),
            "{family} {query}: the pairs' tokens are charged"
        );
        let order = ranked_indices(&body, "score");
        assert_eq!(order.len(), members.len());
        for (rank, &index) in body.as_array().unwrap().iter().zip(&order) {
            let pair = &pairs[members[index]];
            close(
                &rank["score"],
                pair.sigmoid,
                &format!("{family} score of {}", pair.passage),
            );
            assert!(rank.get("text").is_none(), "{rank}");
        }

        // Raw scores are the logits, and the text comes back when asked for.
        let request = json!({"query": query, "texts": texts, "truncate": truncate,
            "raw_scores": true, "return_text": true});
        let (status, body) = server.post("/rerank", &request).await;
        assert_eq!(status, 200, "{body}");
        for rank in body.as_array().unwrap() {
            let index = rank["index"].as_u64().unwrap() as usize;
            let pair = &pairs[members[index]];
            close(
                &rank["score"],
                pair.logit,
                &format!("{family} logit of {}", pair.passage),
            );
            assert_eq!(rank["text"], pair.passage.as_str());
        }
        ranked_indices(&body, "score");

        // Cohere / Jina: the same scores, cut pairs without asking.
        let request = json!({"model": "anything", "query": query, "documents": texts});
        let (status, body, cost) = post_with_cost(&server, "/v1/rerank", &request).await;
        assert_eq!(status, 200, "{family} {query}: {body}");
        assert_eq!(cost, Some(tokens));
        assert_eq!(body["usage"]["total_tokens"], tokens);
        assert_eq!(body["model"], model, "the served model, not the request's");
        assert!(
            body["id"].as_str().is_some_and(|id| !id.is_empty()),
            "{body}"
        );
        let results = &body["results"];
        assert_eq!(ranked_indices(results, "relevance_score"), order);
        for result in results.as_array().unwrap() {
            let pair = &pairs[members[result["index"].as_u64().unwrap() as usize]];
            close(&result["relevance_score"], pair.sigmoid, &pair.passage);
            assert!(result.get("document").is_none(), "{result}");
        }
    }

    // A long pair is refused unless cut, naming the flag.
    let (status, body) = server
        .post(
            "/rerank",
            &json!({"query": pairs[long].query, "texts": [pairs[long].passage]}),
        )
        .await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(error_code(&body), "too_large");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("--max-input-length") && message.contains("truncate"),
        "{message}"
    );

    // top_n keeps the best, return_documents brings their text; documents may be objects.
    let group = &by_query(&pairs)[1];
    let texts: Vec<Value> = group
        .1
        .iter()
        .map(|&i| json!({"text": pairs[i].passage}))
        .collect();
    let (status, body) = server
        .post(
            "/v1/rerank",
            &json!({"query": group.0, "documents": texts, "top_n": 1,
            "return_documents": true}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let results = body["results"].as_array().unwrap();
    assert_eq!(results.len(), 1, "{body}");
    let best = group
        .1
        .iter()
        .copied()
        .enumerate()
        .max_by(|a, b| pairs[a.1].sigmoid.total_cmp(&pairs[b.1].sigmoid))
        .unwrap();
    assert_eq!(results[0]["index"], best.0);
    assert_eq!(
        results[0]["document"],
        json!({"text": pairs[best.1].passage})
    );
    // More than there are: all of them.
    let (status, body) = server
        .post(
            "/v1/rerank",
            &json!({"query": group.0, "documents": texts, "top_n": 99}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["results"].as_array().unwrap().len(), texts.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bert_reranker_scores_match_transformers() {
    scores_match_transformers("bert-reranker-tiny", "bert").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xlmr_reranker_scores_match_transformers() {
    scores_match_transformers("xlmr-reranker-tiny", "xlmr").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn info_and_models_describe_the_reranker() {
    let server = TestServer::start(&[
        "--model",
        &reranker("xlmr-reranker-tiny"),
        "--task",
        "rerank",
        "--served-model-name",
        "BAAI/bge-reranker-tiny",
    ])
    .await;
    let (status, info) = server.get("/info").await;
    assert_eq!(status, 200);
    let info: Value = serde_json::from_str(&info).unwrap();
    assert_eq!(info["task"], "rerank");
    assert_eq!(info["model"], "BAAI/bge-reranker-tiny");
    assert_eq!(info["max_input_length"], 512);
    assert_eq!(info["activation"], "sigmoid");
    assert!(info.get("pooling").is_none(), "{info}");
    let (status, models) = server.get("/v1/models").await;
    assert_eq!(status, 200);
    let models: Value = serde_json::from_str(&models).unwrap();
    assert_eq!(models["data"][0]["id"], "BAAI/bge-reranker-tiny");
    // The other tasks' routes are not this server's.
    let (status, body) = server.post("/embed", &json!({"inputs": "a"})).await;
    assert_eq!(status, 404, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("--task embedding"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_rerank_requests_get_clear_refusals() {
    let server = TestServer::start(&[
        "--model",
        &reranker("bert-reranker-tiny"),
        "--task",
        "rerank",
        "--max-batch-inputs",
        "2",
        "--max-request-cost",
        "60",
    ])
    .await;
    let cases = [
        (
            "/rerank",
            json!({"query": "", "texts": ["a"]}),
            400,
            "empty_input",
        ),
        (
            "/rerank",
            json!({"query": " ", "texts": ["a"]}),
            400,
            "empty_input",
        ),
        (
            "/rerank",
            json!({"query": "q", "texts": []}),
            400,
            "empty_input",
        ),
        (
            "/rerank",
            json!({"query": "q", "texts": ["a", ""]}),
            400,
            "empty_input",
        ),
        (
            "/rerank",
            json!({"query": "q", "texts": ["a", "b", "c"]}),
            413,
            "too_large",
        ),
        ("/rerank", json!({"query": "q"}), 400, "invalid_request"),
        (
            "/rerank",
            json!({"query": "q", "texts": ["a"], "top_n": 1}),
            400,
            "invalid_request",
        ),
        (
            "/v1/rerank",
            json!({"query": "", "documents": ["a"]}),
            400,
            "empty_input",
        ),
        (
            "/v1/rerank",
            json!({"query": "q", "documents": []}),
            400,
            "empty_input",
        ),
        (
            "/v1/rerank",
            json!({"query": "q", "documents": ["a", "b", "c"]}),
            413,
            "too_large",
        ),
        (
            "/v1/rerank",
            json!({"query": "q", "documents": ["a"], "top_n": 0}),
            400,
            "invalid_top_n",
        ),
        (
            "/v1/rerank",
            json!({"query": "q", "documents": ["a"], "top_n": -1}),
            400,
            "invalid_request",
        ),
        (
            "/v1/rerank",
            json!({"query": "q", "documents": [{"txt": "a"}]}),
            400,
            "invalid_request",
        ),
        // 2 pairs of about 40 tokens each: over the request's cost limit of 60.
        (
            "/rerank",
            json!({"query": "北京的天气怎么样", "texts": ["今天北京的天气很好，阳光明媚，适合出门。", "这家公司发布了开源软件，很多人在使用。"]}),
            413,
            "request_too_costly",
        ),
    ];
    for (path, body, want_status, want_code) in cases {
        let (status, answer) = server.post(path, &body).await;
        assert_eq!(status, want_status, "{path} {body}: {answer}");
        assert_eq!(error_code(&answer), want_code, "{path} {body}: {answer}");
    }
    let (status, body) = server
        .post("/rerank", &json!({"query": "q", "texts": ["a", "b", "c"]}))
        .await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("--max-batch-inputs"),
        "{status} {body}"
    );
    // Within every limit: served.
    let (status, body) = server
        .post("/rerank", &json!({"query": "q", "texts": ["a", "b"]}))
        .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embedding_server_has_no_rerank() {
    let server = TestServer::start(&["--model", &gte_tiny(), "--task", "embedding"]).await;
    let (status, body) = server
        .post("/rerank", &json!({"query": "q", "texts": ["a"]}))
        .await;
    assert_eq!(status, 404, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("--task rerank"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embedding_model_is_refused_as_a_reranker() {
    // No classification head: the server does not become ready and says why.
    let server =
        TestServer::spawn(&["--model", &reranker("xlmr-m3-tiny"), "--task", "rerank"]).await;
    let result = server.finished().await;
    let err = result.expect_err("loading fails");
    assert!(format!("{err:#}").contains("num_labels 1"), "{err:#}");
}
