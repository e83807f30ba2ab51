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
                for label in body["labels"]
                    .as_array()
                    .expect("labels for label|text input")
                {
                    assert!(
                        labels.contains(&label.as_str().unwrap()),
                        "{label} not in {list}"
                    );
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
        (
            json!({ "text": "谷爱凌", "schema": [1] }),
            400,
            "invalid_schema",
        ),
        (
            json!({ "text": "谷爱凌", "schema": "{not json" }),
            400,
            "invalid_schema",
        ),
        (
            json!({ "text": "长".repeat(201), "schema": ner }),
            413,
            "text_too_long",
        ),
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
        assert_eq!(
            (got, error_code(&answer)),
            (status, code),
            "{body}: {answer}"
        );
    }
    // The embedding routes are not served by a UniNLU server.
    let (status, body) = server
        .post("/v1/embeddings", &json!({ "input": "a" }))
        .await;
    assert_eq!((status, error_code(&body)), (404, "not_found"));
}

/// `"scores": true` adds to each span the product of the sigmoids of its start and end logits;
/// checked against the original pipeline's own merged logits (the fixture's trace), and the
/// output is otherwise the original's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scores_come_from_the_original_logits() {
    let server = uninlu_server(&[]).await;
    let sigmoid = |x: f64| 1.0 / (1.0 + (-x).exp());
    let mut checked = 0;
    for case in cases() {
        let (status, body) = server
            .post(
                "/api/predict",
                &json!({ "text": case["text"], "schema": case["schema"], "scores": true }),
            )
            .await;
        assert_eq!(status, 200, "{}: {body}", case["name"]);
        let offsets: Vec<(u64, u64)> = case["text_offsets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| (o[0].as_u64().unwrap(), o[1].as_u64().unwrap()))
            .collect();
        let mut stripped = body["output"].clone();
        for (chain, want_chain) in body["output"]
            .as_array()
            .unwrap()
            .iter()
            .zip(stripped.as_array_mut().unwrap())
        {
            // The prompt of an item: "type: span, " per ancestor, then "type: " (spec/uninlu.md).
            let mut prefix = String::new();
            for (item, want_item) in chain
                .as_array()
                .unwrap()
                .iter()
                .zip(want_chain.as_array_mut().unwrap())
            {
                want_item.as_object_mut().unwrap().remove("score");
                let kind = item["type"].as_str().unwrap();
                let prompt = format!("{prefix}{kind}: ");
                let trace = case["trace"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|t| t["prompt"] == prompt.as_str())
                    .unwrap_or_else(|| panic!("{}: no trace for {prompt:?}", case["name"]));
                let logits = |what: &str| -> Vec<f64> {
                    trace[what]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|x| x.as_f64().unwrap())
                        .collect()
                };
                let (head, tail) = (logits("head"), logits("tail"));
                let (start, end) = (
                    item["offset"][0].as_u64().unwrap(),
                    item["offset"][1].as_u64().unwrap(),
                );
                // The span's start token opens above 0.5 and its end is the first token after
                // it that closes above 0.5 (spec/uninlu.md).
                let want = (0..offsets.len())
                    .filter(|&h| head[h] > 0.5 && offsets[h].0 == start)
                    .find_map(|h| {
                        let t = (h..offsets.len()).find(|&t| tail[t] > 0.5)?;
                        (offsets[t].1 == end).then(|| sigmoid(head[h]) * sigmoid(tail[t]))
                    })
                    .unwrap_or_else(|| panic!("{}: {item} is not in the trace", case["name"]));
                let got = item["score"]
                    .as_f64()
                    .unwrap_or_else(|| panic!("no score: {item}"));
                assert!(
                    (got - want).abs() < 1e-3,
                    "{}: {item}: want {want}",
                    case["name"]
                );
                checked += 1;
                prefix.push_str(&format!("{kind}: {}, ", item["span"].as_str().unwrap()));
            }
        }
        assert_eq!(stripped, case["output"], "{}", case["name"]);
    }
    assert!(checked > 10, "{checked} spans checked");
    server.stop().await.unwrap();
}

/// The second seed app's calls: each task type answers what `/api/predict` answers for its
/// preset's text and schema.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_app_task_types_answer_like_api_predict() {
    let dir = tempfile::tempdir().unwrap();
    let presets = dir.path().join("presets.json");
    std::fs::write(
        &presets,
        r#"{"topic": {"schema": {"主题": null}, "labels": ["体育", "财经"]}}"#,
    )
    .unwrap();
    let server = uninlu_server(&["--task-presets", presets.to_str().unwrap()]).await;
    let text = "2022年北京冬奥会在北京举行";
    for (task_type, pipeline_text, schema) in [
        (
            "ner",
            text.to_owned(),
            json!({"人物": null, "地理位置": null, "组织机构": null}),
        ),
        (
            "sentiment",
            format!("正向,负向|{text}"),
            json!({"情感分类": null}),
        ),
        (
            "classification",
            format!("故事,文化,娱乐,体育,财经,房产,汽车,教育,科技,军事,旅游,国际,证券,农业,电竞,民生|{text}"),
            json!({"分类": null}),
        ),
        ("topic", format!("体育,财经|{text}"), json!({"主题": null})),
    ] {
        let (status, got) = server
            .post("/predict", &json!({"task_type": task_type, "input_text": text}))
            .await;
        assert_eq!(status, 200, "{task_type}: {got}");
        let (status, want) = server
            .post("/api/predict", &json!({"text": pipeline_text, "schema": schema}))
            .await;
        assert_eq!(status, 200, "{task_type}: {want}");
        assert_eq!(got, want, "{task_type}");
    }

    let (status, body) = server
        .post(
            "/predict",
            &json!({"task_type": "summarize", "input_text": text}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(error_code(&body), "unknown_task_type");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("ner") && message.contains("topic"),
        "{message}"
    );

    let (status, body) = server
        .post(
            "/predict",
            &json!({"task_type": "reading_comprehension", "input_text": text}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(error_code(&body), "schema_required");
    let (status, body) = server
        .post(
            "/predict",
            &json!({"task_type": "reading_comprehension", "input_text": text, "schema": {"冬奥会在哪里举行？": null}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    let (status, body) = server.get("/health").await;
    assert_eq!((status, body.as_str()), (200, r#"{"status":"ready"}"#));
    server.stop().await.unwrap();
}

/// A bad `--task-presets` file stops the server at start, naming the file and the entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_task_presets_file_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let presets = dir.path().join("presets.json");
    std::fs::write(&presets, r#"{"broken": {"schema": {"a": {}}}}"#).unwrap();
    let model = uninlu_tiny();
    let server = TestServer::spawn(&[
        "--model",
        &model,
        "--task",
        "uninlu",
        "--task-presets",
        presets.to_str().unwrap(),
    ])
    .await;
    let error = server.finished().await.unwrap_err().to_string();
    assert!(
        error.contains("presets.json") && error.contains("broken: invalid schema"),
        "{error}"
    );
}
