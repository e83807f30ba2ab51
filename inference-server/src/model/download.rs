//! Fetching model folders that are not on local disk: Hugging Face or ModelScope repositories,
//! file by file into a cache folder, and `.tar.gz` archives from a URL. The init containers the
//! operator builds run these through `nlu-server download`.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::files::ModelFiles;
use super::{ModelError, Result};

/// The hub protocols a repository can be downloaded with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HubKind {
    /// Files at `{endpoint}/{repo}/resolve/{revision}/{file}`.
    HuggingFace,
    /// Files at `{endpoint}/api/v1/models/{repo}/repo?Revision={revision}&FilePath={file}`.
    ModelScope,
}

/// Where and how hub ids are downloaded.
#[derive(Clone, Debug)]
pub struct HubConfig {
    pub kind: HubKind,
    /// Base URL of the hub.
    pub endpoint: String,
    pub revision: String,
    /// Downloads land in `{cache_dir}/{owner}--{name}/{revision}/`.
    pub cache_dir: PathBuf,
    /// Sent as a bearer token when set (private or gated models).
    pub token: Option<String>,
    /// Kept short so an unreachable hub fails fast instead of hanging the start-up.
    pub connect_timeout: Duration,
}

/// Default ModelScope endpoint and revision (ModelScope's default branch is `master`).
pub const MODELSCOPE_ENDPOINT: &str = "https://www.modelscope.cn";
pub const MODELSCOPE_REVISION: &str = "master";

impl HubConfig {
    /// Hugging Face defaults, overridable by environment: `NLU_HUB_ENDPOINT` (else
    /// `HF_ENDPOINT`, else https://huggingface.co), `NLU_MODEL_CACHE_DIR` (else
    /// `$HOME/.cache/nlu-server/models`), `HF_TOKEN`.
    pub fn from_env() -> Self {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let endpoint = var("NLU_HUB_ENDPOINT")
            .or_else(|| var("HF_ENDPOINT"))
            .unwrap_or_else(|| "https://huggingface.co".to_string());
        let cache_dir = var("NLU_MODEL_CACHE_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(var("HOME").unwrap_or_else(|| "/tmp".to_string()))
                    .join(".cache/nlu-server/models")
            });
        Self {
            kind: HubKind::HuggingFace,
            endpoint: endpoint.trim_end_matches('/').to_string(),
            revision: "main".to_string(),
            cache_dir,
            token: var("HF_TOKEN"),
            connect_timeout: Duration::from_secs(5),
        }
    }

    /// The same cache and timeouts, for ModelScope (`NLU_MODELSCOPE_ENDPOINT` overrides the
    /// endpoint, `MODELSCOPE_API_TOKEN` is sent when set).
    pub fn modelscope_from_env() -> Self {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        Self {
            kind: HubKind::ModelScope,
            endpoint: var("NLU_MODELSCOPE_ENDPOINT")
                .unwrap_or_else(|| MODELSCOPE_ENDPOINT.to_string())
                .trim_end_matches('/')
                .to_string(),
            revision: MODELSCOPE_REVISION.to_string(),
            token: var("MODELSCOPE_API_TOKEN"),
            ..Self::from_env()
        }
    }

    /// The URL of one file of `repo`.
    pub fn file_url(&self, repo: &str, file: &str) -> String {
        match self.kind {
            HubKind::HuggingFace => {
                format!("{}/{repo}/resolve/{}/{file}", self.endpoint, self.revision)
            }
            HubKind::ModelScope => format!(
                "{}/api/v1/models/{repo}/repo?Revision={}&FilePath={file}",
                self.endpoint, self.revision
            ),
        }
    }

    /// The cache folder of `repo` at this revision.
    pub fn cache_path(&self, repo: &str) -> PathBuf {
        self.cache_dir
            .join(repo.replace('/', "--"))
            .join(&self.revision)
    }

    fn agent(&self) -> ureq::Agent {
        ureq::Agent::config_builder()
            .timeout_connect(Some(self.connect_timeout))
            .timeout_recv_response(Some(Duration::from_secs(60)))
            .http_status_as_error(false)
            .build()
            .into()
    }
}

