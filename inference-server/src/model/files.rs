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
