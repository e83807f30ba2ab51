//! Bad input gets a 4xx with `{"error": {"code", "message"}}`, never a 500.

use serde_json::json;

use super::harness::{error_code, gte_tiny, TestServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_embedding_requests_are_client_errors() {
    let server = TestServer::start(&[
        "--model",
        &gte_tiny(),
        "--task",
        "embedding",
        "--max-input-length",
        "16",
        "--max-batch-inputs",
        "4",
        "--max-body-bytes",
        "4096",
    ])
    .await;
    let long = "长".repeat(40);

    let cases = [
        ("/v1/embeddings", b"{".to_vec(), 400, "invalid_json"),
        ("/v1/embeddings", b"".to_vec(), 400, "invalid_json"),
        ("/v1/embeddings", b"\xff\xfe{}".to_vec(), 400, "invalid_utf8"),
        ("/v1/embeddings", br#"{"input": 5}"#.to_vec(), 400, "invalid_request"),
        (
            "/v1/embeddings",
            br#"{"input": [1, 2]}"#.to_vec(),
            400,
            "invalid_request",
        ),
        ("/v1/embeddings", br#"{"inputs": "a"}"#.to_vec(), 400, "invalid_request"),
        (
            "/v1/embeddings",
            br#"{"input": "a", "encoding_format": "int8"}"#.to_vec(),
            400,
            "invalid_request",
        ),
        ("/v1/embeddings", br#"{"input": []}"#.to_vec(), 400, "empty_input"),
        (
            "/v1/embeddings",
            br#"{"input": ["a", ""]}"#.to_vec(),
            400,
            "empty_input",
        ),
        (
            "/v1/embeddings",
            br#"{"input": ["a", "b", "c", "d", "e"]}"#.to_vec(),
            413,
            "too_large",
        ),
        (
            "/embed",
            br#"{"inputs": "a", "truncat": true}"#.to_vec(),
            400,
            "invalid_request",
        ),
        (
            "/embed",
            br#"{"inputs": "a", "normalize": "yes"}"#.to_vec(),
            400,
            "invalid_request",
        ),
        ("/embed", br#"[1, 2]"#.to_vec(), 400, "invalid_request"),
        (
            "/similarity",
            br#"{"source_sentence": "a", "sentences_to_compare": []}"#.to_vec(),
            400,
            "empty_input",
        ),
        (
            "/similarity",
            br#"{"source_sentence": "a"}"#.to_vec(),
            400,
            "invalid_request",
        ),
        ("/embed", vec![b' '; 5000], 413, "too_large"),
    ];
    for (route, body, status, code) in cases {
        let shown = String::from_utf8_lossy(&body).chars().take(60).collect::<String>();
        let (got, answer) = server.post_raw(route, body).await;
        assert_eq!((got, error_code(&answer)), (status, code), "{route} {shown}: {answer}");
    }

    // Too long: 413 naming the limit, unless the request asks to truncate.
    let (status, body) = server.post("/v1/embeddings", &json!({ "input": long })).await;
    assert_eq!(status, 413, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("limit is 16") && message.contains("--max-input-length"),
        "{message}"
    );
    let (status, body) = server
        .post("/embed", &json!({ "inputs": long, "truncate": true }))
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, truncated) = server.post("/embed", &json!({ "inputs": "长".repeat(14) })).await;
    assert_eq!(status, 200);
    assert_eq!(body, truncated, "truncation keeps [CLS] + 14 tokens + [SEP]");

    // Routes of the other task, unknown routes and methods.
    let (status, body) = server
        .post("/api/predict", &json!({ "text": "a", "schema": { "x": null } }))
        .await;
    assert_eq!((status, error_code(&body)), (404, "not_found"));
    assert!(body["error"]["message"].as_str().unwrap().contains("--task uninlu"));
    let (status, body) = server.post("/nope", &json!({})).await;
    assert_eq!((status, error_code(&body)), (404, "not_found"));
    let r = server.client.get(server.url("/v1/embeddings")).send().await.unwrap();
    assert_eq!(r.status(), 405);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(error_code(&body), "method_not_allowed");

    // Still healthy and serving after all of that.
    let (status, _) = server.post("/embed", &json!({ "inputs": "好" })).await;
    assert_eq!(status, 200);
    let (_, metrics) = server.get("/metrics").await;
    assert!(!metrics.contains("status=\"500\""), "no request ended in a 500");
}
