//! Readiness, queue admission, metrics, request ids, access logs and shutdown.

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::harness::{error_code, gte_tiny, minilm, TestServer};

/// A hub that accepts connections and never answers: the model stays "loading".
async fn silent_hub() -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    (url, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_ready_while_loading_then_ready_then_draining() {
    // While the model loads: alive, not ready, model routes say so with 503.
    let (hub, _hub_task) = silent_hub().await;
    let cache = std::env::temp_dir().join(format!("nlu-test-cache-{}", std::process::id()));
    let cache = cache.display().to_string();
    let loading = TestServer::spawn(&[
        "--model",
        "owner/slow-model",
        "--task",
        "embedding",
        "--hub-endpoint",
        &hub,
        "--model-cache-dir",
        &cache,
    ])
    .await;
    assert_eq!(loading.get("/healthz").await.0, 200);
    let (status, body) = loading.get("/readyz").await;
    assert_eq!(status, 503, "{body}");
    let (status, body) = loading
        .post("/v1/embeddings", &json!({ "input": "a" }))
        .await;
    assert_eq!((status, error_code(&body)), (503, "loading"));
    drop(loading);

    // Loaded and warmed up: ready. Shutdown begun: not ready, yet still answering during the
    // drain delay.
    let mut server = TestServer::start(&[
        "--model",
        &gte_tiny(),
        "--task",
        "embedding",
        "--shutdown-delay-millis",
        "1500",
    ])
    .await;
    assert_eq!(server.get("/readyz").await.0, 200);
    server.begin_shutdown();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (status, body) = server.get("/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("shutting down"));
    let (status, _) = server.post("/embed", &json!({ "inputs": "还在" })).await;
    assert_eq!(status, 200, "requests still served while draining");
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_model_fails_start_with_a_clear_error() {
    let server = TestServer::spawn(&["--model", "/nonexistent/model", "--task", "embedding"]).await;
    let result = tokio::time::timeout(Duration::from_secs(30), server.finished())
        .await
        .expect("serve gives up");
    let message = format!("{:#}", result.unwrap_err());
    assert!(message.contains("/nonexistent/model"), "{message}");
}

/// A long request of MiniLM inputs, which the model thread works through one by one.
fn long_inputs(n: usize) -> Value {
    json!({ "inputs": vec!["word ".repeat(300); n], "truncate": true })
}

/// MiniLM embeddings running one sequence per batch, so long inputs queue up.
async fn slow_minilm(extra: &[&str]) -> TestServer {
    let model = minilm();
    let args = [
        "--model",
        &model,
        "--task",
        "embedding",
        "--max-batch-requests",
        "1",
    ];
    TestServer::start(&[&args[..], extra].concat()).await
}

/// Slow work in the queue (MiniLM, one 256-token sequence per batch): a request whose tokens
/// do not fit beside the work in flight is refused at once with Retry-After, the admitted one
/// is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_queue_answers_503_at_once() {
    // 64 inputs of 256 tokens are in flight; 32 more would pass the bound.
    let server = std::sync::Arc::new(slow_minilm(&["--max-queue-tokens", "20000"]).await);
    let first = {
        let server = server.clone();
        tokio::spawn(async move { server.post("/embed", &long_inputs(64)).await })
    };
    wait_for_queue(&server).await;
    let started = Instant::now();
    let r = server
        .client
        .post(server.url("/embed"))
        .json(&long_inputs(32))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "refused at once, not after waiting"
    );
    assert_eq!(r.headers()["retry-after"], "1");
    let body: Value = r.json().await.unwrap();
    assert_eq!(error_code(&body), "overloaded");
    let (status, vectors) = first.await.unwrap();
    assert_eq!(status, 200, "the admitted request is served");
    assert_eq!(vectors.as_array().unwrap().len(), 64);

    let (_, metrics) = server.get("/metrics").await;
    for name in [
        "nlu_requests_total{route=\"/embed\",status=\"503\",tenant=\"\"} 1",
        "nlu_requests_total{route=\"/embed\",status=\"200\",tenant=\"\"} 1",
        "nlu_queue_rejections_total 1",
        "nlu_request_seconds_count{route=\"/embed\"}",
        "nlu_queue_seconds_bucket",
        "nlu_tokenize_seconds_bucket",
        "nlu_inference_seconds_bucket",
        "nlu_batch_size_bucket",
        "nlu_batch_tokens_bucket",
        "nlu_queue_depth 0",
        "nlu_queue_tokens 0",
        "nlu_dropped_sequences_total 0",
        // The scrape reading it is not load: an idle server reads 0.
        "nlu_in_flight_requests 0",
        "nlu_model_load_seconds ",
    ] {
        assert!(metrics.contains(name), "metrics lack {name}:\n{metrics}");
    }
}

/// A client that hangs up while its 64 sequences wait: what has not run yet is dropped, never
/// run (every sequence either ran, one per batch, or was dropped), and the server goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_of_a_disconnected_client_is_dropped() {
    use tokio::io::AsyncWriteExt;
    let server = slow_minilm(&[]).await;
    let batches_before = metric(&server, "nlu_batch_size_count").await;
    let body = long_inputs(64).to_string();
    let mut socket = tokio::net::TcpStream::connect(server.url("").trim_start_matches("http://"))
        .await
        .unwrap();
    let request = format!(
        "POST /embed HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    socket.write_all(request.as_bytes()).await.unwrap();
    wait_for_queue(&server).await;
    drop(socket);

    let deadline = Instant::now() + Duration::from_secs(30);
    while metric(&server, "nlu_queue_depth").await > 0.0 {
        assert!(Instant::now() < deadline, "the queue never emptied");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ran = metric(&server, "nlu_batch_size_count").await - batches_before;
    let dropped = metric(&server, "nlu_dropped_sequences_total").await;
    assert!(dropped > 0.0, "nothing was dropped; {ran} sequences ran");
    assert_eq!(ran + dropped, 64.0, "each sequence ran or was dropped");
    assert_eq!(metric(&server, "nlu_queue_tokens").await, 0.0);
    let (status, _) = server
        .post("/embed", &json!({"inputs": "still here"}))
        .await;
    assert_eq!(status, 200);
}

/// The value of an unlabelled metric (a histogram's `_count` included).
async fn metric(server: &TestServer, name: &str) -> f64 {
    let (_, metrics) = server.get("/metrics").await;
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {name} in\n{metrics}"))
        .trim()
        .parse()
        .unwrap()
}

/// Waits until sequences are queued (per the queue-depth gauge).
async fn wait_for_queue(server: &TestServer) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while metric(server, "nlu_queue_depth").await <= 8.0 {
        assert!(Instant::now() < deadline, "nothing was queued");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_id_is_echoed_or_generated() {
    let server = TestServer::start(&["--model", &gte_tiny(), "--task", "embedding"]).await;
    let r = server
        .client
        .get(server.url("/healthz"))
        .header("x-request-id", "req-42")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "req-42");
    let r = server
        .client
        .post(server.url("/embed"))
        .body("{")
        .send()
        .await
        .unwrap();
    let generated = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(
        uuid::Uuid::parse_str(&generated).unwrap().get_version_num(),
        4
    );
}

/// Shutdown with work queued: the queued request is answered, then `serve` returns Ok.
/// Shutdown with work queued: the queued request is answered, then `serve` returns Ok.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_queued_work() {
    let model = minilm();
    let mut server = TestServer::start(&[
        "--model",
        &model,
        "--task",
        "embedding",
        "--max-batch-requests",
        "1",
    ])
    .await;
    let client = server.client.clone();
    let url = server.url("/embed");
    let queued = tokio::spawn(async move { client.post(url).json(&long_inputs(32)).send().await });
    wait_for_queue(&server).await;
    server.begin_shutdown();
    let response = queued
        .await
        .unwrap()
        .expect("the queued request is answered");
    assert_eq!(response.status(), 200);
    let vectors: Vec<Vec<f32>> = response.json().await.unwrap();
    assert_eq!(vectors.len(), 32);
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_logs_json_and_exits_cleanly_on_sigterm() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let mut child = Command::new(env!("CARGO_BIN_EXE_nlu-server"))
        .args([
            "serve",
            "--model",
            &gte_tiny(),
            "--task",
            "embedding",
            "--listen",
            &listen,
            "--log-format",
            "json",
        ])
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let client = super::harness::client();
    let deadline = Instant::now() + Duration::from_secs(60);
    while client
        .get(format!("http://{listen}/readyz"))
        .send()
        .await
        .map(|r| r.status() != 200)
        .unwrap_or(true)
    {
        assert!(Instant::now() < deadline, "binary did not become ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let secret = "秘密的文本";
    let r = client
        .post(format!("http://{listen}/embed"))
        .header("x-request-id", "log-test-1")
        .json(&json!({ "inputs": secret }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = tokio::task::spawn_blocking(move || {
        let mut stderr = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .unwrap();
        (child.wait().unwrap(), stderr)
    });
    let (exit, stderr) = tokio::time::timeout(Duration::from_secs(30), exit)
        .await
        .expect("exits after SIGTERM")
        .unwrap();
    assert!(exit.success(), "exit status {exit:?}\n{stderr}");

    let lines: Vec<Value> = BufReader::new(stderr.as_bytes())
        .lines()
        .map(|l| serde_json::from_str(&l.unwrap()).expect("every log line is JSON"))
        .collect();
    let access = lines
        .iter()
        .find(|l| l["request_id"] == "log-test-1")
        .expect("an access log line for the request");
    assert_eq!(access["route"], "/embed");
    assert_eq!(access["status"], 200);
    assert!(access["latency_ms"].as_f64().is_some());
    assert!(access["timestamp"].is_string());
    assert!(!stderr.contains(secret), "logs never hold request text");
}

#[tokio::test]
async fn metrics_listen_moves_metrics_off_the_api_port() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let metrics_addr = format!("127.0.0.1:{port}");
    let server = TestServer::start(&[
        "--model",
        &gte_tiny(),
        "--task",
        "embedding",
        "--metrics-listen",
        &metrics_addr,
    ])
    .await;
    let (status, body) = server
        .post("/v1/embeddings", &json!({ "input": "a" }))
        .await;
    assert_eq!(status, 200, "{body}");
    // Not on the API listener (the one an Ingress publishes)...
    let (status, body) = server.get("/metrics").await;
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!((status, error_code(&body)), (404, "not_found"), "{body}");
    // ...but on the private one, with the API's traffic in it.
    let private = reqwest::get(format!("http://{metrics_addr}/metrics"))
        .await
        .unwrap();
    assert_eq!(private.status(), 200);
    let text = private.text().await.unwrap();
    assert!(
        text.contains(r#"nlu_requests_total{route="/v1/embeddings",status="200""#),
        "{text}"
    );
    let other = reqwest::get(format!("http://{metrics_addr}/v1/embeddings"))
        .await
        .unwrap();
    assert_eq!(other.status(), 404);
}
