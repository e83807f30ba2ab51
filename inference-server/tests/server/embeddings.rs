//! Embedding routes against the reference vectors of the fixtures.

use serde_json::{json, Value};

use super::harness::{cosine, fixtures, floats, gte_tiny, minilm, read_json, TestServer};

/// Cases with non-empty text (the server refuses empty strings; see errors.rs).
fn cases(expected: &Value) -> Vec<&Value> {
    expected["cases"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| !c["text"].as_str().unwrap().is_empty())
        .collect()
}

fn assert_close(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: dims");
    let c = cosine(got, want);
    assert!(c > 0.9999, "{what}: cosine {c}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gte_tiny_parity_through_every_route() {
    let expected = read_json(fixtures().join("gte-tiny/expected.json"));
    let server = TestServer::start(&["--model", &gte_tiny(), "--task", "embedding", "--served-model-name", "gte-tiny-test"]).await;

    for case in cases(&expected) {
        let text = case["text"].as_str().unwrap();
        let (status, body) = server
            .post("/v1/embeddings", &json!({ "input": text, "model": "gte" }))
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["object"], "list");
        assert_eq!(body["model"], "gte-tiny-test", "the served model name, not the requested one");
        assert_eq!(body["data"][0]["object"], "embedding");
        assert_eq!(body["data"][0]["index"], 0);
        assert_close(
            &floats(&body["data"][0]["embedding"]),
            &floats(&case["cls_normalized"]),
            text,
        );
        let ids = case["ids"].as_array().unwrap().len();
        assert_eq!(body["usage"]["prompt_tokens"], ids, "{text}: token count");
        assert_eq!(body["usage"]["total_tokens"], ids);
    }

    // All texts in one request: padding inside the batch must not change any vector.
    let texts: Vec<&str> = cases(&expected).iter().map(|c| c["text"].as_str().unwrap()).collect();
    let (status, body) = server
        .post("/embed", &json!({ "inputs": texts, "normalize": false }))
        .await;
    assert_eq!(status, 200, "{body}");
    for (got, case) in body.as_array().unwrap().iter().zip(cases(&expected)) {
        let (got, want) = (floats(got), floats(&case["cls_raw"]));
        assert_close(&got, &want, "raw");
        let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!(
            (norm(&got) / norm(&want) - 1.0).abs() < 1e-3,
            "raw vectors keep their length"
        );
    }

    // Similarity: cosine of the reference vectors.
    let (source, others) = cases(&expected).split_first().map(|(s, o)| (*s, o.to_vec())).unwrap();
    let (status, body) = server
        .post(
            "/similarity",
            &json!({
                "source_sentence": source["text"],
                "sentences_to_compare": others.iter().map(|c| c["text"].clone()).collect::<Vec<_>>(),
            }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let scores = floats(&body["scores"]);
    assert_eq!(scores.len(), others.len());
    for (score, other) in scores.iter().zip(&others) {
        let want = cosine(&floats(&source["cls_normalized"]), &floats(&other["cls_normalized"]));
        assert!((score - want).abs() < 1e-4, "similarity {score} vs {want}");
    }

    // base64 as the OpenAI clients ask for it: little-endian f32.
    let (status, body) = server
        .post(
            "/v1/embeddings",
            &json!({ "input": [texts[0]], "encoding_format": "base64" }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(body["data"][0]["embedding"].as_str().unwrap())
        .unwrap();
    let decoded: Vec<f32> = bytes
        .chunks(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    assert_close(&decoded, &floats(&cases(&expected)[0]["cls_normalized"]), "base64");

    let (status, info) = server.get("/info").await;
    assert_eq!(status, 200);
    let info: Value = serde_json::from_str(&info).unwrap();
    assert_eq!(info["task"], "embedding");
    assert_eq!(info["pooling"], "cls");
    assert_eq!(info["dims"], floats(&cases(&expected)[0]["cls_normalized"]).len());
    // The kernel the CPU's features select, said by /info and by a metric alike.
    let kernel = if std::is_x86_feature_detected!("avx512f") {
        "avx512"
    } else if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
        "avx2"
    } else {
        "gemm"
    };
    assert_eq!((&info["dtype"], &info["kernel"]), (&json!("f32"), &json!(kernel)), "{info}");
    let (_, metrics) = server.get("/metrics").await;
    let line = format!(r#"nlu_model_info{{task="embedding",dtype="f32",kernel="{kernel}"}} 1"#);
    assert!(metrics.lines().any(|l| l == line), "no {line} in\n{metrics}");
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pooling_override_gives_mean_vectors() {
    let expected = read_json(fixtures().join("gte-tiny/expected.json"));
    let server = TestServer::start(&["--model", &gte_tiny(), "--task", "embedding", "--pooling", "mean"]).await;
    for case in cases(&expected) {
        let (status, body) = server.post("/embed", &json!({ "inputs": case["text"] })).await;
        assert_eq!(status, 200, "{body}");
        assert_close(&floats(&body[0]), &floats(&case["mean_normalized"]), "mean");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minilm_real_weights_parity() {
    let expected = read_json(fixtures().join("minilm-reference.json"));
    let server = TestServer::start(&["--model", &minilm(), "--task", "embedding"]).await;
    let texts: Vec<&str> = cases(&expected).iter().map(|c| c["text"].as_str().unwrap()).collect();
    // The reference truncates at the model's max_seq_length (256, from sentence_bert_config.json),
    // which is the server's default limit: the long text is refused unless truncation is asked.
    let (status, body) = server.post("/v1/embeddings", &json!({ "input": texts })).await;
    assert_eq!(status, 413, "{body}");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("limit is 256"),
        "{body}"
    );
    let (status, body) = server
        .post("/embed", &json!({ "inputs": texts, "truncate": true }))
        .await;
    assert_eq!(status, 200, "{body}");
    for (got, case) in body.as_array().unwrap().iter().zip(cases(&expected)) {
        assert_close(
            &floats(got),
            &floats(&case["mean_normalized"]),
            case["text"].as_str().unwrap(),
        );
    }
    let short: Vec<&Value> = cases(&expected)
        .into_iter()
        .filter(|c| c["ids"].as_array().unwrap().len() < 256)
        .collect();
    let inputs: Vec<&Value> = short.iter().map(|c| &c["text"]).collect();
    let (status, body) = server.post("/v1/embeddings", &json!({ "input": inputs })).await;
    assert_eq!(status, 200, "{body}");
    let total: usize = short.iter().map(|c| c["ids"].as_array().unwrap().len()).sum();
    assert_eq!(body["usage"]["prompt_tokens"], total);
}

/// 64 clients at once get exactly what one-by-one calls get (batching mixes their inputs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_clients_get_sequential_vectors() {
    let expected = read_json(fixtures().join("gte-tiny/expected.json"));
    let texts: Vec<String> = cases(&expected)
        .iter()
        .map(|c| c["text"].as_str().unwrap().to_owned())
        .collect();
    let server = TestServer::start(&["--model", &gte_tiny(), "--task", "embedding", "--max-wait-millis", "5"]).await;
    let request =
        |i: usize| json!({ "inputs": [texts[i % texts.len()].clone(), texts[(i * 3 + 1) % texts.len()].clone()] });

    let mut sequential = Vec::new();
    for i in 0..64 {
        let (status, body) = server.post("/embed", &request(i)).await;
        assert_eq!(status, 200);
        sequential.push(body);
    }
    let server = std::sync::Arc::new(server);
    let clients: Vec<_> = (0..64)
        .map(|i| {
            let (server, body) = (server.clone(), request(i));
            tokio::spawn(async move { server.post("/embed", &body).await })
        })
        .collect();
    for (i, client) in clients.into_iter().enumerate() {
        let (status, body) = client.await.unwrap();
        assert_eq!(status, 200, "{body}");
        for (got, want) in body.as_array().unwrap().iter().zip(sequential[i].as_array().unwrap()) {
            let (got, want) = (floats(got), floats(want));
            let max_diff = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
            assert!(max_diff < 1e-5, "client {i}: concurrent vector differs by {max_diff}");
        }
    }
    let (_, metrics) = server.get("/metrics").await;
    let value = |name: &str| -> f64 {
        let line = metrics
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no {name}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    let (single, all) = (
        value("nlu_batch_size_bucket{le=\"1.0\"}"),
        value("nlu_batch_size_count"),
    );
    assert!(
        single < all,
        "some batch held more than one input: {single} of {all} had one"
    );
}

/// `dimensions` keeps a vector's first dimensions and normalises them when the request
/// normalises: checked against the full raw vector, cut and normalised here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dimensions_cut_then_normalise() {
    let server = TestServer::start(&["--model", &gte_tiny(), "--task", "embedding"]).await;
    let text = "今天天气很好";
    let (status, body) = server
        .post("/embed", &json!({ "inputs": text, "normalize": false }))
        .await;
    assert_eq!(status, 200, "{body}");
    let raw = floats(&body[0]);
    assert_eq!(raw.len(), 64);
    let prefix = &raw[..16];
    let norm = prefix.iter().map(|x| x * x).sum::<f32>().sqrt();
    let unit: Vec<f32> = prefix.iter().map(|x| x / norm).collect();

    let (status, body) = server
        .post("/embed", &json!({ "inputs": text, "normalize": false, "dimensions": 16 }))
        .await;
    assert_eq!(status, 200, "{body}");
    let cut = floats(&body[0]);
    assert_eq!(cut.len(), 16);
    for (got, want) in cut.iter().zip(prefix) {
        assert!((got - want).abs() < 1e-6, "{cut:?} vs {prefix:?}");
    }

    let (status, body) = server
        .post("/v1/embeddings", &json!({ "input": [text, text], "dimensions": 16 }))
        .await;
    assert_eq!(status, 200, "{body}");
    for item in body["data"].as_array().unwrap() {
        let got = floats(&item["embedding"]);
        assert_eq!(got.len(), 16);
        for (g, w) in got.iter().zip(&unit) {
            assert!((g - w).abs() < 1e-5, "{got:?} vs {unit:?}");
        }
    }

    for wrong in [0, 65] {
        let (status, body) = server
            .post("/v1/embeddings", &json!({ "input": text, "dimensions": wrong }))
            .await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(super::harness::error_code(&body), "invalid_dimensions");
    }
    server.stop().await.unwrap();
}

/// `--dtype int8` through HTTP: /info and the metric name the int8 kernel the CPU selects (or
/// the f32 fallback on a CPU without AVX2), and the vectors stay within cosine 0.999 of the
/// f32 references.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn int8_serves_close_vectors_and_says_so() {
    let expected = read_json(fixtures().join("gte-tiny/expected.json"));
    let server = TestServer::start(&["--model", &gte_tiny(), "--task", "embedding", "--dtype", "int8"]).await;
    let avx2 = std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma");
    let (dtype, kernel) = if std::is_x86_feature_detected!("avx512f")
        && std::is_x86_feature_detected!("avx512vnni")
    {
        ("int8", "avx512-vnni")
    } else if avx2 && std::is_x86_feature_detected!("avxvnni") {
        ("int8", "avx-vnni")
    } else if avx2 {
        ("int8", "avx2")
    } else {
        ("f32", "gemm")
    };
    let (status, info) = server.get("/info").await;
    assert_eq!(status, 200);
    let info: Value = serde_json::from_str(&info).unwrap();
    assert_eq!((&info["dtype"], &info["kernel"]), (&json!(dtype), &json!(kernel)), "{info}");
    let (_, metrics) = server.get("/metrics").await;
    let line = format!(r#"nlu_model_info{{task="embedding",dtype="{dtype}",kernel="{kernel}"}} 1"#);
    assert!(metrics.lines().any(|l| l == line), "no {line} in\n{metrics}");
    for case in cases(&expected) {
        let (status, body) = server.post("/embed", &json!({ "inputs": case["text"] })).await;
        assert_eq!(status, 200, "{body}");
        let cosine = cosine(&floats(&body[0]), &floats(&case["cls_normalized"]));
        assert!(cosine > 0.999, "{}: cosine {cosine}", case["text"]);
    }
    server.stop().await.unwrap();
}
