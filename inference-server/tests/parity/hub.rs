//! Hub downloads against a stand-in hub on loopback (the real hubs are unreachable here): files
//! land in the cache and load, the cache is reused without network, an unreachable hub fails
//! fast with a clear message, and downloads past `--max-download-bytes` or with another SHA-256
//! than the one asked for are refused and leave nothing behind.

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
        max_download_bytes: 1 << 30,
        sha256: None,
    }
}

fn sha256_of(path: &std::path::Path) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(std::fs::read(path).unwrap());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Every file under `dir`, relative, sorted.
fn files_under(dir: &std::path::Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                found.push(path.strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    found.sort();
    found
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
fn downloads_bge_m3_heads_as_the_hub_ships_them() {
    // The hub has the heads as torch checkpoints only.
    let hub_root = tempfile::tempdir().unwrap();
    let model =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/rerank/xlmr-m3-tiny");
    for name in files_under(&model) {
        if !name.ends_with("_linear.safetensors") {
            let to = hub_root.path().join(&name);
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            std::fs::copy(model.join(&name), to).unwrap();
        }
    }
    let (endpoint, _) = stand_in_hub("BAAI/bge-m3-tiny", hub_root.path().to_path_buf());
    let cache = tempfile::tempdir().unwrap();
    let files = resolve("BAAI/bge-m3-tiny", &hub(endpoint, cache.path())).unwrap();
    for name in ["sparse_linear.pt", "colbert_linear.pt"] {
        assert!(files.dir.join(name).is_file(), "{name} not downloaded");
    }
    let embedder = Embedder::load(&files, None, Dtype::F32).unwrap();
    assert!(embedder.has_sparse());
    assert_eq!(embedder.colbert_dims(), Some(32));
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

    let dir = download_archive(&url, &target, &hub(endpoint.clone(), out.path())).unwrap();
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
        &hub(endpoint.clone(), out.path()),
    )
    .unwrap_err();
    assert!(err.to_string().contains("not a readable .tar.gz"), "{err}");
    let err = download_archive(
        "ftp://example/m.tar.gz",
        &out.path().join("ftp"),
        &hub(endpoint.clone(), out.path()),
    )
    .unwrap_err();
    assert!(err.to_string().contains("only http(s)"), "{err}");
}

#[test]
fn a_hub_model_larger_than_the_cap_is_refused_and_not_kept() {
    let model = fixtures().join("gte-tiny/model");
    let weights = std::fs::metadata(model.join("model.safetensors"))
        .unwrap()
        .len();
    let (endpoint, _) = stand_in_hub("test-org/gte-tiny", model);
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("m");
    // Room for the small files, not for the weights.
    let cfg = HubConfig {
        max_download_bytes: weights - 1,
        ..hub(endpoint.clone(), out.path())
    };
    let err = download_into("test-org/gte-tiny", &cfg, &dir).unwrap_err();
    assert!(matches!(err, ModelError::Download { .. }), "{err}");
    assert!(
        err.to_string().contains("--max-download-bytes")
            && err.to_string().contains(&(weights - 1).to_string()),
        "{err}"
    );
    let left = files_under(&dir);
    assert!(
        !left
            .iter()
            .any(|f| f.contains("model.safetensors") || f == ".complete"),
        "no weights, no partial file, not complete: {left:?}"
    );

    // The cap counts the files together: enough for the weights alone is not enough.
    let cfg = HubConfig {
        max_download_bytes: weights,
        ..hub(endpoint, out.path())
    };
    let err = download_into("test-org/gte-tiny", &cfg, &out.path().join("n")).unwrap_err();
    assert!(err.to_string().contains("--max-download-bytes"), "{err}");
}

#[test]
fn the_weights_checksum_is_checked() {
    let model = fixtures().join("gte-tiny/model");
    let good = sha256_of(&model.join("model.safetensors"));
    let (endpoint, _) = stand_in_hub("test-org/gte-tiny", model.clone());
    let out = tempfile::tempdir().unwrap();

    let bad = HubConfig {
        sha256: Some("0".repeat(64)),
        ..hub(endpoint.clone(), out.path())
    };
    let err = download_into("test-org/gte-tiny", &bad, &out.path().join("bad")).unwrap_err();
    assert!(matches!(err, ModelError::Download { .. }), "{err}");
    assert!(
        err.to_string().contains(&good) && err.to_string().contains(&"0".repeat(64)),
        "names both checksums: {err}"
    );
    let left = files_under(&out.path().join("bad"));
    assert!(
        !left
            .iter()
            .any(|f| f.contains("model.safetensors") || f == ".complete"),
        "the mismatching file is not kept: {left:?}"
    );

    let pinned = HubConfig {
        sha256: Some(good.clone()),
        ..hub(endpoint, out.path())
    };
    let dir = download_into("test-org/gte-tiny", &pinned, &out.path().join("good")).unwrap();
    assert_eq!(sha256_of(&dir.join("model.safetensors")), good);
    ModelFiles::from_dir(&dir).unwrap();
    // A cached folder is reused for the same checksum and fetched again for another.
    assert_eq!(
        download_into("test-org/gte-tiny", &pinned, &dir).unwrap(),
        dir
    );
    assert!(download_into("test-org/gte-tiny", &bad, &dir).is_err());
}

#[test]
fn archives_are_capped_and_checked() {
    let served = tempfile::tempdir().unwrap();
    gte_archive(served.path());
    let archive = served.path().join("model.tar.gz");
    let size = std::fs::metadata(&archive).unwrap().len();
    let good = sha256_of(&archive);
    let (endpoint, _) = stand_in_hub("files/models", served.path().to_path_buf());
    let url = format!("{endpoint}/files/models/resolve/main/model.tar.gz");
    let out = tempfile::tempdir().unwrap();
    let base = hub(endpoint, out.path());

    let small = HubConfig {
        max_download_bytes: size - 1,
        ..base.clone()
    };
    let err = download_archive(&url, &out.path().join("small"), &small).unwrap_err();
    assert!(err.to_string().contains("--max-download-bytes"), "{err}");

    // The archive fits, its unpacked contents (weights barely compress) do not.
    let unpacked: u64 = files_under(&fixtures().join("gte-tiny/model"))
        .iter()
        .map(|f| {
            std::fs::metadata(fixtures().join("gte-tiny/model").join(f))
                .unwrap()
                .len()
        })
        .sum();
    assert!(unpacked > size, "{unpacked} > {size}");
    let inflating = HubConfig {
        max_download_bytes: size,
        ..base.clone()
    };
    let err = download_archive(&url, &out.path().join("inflating"), &inflating).unwrap_err();
    assert!(err.to_string().contains("--max-download-bytes"), "{err}");

    let bad = HubConfig {
        sha256: Some("f".repeat(64)),
        ..base.clone()
    };
    let err = download_archive(&url, &out.path().join("bad"), &bad).unwrap_err();
    assert!(err.to_string().contains(&good), "{err}");

    // Nothing of the refused downloads is left: no archive, no half-unpacked folder.
    let left: Vec<_> = std::fs::read_dir(out.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(left.is_empty(), "{left:?}");

    let pinned = HubConfig {
        sha256: Some(good),
        ..base
    };
    let dir = download_archive(&url, &out.path().join("good"), &pinned).unwrap();
    ModelFiles::from_dir(&dir).unwrap();
}
