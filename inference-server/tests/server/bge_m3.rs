//! bge-m3's three outputs through HTTP on the XLM-RoBERTa fixture (`tests/fixtures/rerank/
//! xlmr-m3-tiny`, random weights with bge-m3's heads): dense vectors on `/embed` and
//! `/v1/embeddings`, lexical weights on `/embed_sparse`, multi-vectors on `/embed_colbert`, each
//! against what transformers and FlagEmbedding's formulas gave (`expected.json`); requests for
//! different outputs batched together; and the refusals for a model without the heads.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::harness::{
    cosine, error_code, floats, gte_tiny, read_json, rerank_fixtures, TestServer,
};

/// The fixture's texts with their expected outputs.
fn cases() -> Vec<Value> {
    read_json(rerank_fixtures().join("expected.json"))["texts"]
        .as_array()
        .unwrap()
        .clone()
}

fn texts(cases: &[Value]) -> Vec<&str> {
    cases.iter().map(|c| c["text"].as_str().unwrap()).collect()
}

async fn m3_server() -> TestServer {
    let model = rerank_fixtures().join("xlmr-m3-tiny");
    TestServer::start(&[
        "--model",
        &model.display().to_string(),
        "--task",
        "embedding",
    ])
    .await
}

fn assert_vector(got: &Value, want: &Value, what: &str) {
    let (got, want) = (floats(got), floats(want));
    assert_eq!(got.len(), want.len(), "{what}: length");
    let c = cosine(&got, &want);
    assert!(c > 0.9999, "{what}: cosine {c}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dense_sparse_and_multi_vector_match_the_reference() {
    let server = m3_server().await;
    let cases = cases();
    let inputs = texts(&cases);

    let (status, info) = server.get("/info").await;
    assert_eq!(status, 200, "{info}");
    let info: Value = serde_json::from_str(&info).unwrap();
    assert_eq!(
        (&info["sparse"], &info["colbert_dims"], &info["pooling"]),
        (&json!(true), &json!(32), &json!("cls")),
        "{info}"
    );

    // The last text is longer than the model's 512 tokens, where the reference cut it.
    let tei = json!({ "inputs": inputs, "truncate": true });
    let (status, dense) = server.post("/embed", &tei).await;
    assert_eq!(status, 200, "{dense}");
    let (status, sparse) = server.post("/embed_sparse", &tei).await;
    assert_eq!(status, 200, "{sparse}");
    let (status, colbert) = server.post("/embed_colbert", &tei).await;
    assert_eq!(status, 200, "{colbert}");
    // OpenAI's route never truncates: the texts that fit.
    let fit = &inputs[..inputs.len() - 1];
    let (status, openai) = server
        .post("/v1/embeddings", &json!({ "input": fit }))
        .await;
    assert_eq!(status, 200, "{openai}");

    for (i, case) in cases.iter().enumerate() {
        let text = &case["text"];
        assert_vector(&dense[i], &case["cls"], &format!("/embed of {text}"));
        if i < fit.len() {
            assert_vector(
                &openai["data"][i]["embedding"],
                &case["cls"],
                &format!("/v1/embeddings of {text}"),
            );
        }
        assert_sparse(&sparse[i], &case["sparse"], &format!("{text}"));
        let (got, want) = (
            colbert[i].as_array().unwrap(),
            case["colbert"].as_array().unwrap(),
        );
        assert_eq!(got.len(), want.len(), "vectors of {text}");
        for (j, (g, w)) in got.iter().zip(want).enumerate() {
            for (x, y) in floats(g).iter().zip(floats(w)) {
                assert!((x - y).abs() < 1e-4, "vector {j} of {text}: {g} vs {w}");
            }
        }
    }
}

/// `/embed_sparse` answers TEI's shape: `{"index", "value"}` ascending by token id, with the
/// reference's ids exactly and weights within 1e-4.
fn assert_sparse(got: &Value, want: &Value, text: &str) {
    let want: BTreeMap<u64, f64> = want
        .as_object()
        .unwrap()
        .iter()
        .map(|(id, w)| (id.parse().unwrap(), w.as_f64().unwrap()))
        .collect();
    let got: Vec<(u64, f64)> = got
        .as_array()
        .unwrap_or_else(|| panic!("sparse of {text}: {got}"))
        .iter()
        .map(|v| {
            assert_eq!(v.as_object().unwrap().len(), 2, "{v}");
            (v["index"].as_u64().unwrap(), v["value"].as_f64().unwrap())
        })
        .collect();
    let ids: Vec<u64> = got.iter().map(|&(id, _)| id).collect();
    assert_eq!(
        ids,
        want.keys().copied().collect::<Vec<_>>(),
        "sparse ids of {text}"
    );
    for (id, w) in got {
        assert!(
            (w - want[&id]).abs() < 1e-4,
            "weight of {id} in {text}: {w} vs {}",
            want[&id]
        );
    }
}

/// Every number in `v`, depth first.
fn numbers(v: &Value) -> Vec<f64> {
    match v {
        Value::Number(n) => vec![n.as_f64().unwrap()],
        Value::Array(items) => items.iter().flat_map(numbers).collect(),
        Value::Object(fields) => fields.values().flat_map(numbers).collect(),
        _ => Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_for_different_outputs_share_batches() {
    let server = m3_server().await;
    let cases = cases();
    // Each request alone, then all at once: the batcher may run them in one forward, and each
    // must still get only its own output, the same as alone.
    let requests: Vec<(&str, Value)> = texts(&cases[..4])
        .into_iter()
        .flat_map(|text| {
            [
                ("/embed", json!({ "inputs": text })),
                ("/embed_sparse", json!({ "inputs": text })),
                (
                    "/embed_colbert",
                    json!({ "inputs": text, "normalize": false }),
                ),
            ]
        })
        .collect();
    let mut alone = Vec::new();
    for (path, body) in &requests {
        alone.push(server.post(path, body).await);
    }
    let together =
        futures::future::join_all(requests.iter().map(|(path, body)| server.post(path, body)))
            .await;
    for (((path, body), alone), together) in requests.iter().zip(&alone).zip(&together) {
        assert_eq!(alone.0, 200, "{path} {body}: {}", alone.1);
        assert_eq!(together.0, 200, "{path} {body}: {}", together.1);
        let (a, b) = (numbers(&alone.1), numbers(&together.1));
        assert_eq!(a.len(), b.len(), "{path} {body}");
        assert!(
            a.iter().zip(&b).all(|(x, y)| (x - y).abs() < 1e-5),
            "{path} {body}: {} vs {}",
            alone.1,
            together.1
        );
    }
    // `"normalize": false` leaves the multi-vectors as the head gives them.
    let raw = floats(&alone[2].1[0][0]);
    let norm = raw.iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!((norm - 1.0).abs() > 1e-3, "{raw:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_without_the_heads_refuses_their_routes() {
    let server = TestServer::start(&["--model", &gte_tiny(), "--task", "embedding"]).await;
    let (_, info) = server.get("/info").await;
    let info: Value = serde_json::from_str(&info).unwrap();
    assert_eq!(info["sparse"], json!(false), "{info}");
    assert!(info.get("colbert_dims").is_none(), "{info}");
    for path in ["/embed_sparse", "/embed_colbert"] {
        let (status, body) = server.post(path, &json!({ "inputs": "北京" })).await;
        assert_eq!(status, 404, "{path}: {body}");
        assert_eq!(error_code(&body), "not_found");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("bge-m3"),
            "{body}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_sparse_and_multi_vector_requests_are_refused() {
    let server = m3_server().await;
    let long = "很长的句子".repeat(300);
    for path in ["/embed_sparse", "/embed_colbert"] {
        for (body, status, code) in [
            (json!({ "inputs": [] }), 400, "empty_input"),
            (json!({ "inputs": ["a", " "] }), 400, "empty_input"),
            (
                json!({ "inputs": "a", "dimensions": 8 }),
                400,
                "invalid_request",
            ),
            (json!({ "inputs": long }), 413, "too_large"),
        ] {
            let (got, answer) = server.post(path, &body).await;
            assert_eq!(got, status, "{path} {body}: {answer}");
            assert_eq!(error_code(&answer), code, "{path} {body}");
        }
        let (got, answer) = server
            .post(path, &json!({ "inputs": long, "truncate": true }))
            .await;
        assert_eq!(got, 200, "{path}: {answer}");
    }
}
