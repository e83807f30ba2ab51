//! Fetching model folders that are not on local disk: Hugging Face or ModelScope repositories,
//! file by file into a cache folder, and `.tar.gz` archives from a URL. The init containers the
//! operator builds run these through `nlu-server download`.
//!
//! Every download is capped (`max_download_bytes`: the files of a hub model together, an archive,
//! and again an archive's unpacked contents), checked while it streams, and may be pinned by a
//! SHA-256 (the weights file of a hub model, the archive of a URL). Whatever fails that is
//! removed, and the folder is not marked complete.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nlu_crds::serve::download::DEFAULT_MAX_BYTES;
use sha2::{Digest, Sha256};

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
    /// Most bytes one download may write (see the module's documentation).
    pub max_download_bytes: u64,
    /// SHA-256 (lowercase hex) the weights file of a hub model, or a URL's archive, must have.
    pub sha256: Option<String>,
}

/// Default ModelScope endpoint and revision (ModelScope's default branch is `master`).
pub const MODELSCOPE_ENDPOINT: &str = "https://www.modelscope.cn";
pub const MODELSCOPE_REVISION: &str = "master";

impl HubConfig {
    /// Hugging Face defaults, overridable by environment: `NLU_HUB_ENDPOINT` (else
    /// `HF_ENDPOINT`, else https://huggingface.co), `NLU_MODEL_CACHE_DIR` (else
    /// `$HOME/.cache/nlu-server/models`), `HF_TOKEN`. The cap is the default (4 GiB), no checksum.
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
            max_download_bytes: DEFAULT_MAX_BYTES,
            sha256: None,
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

