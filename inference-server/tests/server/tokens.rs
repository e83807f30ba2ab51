//! `/tokenize` and `/decode` against the fixture's ids (from the original tokenizer).

use serde_json::{json, Value};

use super::harness::{error_code, fixtures, gte_tiny, read_json, TestServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_match_the_reference_and_decode_back() {
    let expected = read_json(fixtures().join("gte-tiny/expected.json"));
    let server = TestServer::start(&["--model", &gte_tiny(), "--task", "embedding"]).await;
    let case = &expected["cases"][3];
    let text = case["text"].as_str().unwrap();
    assert_eq!(text, "2022年北京冬奥会在北京举行");

    let (status, body) = server
        .post("/tokenize", &json!({ "inputs": [text, text] }))
        .await;
    assert_eq!(status, 200, "{body}");
    let tokens = body[0].as_array().unwrap();
    let ids: Vec<&Value> = tokens.iter().map(|t| &t["id"]).collect();
    assert_eq!(
        ids,
        case["ids"].as_array().unwrap().iter().collect::<Vec<_>>()
    );
    assert_eq!(body[1], body[0]);
    assert_eq!(
        tokens[0],
        json!({"id": 101, "text": "[CLS]", "special": true, "start": null, "stop": null})
    );
    // Spans are code points of the input: "2022" is one token, then one per character.
    assert_eq!(
        tokens[1],
        json!({"id": 10550, "text": "2022", "special": false, "start": 0, "stop": 4})
    );
    assert_eq!(
        tokens[2],
        json!({"id": 2399, "text": "年", "special": false, "start": 4, "stop": 5})
    );
    assert_eq!(tokens.last().unwrap()["text"], "[SEP]");

    let (status, bare) = server
        .post(
            "/tokenize",
            &json!({ "inputs": text, "add_special_tokens": false }),
        )
        .await;
    assert_eq!(status, 200, "{bare}");
    assert_eq!(bare[0].as_array().unwrap()[..], tokens[1..tokens.len() - 1]);

    // Over the limit: refused as /embed refuses it, unless cut.
    let long = "长".repeat(600);
    let (status, body) = server.post("/tokenize", &json!({ "inputs": long })).await;
    assert_eq!(status, 413, "{body}");
    let (status, body) = server
        .post("/tokenize", &json!({ "inputs": long, "truncate": true }))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body[0].as_array().unwrap().len(), 512);

    let (status, body) = server.post("/decode", &json!({ "ids": case["ids"] })).await;
    assert_eq!(status, 200, "{body}");
    // BERT's WordPiece decoder puts a space between words, as the Python tokenizers do.
    assert_eq!(body, json!(["2022 年 北 京 冬 奥 会 在 北 京 举 行"]));
    let (status, body) = server
        .post(
            "/decode",
            &json!({ "ids": [[101, 10550, 102], [2399]], "skip_special_tokens": false }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!(["[CLS] 2022 [SEP]", "年"]));

    for (bad, code) in [
        (json!({ "ids": [] }), "empty_input"),
        (json!({ "ids": [[1], []] }), "empty_input"),
        (json!({ "ids": [4_000_000_000u32] }), "invalid_input"),
        (json!({ "ids": [-1] }), "invalid_request"),
    ] {
        let (status, body) = server.post("/decode", &bad).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert_eq!(error_code(&body), code, "{bad}");
    }
    server.stop().await.unwrap();
}
