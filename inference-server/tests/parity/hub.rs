//! Hub downloads against a stand-in hub on loopback (the real hubs are unreachable here): files
//! land in the cache and load, the cache is reused without network, and an unreachable hub
//! fails fast with a clear message.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nlu_server::model::{download, resolve, Embedder, HubConfig, ModelError};

use super::common::fixtures;

/// Serves `{root}` as `/{repo}/resolve/main/{file}` (HTTP/1.1, one request per connection),
/// 404 for anything else. Returns the endpoint and a counter of requests served.
fn stand_in_hub(repo: &'static str, root: PathBuf) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let served = Arc::new(AtomicUsize::new(0));
    let counter = served.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request_line = String::new();
            if reader.read_line(&mut request_line).is_err() {
                continue;
            }
            let mut header = String::new();
            while reader
                .read_line(&mut header)
                .map(|n| n > 2)
                .unwrap_or(false)
            {
                header.clear();
            }
            counter.fetch_add(1, Ordering::SeqCst);
            let path = request_line
                .split_whitespace()
                .nth(1)
                .unwrap_or("")
                .to_string();
            let prefix = format!("/{repo}/resolve/main/");
            let body = path
                .strip_prefix(&prefix)
                .filter(|f| !f.contains(".."))
                .and_then(|f| std::fs::read(root.join(f)).ok());
            let (status, body) = match body {
                Some(b) => ("200 OK", b),
                None => ("404 Not Found", b"Entry not found".to_vec()),
            };
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream
                .write_all(head.as_bytes())
                .and_then(|_| stream.write_all(&body));
        }
    });
    (endpoint, served)
}

fn hub(endpoint: String, cache: &std::path::Path) -> HubConfig {
    HubConfig {
        endpoint,
        revision: "main".into(),
        cache_dir: cache.to_path_buf(),
        token: None,
        connect_timeout: Duration::from_secs(2),
    }
}

#[test]
fn downloads_into_the_cache_and_reuses_it() {
    let model = fixtures().join("gte-tiny/model");
    let (endpoint, served) = stand_in_hub("test-org/gte-tiny", model.clone());
    let cache = tempfile::tempdir().unwrap();
    let cfg = hub(endpoint, cache.path());

    let files = resolve("test-org/gte-tiny", &cfg).unwrap();
    assert!(files.dir.starts_with(cache.path()));
    for name in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "1_Pooling/config.json",
    ] {
        assert_eq!(
            std::fs::read(files.dir.join(name)).unwrap(),
            std::fs::read(model.join(name)).unwrap(),
            "{name}"
        );
    }
    // No pytorch_model.bin request: safetensors exist.
    assert!(!files.dir.join("pytorch_model.bin").exists());
    let downloaded = Embedder::load(&files, None).unwrap();
    let local = Embedder::load(
        &nlu_server::model::ModelFiles::from_dir(&model).unwrap(),
        None,
    )
    .unwrap();
    let ids = vec![
        local
            .tokenizer()
            .encode("谷爱凌在北京冬奥会获得金牌", None)
            .unwrap()
            .ids,
    ];
    assert_eq!(
        downloaded.embed(&ids, true).unwrap(),
        local.embed(&ids, true).unwrap()
    );

    let requests = served.load(Ordering::SeqCst);
    assert_eq!(download("test-org/gte-tiny", &cfg).unwrap(), files.dir);
    assert_eq!(
        served.load(Ordering::SeqCst),
        requests,
        "second call served from cache"
    );
}

#[test]
fn missing_repository_is_a_clear_error() {
    let (endpoint, _) = stand_in_hub("test-org/gte-tiny", fixtures().join("gte-tiny/model"));
    let cache = tempfile::tempdir().unwrap();
    let err = download("other/model", &hub(endpoint, cache.path())).unwrap_err();
    assert!(matches!(err, ModelError::Files { .. }), "{err}");
    assert!(err.to_string().contains("config.json"), "{err}");
}

#[test]
fn unreachable_hub_fails_fast() {
    // A port that was just free: nothing listens there.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cache = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let err = resolve(
        "thenlper/gte-large-zh",
        &hub(format!("http://127.0.0.1:{port}"), cache.path()),
    )
    .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5));
    let message = err.to_string();
    assert!(matches!(err, ModelError::Download { .. }), "{message}");
    assert!(
        message.contains("thenlper/gte-large-zh") && message.contains(&port.to_string()),
        "{message}"
    );
}

#[test]
fn neither_folder_nor_hub_id() {
    let cfg = hub(
        "http://127.0.0.1:9".into(),
        std::path::Path::new("/nonexistent"),
    );
    for spec in ["/no/such/folder", "just-a-name", "../up/and-away", "a/b/c"] {
        assert!(
            matches!(resolve(spec, &cfg), Err(ModelError::BadSpec(_))),
            "{spec}"
        );
    }
}