    /// The flags' endpoint and cache folder, where given, over the environment's.
    pub fn with_flags(self, endpoint: Option<&str>, cache_dir: Option<&std::path::Path>) -> Self {
        Self {
            endpoint: endpoint.map_or(self.endpoint, |e| e.trim_end_matches('/').to_owned()),
            cache_dir: cache_dir.map_or(self.cache_dir, std::path::Path::to_path_buf),
            ..self
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
    // bge-m3's sparse and multi-vector heads, as its repository ships them.
    "sparse_linear.pt",
    "colbert_linear.pt",
    "model.safetensors",
];
/// Only fetched when the repository has no `model.safetensors`.
const FALLBACK_WEIGHTS: &str = "pytorch_model.bin";
/// Written after every file arrived, holding the SHA-256 of the weights (hub) or the archive
/// (URL): a folder without it, or whose checksum is not the one asked for, is downloaded again.
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
    if is_complete(dir, hub.sha256.as_deref()) {
        tracing::info!(repo, dir = %dir.display(), "model found in cache");
        return Ok(dir.to_path_buf());
    }
    let fail = |message: String| ModelError::Download {
        repo: repo.to_string(),
        endpoint: hub.endpoint.clone(),
        message,
    };
    fs::create_dir_all(dir).map_err(|e| fail(format!("cannot create {}: {e}", dir.display())))?;
    // Not complete until every file arrived again (a cached folder of another checksum).
    let _ = fs::remove_file(dir.join(COMPLETE_MARKER));
    let agent = hub.agent();
    tracing::info!(repo, endpoint = %hub.endpoint, dir = %dir.display(), "downloading model");
    let mut budget = Budget::new(hub.max_download_bytes);
    let mut weights = None;
    for name in HUB_FILES.iter().copied().chain([FALLBACK_WEIGHTS]) {
        // The torch checkpoint only when the repository has no safetensors.
        if name == FALLBACK_WEIGHTS && weights.is_some() {
            break;
        }
        let target = dir.join(name);
        let fetched = fetch(
            &agent,
            &hub.file_url(repo, name),
            hub.token.as_deref(),
            &target,
            &mut budget,
        )
        .map_err(fail)?;
        if let (Some(sha256), "model.safetensors" | FALLBACK_WEIGHTS) = (fetched, name) {
            verify(&target, &sha256, hub.sha256.as_deref()).map_err(fail)?;
            weights = Some(sha256);
        }
    }
    ModelFiles::from_dir(dir)?;
    fs::write(dir.join(COMPLETE_MARKER), weights.unwrap_or_default())
        .map_err(|e| fail(e.to_string()))?;
    Ok(dir.to_path_buf())
}

/// Whether `dir` was downloaded completely, with the checksum asked for (if any).
fn is_complete(dir: &Path, sha256: Option<&str>) -> bool {
    let Ok(marker) = fs::read_to_string(dir.join(COMPLETE_MARKER)) else {
        return false;
    };
    let same = sha256.is_none_or(|want| marker.trim() == want);
    if !same {
        tracing::info!(dir = %dir.display(), "cached model has another checksum; downloading again");
    }
    same
}

/// Keeps `target` only when its SHA-256 (`got`) is the one asked for.
fn verify(target: &Path, got: &str, want: Option<&str>) -> std::result::Result<(), String> {
    match want {
        Some(want) if want != got => {
            let _ = fs::remove_file(target);
            Err(format!(
                "{} has SHA-256 {got}, not the expected {want}; the file was removed",
                target.display()
            ))
        }
        _ => Ok(()),
    }
}

/// Downloads a `.tar.gz` of a model folder from `url` and unpacks it into `dir` (once). The
/// archive may hold the files at its root or inside one top-level folder. `hub` gives the
/// timeouts, the cap and the archive's checksum (its endpoint and token are not used).
pub fn download_archive(url: &str, dir: &Path, hub: &HubConfig) -> Result<PathBuf> {
    let fail = |message: String| ModelError::Download {
        repo: url.to_string(),
        endpoint: url.to_string(),
        message,
    };
    if !(url.starts_with("https://") || url.starts_with("http://")) {
        return Err(fail("only http(s) URLs can be downloaded".into()));
    }
    if is_complete(dir, hub.sha256.as_deref()) {
        tracing::info!(url, dir = %dir.display(), "model found in cache");
        return Ok(dir.to_path_buf());
    }
    let parent = dir.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(parent)
        .map_err(|e| fail(format!("cannot create {}: {e}", parent.display())))?;
    let archive = dir.with_extension("tar.gz");
    let unpacked = dir.with_extension("unpacking");
    let result = unpack_archive(url, dir, hub, &archive, &unpacked);
    // The archive and what was unpacked go whatever happened: only `dir` stays.
    let _ = fs::remove_dir_all(&unpacked);
    let _ = fs::remove_file(&archive);
    result
}

fn unpack_archive(
    url: &str,
    dir: &Path,
    hub: &HubConfig,
    archive: &Path,
    unpacked: &Path,
) -> Result<PathBuf> {
    let fail = |message: String| ModelError::Download {
        repo: url.to_string(),
        endpoint: url.to_string(),
        message,
    };
    let mut budget = Budget::new(hub.max_download_bytes);
    let sha256 = fetch(&hub.agent(), url, None, archive, &mut budget)
        .map_err(&fail)?
        .ok_or_else(|| fail(format!("{url}: HTTP 404")))?;
    verify(archive, &sha256, hub.sha256.as_deref()).map_err(&fail)?;

    let _ = fs::remove_dir_all(unpacked);
    let file = fs::File::open(archive).map_err(|e| fail(e.to_string()))?;
    let mut contents = Capped {
        inner: flate2::read::GzDecoder::new(file),
        left: hub.max_download_bytes,
        exceeded: false,
    };
    // tar wraps the reader's error in its own: the reader says whether it was the cap.
    let unpacked_ok = tar::Archive::new(&mut contents).unpack(unpacked);
    unpacked_ok.map_err(|e| {
        fail(if contents.exceeded {
            too_large(url, hub.max_download_bytes)
        } else {
            format!("not a readable .tar.gz: {e}")
        })
    })?;
    let root = model_root(unpacked).ok_or_else(|| {
        fail("the archive holds no config.json at its root or in one top-level folder".into())
    })?;
    ModelFiles::from_dir(&root)?;
    let _ = fs::remove_dir_all(dir);
    fs::rename(&root, dir).map_err(|e| fail(e.to_string()))?;
    fs::write(dir.join(COMPLETE_MARKER), sha256).map_err(|e| fail(e.to_string()))?;
    Ok(dir.to_path_buf())
}

/// What is left of the cap of one download.
struct Budget {
    max: u64,
    left: u64,
}

impl Budget {
    fn new(max: u64) -> Self {
        Self { max, left: max }
    }
}

fn too_large(url: &str, max: u64) -> String {
    format!("{url}: the download is larger than the limit of {max} bytes (--max-download-bytes)")
}

/// A reader that fails (and says so in `exceeded`) once more than `left` bytes came through:
/// bounds what an archive unpacks to (a small archive can inflate to anything).
struct Capped<R> {
    inner: R,
    left: u64,
    exceeded: bool,
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        match self.left.checked_sub(n as u64) {
            Some(left) => self.left = left,
            None => {
                self.exceeded = true;
                return Err(std::io::Error::other("larger than --max-download-bytes"));
            }
        }
        Ok(n)
    }
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

/// Fetches one file to `target` and returns its SHA-256; a 404 is `None`, not an error (the file
/// is optional), anything else is. Takes what it wrote from `budget`; a file that would overrun
/// it is refused (by its Content-Length up front, else while it streams) and nothing is kept.
fn fetch(
    agent: &ureq::Agent,
    url: &str,
    token: Option<&str>,
    target: &Path,
    budget: &mut Budget,
) -> std::result::Result<Option<String>, String> {
    let mut request = agent.get(url);
    if let Some(token) = token {
        request = request.header("Authorization", format!("Bearer {token}"));
    }
    let response = request.call().map_err(|e| format!("{url}: {e}"))?;
    match response.status().as_u16() {
        404 => return Ok(None),
        200 => {}
        status => return Err(format!("{url}: HTTP {status}")),
    }
    let total = response
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if total.is_some_and(|t| t > budget.left) {
        return Err(too_large(url, budget.max));
    }
    if let Some(parent) = target.parent() {
        fs::create_dir_all(parent).map_err(|e| e.to_string())?;
    }
    let partial = target.with_extension("part");
    let body = response.into_body().into_reader();
    let streamed = stream(body, &partial, url, total, budget);
    let (done, sha256) = match streamed {
        Ok(streamed) => streamed,
        Err(e) => {
            let _ = fs::remove_file(&partial);
            return Err(e);
        }
    };
    fs::rename(&partial, target).map_err(|e| e.to_string())?;
    tracing::info!(url, bytes = done, sha256, "downloaded");
    Ok(Some(sha256))
}

/// Writes `body` to `partial` within `budget`, hashing it; returns its size and SHA-256.
fn stream(
    mut body: impl Read,
    partial: &Path,
    url: &str,
    total: Option<u64>,
    budget: &mut Budget,
) -> std::result::Result<(u64, String), String> {
    let mut out = fs::File::create(partial).map_err(|e| format!("{}: {e}", partial.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let (mut done, mut logged) = (0u64, 0u64);
    loop {
        let n = body.read(&mut buf).map_err(|e| format!("{url}: {e}"))?;
        if n == 0 {
            break;
        }
        budget.left = budget
            .left
            .checked_sub(n as u64)
            .ok_or_else(|| too_large(url, budget.max))?;
        out.write_all(&buf[..n]).map_err(|e| e.to_string())?;
        hasher.update(&buf[..n]);
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
    Ok((done, format!("{:x}", hasher.finalize())))
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
    fn a_body_past_the_budget_is_refused_while_it_streams() {
        let dir = tempfile::tempdir().unwrap();
        let partial = dir.path().join("w.part");
        let mut budget = Budget::new(10);
        let body = std::io::Cursor::new(vec![7u8; 6]);
        let (n, sha) = stream(body, &partial, "u", None, &mut budget).unwrap();
        assert_eq!((n, budget.left), (6, 4));
        assert_eq!(sha, format!("{:x}", Sha256::digest([7u8; 6])));
        // No Content-Length to refuse up front: the cap is met while streaming.
        let body = std::io::Cursor::new(vec![7u8; 5]);
        let err = stream(body, &partial, "u", None, &mut budget).unwrap_err();
        assert!(
            err.contains("limit of 10 bytes (--max-download-bytes)"),
            "{err}"
        );
    }

    #[test]
    fn an_archive_cannot_inflate_past_the_cap() {
        let mut capped = Capped {
            inner: std::io::Cursor::new(vec![0u8; 100]),
            left: 99,
            exceeded: false,
        };
        assert!(std::io::copy(&mut capped, &mut std::io::sink()).is_err());
        assert!(capped.exceeded);
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
