//! Which weights, tokenizer and pooling files a model folder provides, and how a model argument
//! (a folder or a hub id) becomes one.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use candle_nn::VarBuilder;

use super::download::{download, is_hub_id, HubConfig};
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
    /// bge-m3's sparse (lexical weight) head, `Linear(hidden -> 1)`: see [`ModelFiles::from_dir`].
    pub sparse_head: Option<WeightsFile>,
    /// bge-m3's multi-vector (ColBERT) head, `Linear(hidden -> dims)`.
    pub colbert_head: Option<WeightsFile>,
    /// `special_tokens_map.json`, else `tokenizer_config.json`: which tokens the tokenizer
    /// calls cls, eos, pad and unk (bge-m3's sparse head skips them).
    pub special_tokens: Option<PathBuf>,
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
        // bge-m3 keeps its extra heads next to the encoder, each a `{weight, bias}` state dict:
        // `sparse_linear.pt` / `colbert_linear.pt` (torch zip) as the hub ships them, or the same
        // tensors as `*.safetensors` (preferred, memory-mapped).
        let head = |name: &str| {
            file(&format!("{name}.safetensors"))
                .map(WeightsFile::Safetensors)
                .or_else(|| file(&format!("{name}.pt")).map(WeightsFile::Pytorch))
        };
        Ok(Self {
            dir: dir.to_path_buf(),
            config,
            weights,
            tokenizer,
            pooling_config: file("1_Pooling/config.json"),
            sparse_head: head("sparse_linear"),
            colbert_head: head("colbert_linear"),
            special_tokens: file("special_tokens_map.json")
                .or_else(|| file("tokenizer_config.json")),
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
