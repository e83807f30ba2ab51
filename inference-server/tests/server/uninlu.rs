//! `/api/predict` against the outputs of the original ModelScope pipeline.

use serde_json::{json, Value};

use super::harness::{error_code, fixtures, read_json, uninlu_tiny, TestServer};

fn cases() -> Vec<Value> {
    read_json(fixtures().join("uninlu-tiny/expected.json"))
        .as_array()
        .unwrap()
        .clone()
}

async fn uninlu_server(extra: &[&str]) -> TestServer {
    let model = uninlu_tiny();
    let mut args = vec!["--model", model.as_str(), "--task", "uninlu"];
    args.extend_from_slice(extra);
    TestServer::start(&args).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fixture_case_matches_exactly() {
    let server = uninlu_server(&[]).await;
    for case in cases() {
        let (status, body) = server
            .post(
                "/api/predict",
                &json!({ "text": case["text"], "schema": case["schema"] }),
            )
            .await;
        assert_eq!(status, 200, "{}: {body}", case["name"]);
        assert_eq!(body["output"], case["output"], "case {}", case["name"]);
        let text = case["text"].as_str().unwrap();
        match text.split_once('|') {
            // Labels are spans of the output that are exactly one of the listed labels.
            Some((list, _)) => {
                let labels: Vec<&str> = list.split(',').collect();
                for label in body["labels"].as_array().expect("labels for label|text input") {
                    assert!(labels.contains(&label.as_str().unwrap()), "{label} not in {list}");
                }
            }
            None => assert!(body.get("labels").is_none(), "no labels for plain text"),
        }
    }
    // `input` instead of `text`, and the schema as a JSON string, as the original accepts them.
    let case = &cases()[0];
    let (status, body) = server
        .post(
            "/api/predict",
            &json!({ "input": case["text"], "schema": case["schema"].to_string() }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["output"], case["output"]);

    let (_, info) = server.get("/info").await;
    let info: Value = serde_json::from_str(&info).unwrap();
    assert_eq!(info["task"], "uninlu");
    let (_, metrics) = server.get("/metrics").await;
    assert!(metrics.contains("nlu_uninlu_prompts_count"), "{metrics}");
}

/// 32 requests at once with different schemas give what sequential runs give (their prompts
/// share batches on the model thread).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_requests_match_sequential() {
    let server = std::sync::Arc::new(uninlu_server(&["--max-wait-millis", "5"]).await);
    let cases = cases();
    let bodies: Vec<Value> = (0..32)
        .map(|i| {
            let case = &cases[i % cases.len()];
            json!({ "text": case["text"], "schema": case["schema"] })
        })
        .collect();
    let mut sequential = Vec::new();
    for body in &bodies {
        sequential.push(server.post("/api/predict", body).await);
    }
    let tasks: Vec<_> = bodies
        .iter()
        .cloned()
        .map(|body| {
            let server = server.clone();
            tokio::spawn(async move { server.post("/api/predict", &body).await })
        })
        .collect();
    for (i, task) in tasks.into_iter().enumerate() {
        let got = task.await.unwrap();
        assert_eq!(got.0, 200, "{}", got.1);
        assert_eq!(got, sequential[i], "request {i}");
        assert_eq!(got.1["output"], cases[i % cases.len()]["output"]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_and_bad_input_are_client_errors() {
    let server = uninlu_server(&[
        "--max-text-chars",
        "200",
        "--max-schema-depth",
        "2",
        "--max-schema-keys",
        "6",
        "--max-prompts",
        "3",
    ])
    .await;
    let ner = json!({ "人物": null });
    let checks = [
        (json!({ "schema": ner }), 400, "invalid_request"),
        (json!({ "text": 12, "schema": ner }), 400, "invalid_request"),
        (json!({ "text": "", "schema": ner }), 400, "empty_input"),
        (
            json!({ "text": "谷爱凌", "input": "x", "schema": ner }),
            400,
            "invalid_request",
        ),
        (json!({ "text": "谷爱凌" }), 400, "invalid_request"),
        (
            json!({ "text": "谷爱凌", "schema": ner, "extra": 1 }),
            400,
            "invalid_request",
        ),
        (
            json!({ "text": "谷爱凌", "schema": { "人物": {} } }),
            400,
            "invalid_schema",
        ),
        (json!({ "text": "谷爱凌", "schema": [1] }), 400, "invalid_schema"),
        (
            json!({ "text": "谷爱凌", "schema": "{not json" }),
            400,
            "invalid_schema",
        ),
        (json!({ "text": "长".repeat(201), "schema": ner }), 413, "text_too_long"),
        (
            json!({ "text": "谷爱凌", "schema": { "a": { "b": { "c": null } } } }),
            422,
            "schema_too_deep",
        ),
        (
            json!({ "text": "谷爱凌", "schema": { "a": null, "b": null, "c": null, "d": null, "e": null, "f": null, "g": null } }),
            422,
            "schema_too_large",
        ),
        (
            json!({ "text": "谷爱凌", "schema": { "a": null, "b": null, "c": null, "d": null } }),
            422,
            "too_many_prompts",
        ),
    ];
    for (body, status, code) in checks {
        let (got, answer) = server.post("/api/predict", &body).await;
        assert_eq!((got, error_code(&answer)), (status, code), "{body}: {answer}");
    }
    // The embedding routes are not served by a UniNLU server.
    let (status, body) = server.post("/v1/embeddings", &json!({ "input": "a" })).await;
    assert_eq!((status, error_code(&body)), (404, "not_found"));
}