/// `owner/name` with the characters hubs allow; also keeps the id from escaping the cache folder.
pub fn is_hub_id(spec: &str) -> bool {
    let ok = |part: &str| {
        !part.is_empty()
            && !part.starts_with('.')
            && part
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    matches!(spec.split('/').collect::<Vec<_>>()[..], [owner, name] if ok(owner) && ok(name))
}

/// Files fetched when present; which of them a model needs is decided by [`ModelFiles::from_dir`]
/// afterwards. The weights come last so a missing tokenizer is reported before gigabytes move.
const HUB_FILES: &[&str] = &[
    "config.json",
    "tokenizer.json",
    "vocab.txt",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "1_Pooling/config.json",
    "sentence_bert_config.json",
    "model.safetensors",
];
/// Only fetched when the repository has no `model.safetensors`.
const FALLBACK_WEIGHTS: &str = "pytorch_model.bin";
/// Written after every file arrived: a folder without it is downloaded again.
const COMPLETE_MARKER: &str = ".complete";

/// Downloads hub model `repo` into the cache (once) and returns its folder.
pub fn download(repo: &str, hub: &HubConfig) -> Result<PathBuf> {
    download_into(repo, hub, &hub.cache_path(repo))
}

/// Downloads hub model `repo` into `dir` (once: a complete folder is reused) and returns it.
pub fn download_into(repo: &str, hub: &HubConfig, dir: &Path) -> Result<PathBuf> {
    if !is_hub_id(repo) {
        return Err(ModelError::BadSpec(repo.to_string()));
    }
    if dir.join(COMPLETE_MARKER).is_file() {
        tracing::info!(repo, dir = %dir.display(), "model found in cache");
        return Ok(dir.to_path_buf());
    }
    let fail = |message: String| ModelError::Download {
        repo: repo.to_string(),
        endpoint: hub.endpoint.clone(),
        message,
    };
    fs::create_dir_all(dir).map_err(|e| fail(format!("cannot create {}: {e}", dir.display())))?;
    let agent = hub.agent();
    tracing::info!(repo, endpoint = %hub.endpoint, dir = %dir.display(), "downloading model");
    for name in HUB_FILES {
        fetch(&agent, &hub.file_url(repo, name), hub.token.as_deref(), &dir.join(name))
            .map_err(fail)?;
    }
    if !dir.join("model.safetensors").is_file() {
        let target = dir.join(FALLBACK_WEIGHTS);
        fetch(&agent, &hub.file_url(repo, FALLBACK_WEIGHTS), hub.token.as_deref(), &target)
            .map_err(fail)?;
    }
    ModelFiles::from_dir(dir)?;
    fs::write(dir.join(COMPLETE_MARKER), b"").map_err(|e| fail(e.to_string()))?;
    Ok(dir.to_path_buf())
}

/// Downloads a `.tar.gz` of a model folder from `url` and unpacks it into `dir` (once). The
/// archive may hold the files at its root or inside one top-level folder.
pub fn download_archive(url: &str, dir: &Path, connect_timeout: Duration) -> Result<PathBuf> {
    let fail = |message: String| ModelError::Download {
        repo: url.to_string(),
        endpoint: url.to_string(),
        message,
    };
    if !(url.starts_with("https://") || url.starts_with("http://")) {
        return Err(fail("only http(s) URLs can be downloaded".into()));
    }
    if dir.join(COMPLETE_MARKER).is_file() {
        tracing::info!(url, dir = %dir.display(), "model found in cache");
        return Ok(dir.to_path_buf());
    }
    let parent = dir.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(parent).map_err(|e| fail(format!("cannot create {}: {e}", parent.display())))?;
    let archive = dir.with_extension("tar.gz");
    let hub = HubConfig { connect_timeout, ..HubConfig::from_env() };
    fetch(&hub.agent(), url, None, &archive).map_err(&fail)?;

    let unpacked = dir.with_extension("unpacking");
    let _ = fs::remove_dir_all(&unpacked);
    let file = fs::File::open(&archive).map_err(|e| fail(e.to_string()))?;
    tar::Archive::new(flate2::read::GzDecoder::new(file))
        .unpack(&unpacked)
        .map_err(|e| fail(format!("not a readable .tar.gz: {e}")))?;
    let root = model_root(&unpacked).ok_or_else(|| {
        fail("the archive holds no config.json at its root or in one top-level folder".into())
    })?;
    ModelFiles::from_dir(&root)?;
    let _ = fs::remove_dir_all(dir);
    fs::rename(&root, dir).map_err(|e| fail(e.to_string()))?;
    let _ = fs::remove_dir_all(&unpacked);
    let _ = fs::remove_file(&archive);
    fs::write(dir.join(COMPLETE_MARKER), b"").map_err(|e| fail(e.to_string()))?;
    Ok(dir.to_path_buf())
}

/// The folder of an unpacked archive that holds `config.json`: the root, or its only subfolder.
fn model_root(unpacked: &Path) -> Option<PathBuf> {
    if unpacked.join("config.json").is_file() {
        return Some(unpacked.to_path_buf());
    }
    let entries: Vec<_> = fs::read_dir(unpacked).ok()?.flatten().collect();
    match &entries[..] {
        [only] if only.path().join("config.json").is_file() => Some(only.path()),
        _ => None,
    }
}

/// Fetches one file to `target`; a 404 is not an error (the file is optional), anything else is.
fn fetch(
    agent: &ureq::Agent,
    url: &str,
    token: Option<&str>,
    target: &Path,
) -> std::result::Result<(), String> {
    let mut request = agent.get(url);
    if let Some(token) = token {
        request = request.header("Authorization", format!("Bearer {token}"));
    }
    let response = request.call().map_err(|e| format!("{url}: {e}"))?;
    match response.status().as_u16() {
        404 => return Ok(()),
        200 => {}
        status => return Err(format!("{url}: HTTP {status}")),
    }
    let total = response
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if let Some(parent) = target.parent() {
        fs::create_dir_all(parent).map_err(|e| e.to_string())?;
    }
    let partial = target.with_extension("part");
    let mut out = fs::File::create(&partial).map_err(|e| format!("{}: {e}", partial.display()))?;
    let mut body = response.into_body().into_reader();
    let mut buf = vec![0u8; 1 << 16];
    let (mut done, mut logged) = (0u64, 0u64);
    loop {
        let n = body.read(&mut buf).map_err(|e| format!("{url}: {e}"))?;
        if n == 0 {
            break;
        }
        out.write_all(&buf[..n]).map_err(|e| e.to_string())?;
        done += n as u64;
        if done - logged >= 64 << 20 {
            logged = done;
            tracing::info!(
                url,
                mib = done >> 20,
                total_mib = total.map(|t| t >> 20),
                "downloading"
            );
        }
    }
    if let Some(total) = total.filter(|&t| t != done) {
        return Err(format!("{url}: got {done} of {total} bytes"));
    }
    out.sync_all().map_err(|e| e.to_string())?;
    fs::rename(&partial, target).map_err(|e| e.to_string())?;
    tracing::info!(url, bytes = done, "downloaded");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_ids() {
        assert!(is_hub_id("thenlper/gte-large-zh"));
        assert!(is_hub_id("sentence-transformers/all-MiniLM-L6-v2"));
        assert!(!is_hub_id("gte-large-zh"));
        assert!(!is_hub_id("../etc"));
        assert!(!is_hub_id("a/../b"));
        assert!(!is_hub_id("a/.."));
        assert!(!is_hub_id("a/b/c"));
        assert!(!is_hub_id("/abs/path"));
    }

    #[test]
    fn file_urls_follow_each_hub_layout() {
        let hf = HubConfig {
            endpoint: "https://hf.example".into(),
            ..HubConfig::from_env()
        };
        assert_eq!(
            hf.file_url("thenlper/gte-base-zh", "1_Pooling/config.json"),
            "https://hf.example/thenlper/gte-base-zh/resolve/main/1_Pooling/config.json"
        );
        let ms = HubConfig {
            endpoint: "https://ms.example".into(),
            revision: "v1.0.1".into(),
            ..HubConfig::modelscope_from_env()
        };
        assert_eq!(
            ms.file_url("damo/nlp_structbert_siamese-uninlu_chinese-base", "vocab.txt"),
            "https://ms.example/api/v1/models/damo/nlp_structbert_siamese-uninlu_chinese-base/repo?Revision=v1.0.1&FilePath=vocab.txt"
        );
        assert_eq!(
            ms.cache_path("damo/x").strip_prefix(&ms.cache_dir).unwrap(),
            Path::new("damo--x/v1.0.1")
        );
    }
}
