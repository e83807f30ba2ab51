//! Sentence embeddings: BERT + pooling (+ optional L2 normalisation) over batches of token-id
//! sequences. Synchronous and free of I/O after loading; the server calls it from its model thread.

use serde::Serialize;

use super::bert::{Bert, BertConfig};
use super::files::ModelFiles;
use super::kernels::linear::Dtype;
use super::pooling::{l2_normalize, Pooling};
use super::tokenizer::Tokenizer;
use super::Result;

/// What `/info` reports.
#[derive(Clone, Debug, Serialize)]
pub struct EmbedderInfo {
    pub model: String,
    pub dims: usize,
    /// The longest token sequence the position table allows.
    pub max_positions: usize,
    pub pooling: Pooling,
    /// What the weights are multiplied in.
    pub dtype: Dtype,
}

pub struct Embedder {
    bert: Bert,
    tokenizer: Tokenizer,
    pooling: Pooling,
    info: EmbedderInfo,
}

impl Embedder {
    /// `pooling` overrides the folder's `1_Pooling/config.json`; with neither, CLS pooling
    /// (what BERT-style embedding models such as GTE use).
    pub fn load(files: &ModelFiles, pooling: Option<Pooling>, dtype: Dtype) -> Result<Self> {
        let cfg = BertConfig::load(&files.config)?;
        let pooling = match (pooling, &files.pooling_config) {
            (Some(p), _) => p,
            (None, Some(path)) => Pooling::from_config_file(path)?,
            (None, None) => Pooling::Cls,
        };
        let bert = Bert::load(&files.weights.var_builder()?, &cfg, dtype)?;
        let tokenizer = Tokenizer::load(&files.tokenizer)?;
        let info = EmbedderInfo {
            model: files.name(),
            dims: cfg.hidden_size,
            max_positions: bert.embeddings().max_positions(),
            pooling,
            dtype,
        };
        Ok(Self {
            bert,
            tokenizer,
            pooling,
            info,
        })
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    pub fn info(&self) -> &EmbedderInfo {
        &self.info
    }

    /// One vector per sequence. The batch runs packed (no padding), so it gives the same vectors
    /// as one-by-one calls.
    pub fn embed(&self, batch: &[Vec<u32>], normalize: bool) -> Result<Vec<Vec<f32>>> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        self.bert.check(batch, None)?;
        let hidden = self.bert.forward(batch);
        let lens: Vec<usize> = batch.iter().map(Vec::len).collect();
        let mut pooled = self.pooling.pool(&hidden, &lens, self.info.dims);
        if normalize {
            pooled.iter_mut().for_each(|v| l2_normalize(v));
        }
        Ok(pooled)
    }
}
