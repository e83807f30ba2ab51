//! Hub downloads against a stand-in hub on loopback (the real hubs are unreachable here): files
//! land in the cache and load, the cache is reused without network, and an unreachable hub
//! fails fast with a clear message.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nlu_server::model::{
    download, download_archive, download_into, resolve, Dtype, Embedder, HubConfig, HubKind,
    ModelError, ModelFiles,
};

use super::common::fixtures;

/// Serves `{root}` as `/{repo}/resolve/main/{file}` (Hugging Face layout) and
/// `/api/v1/models/{repo}/repo?Revision=master&FilePath={file}` (ModelScope layout), HTTP/1.1,
/// one request per connection, 404 for anything else. Returns the endpoint and a counter of requests served.
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
            let hugging_face = format!("/{repo}/resolve/main/");
            let modelscope = format!("/api/v1/models/{repo}/repo?Revision=master&FilePath=");
            let body = path
                .strip_prefix(&hugging_face)
                .or_else(|| path.strip_prefix(&modelscope))
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
        kind: HubKind::HuggingFace,
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
    let downloaded = Embedder::load(&files, None, Dtype::F32).unwrap();
    let local = Embedder::load(
        &nlu_server::model::ModelFiles::from_dir(&model).unwrap(),
        None,
        Dtype::F32,
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

#[test]
fn downloads_from_a_modelscope_layout() {
    let model = fixtures().join("uninlu-tiny/model");
    let (endpoint, _) = stand_in_hub("damo/uninlu-tiny", model.clone());
    let out = tempfile::tempdir().unwrap();
    let cfg = HubConfig {
        kind: HubKind::ModelScope,
        revision: "master".into(),
        ..hub(endpoint, out.path())
    };
    let dir = download_into("damo/uninlu-tiny", &cfg, &out.path().join("m")).unwrap();
    // The repository has safetensors, so the torch checkpoint is not fetched.
    for name in [
        "config.json",
        "model.safetensors",
        "vocab.txt",
        "tokenizer_config.json",
    ] {
        assert_eq!(
            std::fs::read(dir.join(name)).unwrap(),
            std::fs::read(model.join(name)).unwrap(),
            "{name}"
        );
    }
    assert!(!dir.join("pytorch_model.bin").exists());
}

/// A `.tar.gz` of the gte-tiny folder under one top-level folder, as `tar czf` makes it.
fn gte_archive(into: &std::path::Path) {
    let file = std::fs::File::create(into.join("model.tar.gz")).unwrap();
    let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(
        file,
        flate2::Compression::fast(),
    ));
    tar.append_dir_all("gte-tiny", fixtures().join("gte-tiny/model"))
        .unwrap();
    tar.into_inner().unwrap().finish().unwrap();
}

#[test]
fn downloads_and_unpacks_a_model_archive() {
    let served = tempfile::tempdir().unwrap();
    gte_archive(served.path());
    std::fs::write(served.path().join("junk.tar.gz"), b"not gzip").unwrap();
    let (endpoint, _) = stand_in_hub("files/models", served.path().to_path_buf());
    let out = tempfile::tempdir().unwrap();
    let target = out.path().join("url");
    let url = format!("{endpoint}/files/models/resolve/main/model.tar.gz");

    let dir = download_archive(&url, &target, Duration::from_secs(2)).unwrap();
    assert_eq!(dir, target);
    let files = ModelFiles::from_dir(&dir).unwrap();
    let local = ModelFiles::from_dir(&fixtures().join("gte-tiny/model")).unwrap();
    let ids = vec![vec![101, 6484, 4263, 102]];
    assert_eq!(
        Embedder::load(&files, None, Dtype::F32)
            .unwrap()
            .embed(&ids, true)
            .unwrap(),
        Embedder::load(&local, None, Dtype::F32)
            .unwrap()
            .embed(&ids, true)
            .unwrap()
    );
    // Nothing but the model folder is left behind.
    let left: Vec<_> = std::fs::read_dir(out.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, ["url"]);

    let err = download_archive(
        &format!("{endpoint}/files/models/resolve/main/junk.tar.gz"),
        &out.path().join("junk"),
        Duration::from_secs(2),
    )
    .unwrap_err();
    assert!(err.to_string().contains("not a readable .tar.gz"), "{err}");
    let err = download_archive(
        "ftp://example/m.tar.gz",
        &out.path().join("ftp"),
        Duration::from_secs(2),
    )
    .unwrap_err();
    assert!(err.to_string().contains("only http(s)"), "{err}");
}
