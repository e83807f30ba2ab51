//! Where a model's files come from: a local folder, or a hub id (`owner/name`) downloaded once
//! into a cache folder. Decides which weights, tokenizer and pooling files a folder provides.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use candle_core::{DType, Device};
use candle_nn::VarBuilder;

use super::{ModelError, Result};

/// The files of one model folder, as chosen by [`ModelFiles::from_dir`].
#[derive(Clone, Debug)]
pub struct ModelFiles {
    pub dir: PathBuf,
    pub config: PathBuf,
    pub weights: WeightsFile,
    pub tokenizer: TokenizerFiles,
    /// `1_Pooling/config.json` of sentence-transformers folders.
    pub pooling_config: Option<PathBuf>,
}

/// `model.safetensors` is preferred: it is memory-mapped instead of unpickled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WeightsFile {
    Safetensors(PathBuf),
    /// Torch zip checkpoint (`pytorch_model.bin`).
    Pytorch(PathBuf),
}

/// `tokenizer.json` is preferred; `vocab.txt` is what older BERT folders (and ModelScope) ship.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenizerFiles {
    Json(PathBuf),
    Vocab {
        vocab: PathBuf,
        config: Option<PathBuf>,
    },
}

impl WeightsFile {
    /// A CPU f32 view of the checkpoint. Safetensors are memory-mapped, so tensors are read
    /// straight from the page cache instead of a second in-memory copy of the file.
    pub fn var_builder(&self) -> Result<VarBuilder<'static>> {
        let dev = Device::Cpu;
        Ok(match self {
            // SAFETY: the file is mapped read-only; model folders are not rewritten while served.
            WeightsFile::Safetensors(p) => unsafe {
                VarBuilder::from_mmaped_safetensors(&[p], DType::F32, &dev)?
            },
            WeightsFile::Pytorch(p) => VarBuilder::from_pth(p, DType::F32, &dev)?,
        })
    }
}

impl ModelFiles {
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let missing = |message: &str| ModelError::Files {
            dir: dir.to_path_buf(),
            message: message.to_string(),
        };
        let file = |name: &str| Some(dir.join(name)).filter(|p| p.is_file());
        let config = file("config.json").ok_or_else(|| missing("no config.json"))?;
        let weights = file("model.safetensors")
            .map(WeightsFile::Safetensors)
            .or_else(|| file("pytorch_model.bin").map(WeightsFile::Pytorch))
            .ok_or_else(|| missing("no model.safetensors or pytorch_model.bin"))?;
        let tokenizer = file("tokenizer.json")
            .map(TokenizerFiles::Json)
            .or_else(|| {
                file("vocab.txt").map(|vocab| TokenizerFiles::Vocab {
                    vocab,
                    config: file("tokenizer_config.json"),
                })
            })
            .ok_or_else(|| missing("no tokenizer.json or vocab.txt"))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            config,
            weights,
            tokenizer,
            pooling_config: file("1_Pooling/config.json"),
        })
    }

    /// A short display name: the folder's name.
    pub fn name(&self) -> String {
        self.dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| self.dir.display().to_string())
    }
}

/// Where and how hub ids are downloaded.
#[derive(Clone, Debug)]
pub struct HubConfig {
    /// Base URL of a Hugging Face compatible hub (files at `{endpoint}/{repo}/resolve/{revision}/{file}`).
    pub endpoint: String,
    pub revision: String,
    /// Downloads land in `{cache_dir}/{owner}--{name}/{revision}/`.
    pub cache_dir: PathBuf,
    /// Sent as a bearer token when set (private or gated models).
    pub token: Option<String>,
    /// Kept short so an unreachable hub fails fast instead of hanging the start-up.
    pub connect_timeout: Duration,
}

impl HubConfig {
    /// Defaults, overridable by environment: `NLU_HUB_ENDPOINT` (else `HF_ENDPOINT`, else
    /// https://huggingface.co), `NLU_MODEL_CACHE` (else `$HOME/.cache/nlu-server/models`),
    /// `HF_TOKEN`.
    pub fn from_env() -> Self {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let endpoint = var("NLU_HUB_ENDPOINT")
            .or_else(|| var("HF_ENDPOINT"))
            .unwrap_or_else(|| "https://huggingface.co".to_string());
        let cache_dir = var("NLU_MODEL_CACHE")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(var("HOME").unwrap_or_else(|| "/tmp".to_string()))
                    .join(".cache/nlu-server/models")
            });
        Self {
            endpoint: endpoint.trim_end_matches('/').to_string(),
            revision: "main".to_string(),
            cache_dir,
            token: var("HF_TOKEN"),
            connect_timeout: Duration::from_secs(5),
        }
    }
}

/// A model argument: an existing folder is used as is, anything shaped like `owner/name` is
/// downloaded (or taken from the cache).
pub fn resolve(spec: &str, hub: &HubConfig) -> Result<ModelFiles> {
    let path = Path::new(spec);
    if path.is_dir() {
        return ModelFiles::from_dir(path);
    }
    if !is_hub_id(spec) {
        return Err(ModelError::BadSpec(spec.to_string()));
    }
    ModelFiles::from_dir(&download(spec, hub)?)
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
    "model.safetensors",
];
/// Only fetched when the repository has no `model.safetensors`.
const FALLBACK_WEIGHTS: &str = "pytorch_model.bin";
/// Written after every file arrived: a cache folder without it is downloaded again.
const COMPLETE_MARKER: &str = ".complete";

/// Downloads hub model `repo` into the cache (once) and returns its folder.
pub fn download(repo: &str, hub: &HubConfig) -> Result<PathBuf> {
    if !is_hub_id(repo) {
        return Err(ModelError::BadSpec(repo.to_string()));
    }
    let dir = hub
        .cache_dir
        .join(repo.replace('/', "--"))
        .join(&hub.revision);
    if dir.join(COMPLETE_MARKER).is_file() {
        tracing::info!(repo, dir = %dir.display(), "model found in cache");
        return Ok(dir);
    }
    let fail = |message: String| ModelError::Download {
        repo: repo.to_string(),
        endpoint: hub.endpoint.clone(),
        message,
    };
    fs::create_dir_all(&dir).map_err(|e| fail(format!("cannot create {}: {e}", dir.display())))?;
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_connect(Some(hub.connect_timeout))
        .timeout_recv_response(Some(Duration::from_secs(60)))
        .http_status_as_error(false)
        .build()
        .into();
    tracing::info!(repo, endpoint = %hub.endpoint, dir = %dir.display(), "downloading model");
    for name in HUB_FILES {
        fetch(&agent, repo, name, hub, &dir).map_err(fail)?;
    }
    if !dir.join("model.safetensors").is_file() {
        fetch(&agent, repo, FALLBACK_WEIGHTS, hub, &dir).map_err(fail)?;
    }
    ModelFiles::from_dir(&dir)?;
    fs::write(dir.join(COMPLETE_MARKER), b"").map_err(|e| fail(e.to_string()))?;
    Ok(dir)
}

/// Fetches one file; a 404 is not an error (the file is optional), anything else is.
fn fetch(
    agent: &ureq::Agent,
    repo: &str,
    name: &str,
    hub: &HubConfig,
    dir: &Path,
) -> std::result::Result<(), String> {
    let url = format!("{}/{repo}/resolve/{}/{name}", hub.endpoint, hub.revision);
    let mut request = agent.get(&url);
    if let Some(token) = &hub.token {
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
    let target = dir.join(name);
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
                file = name,
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
    fs::rename(&partial, &target).map_err(|e| e.to_string())?;
    tracing::info!(file = name, bytes = done, "downloaded");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::is_hub_id;

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
}
