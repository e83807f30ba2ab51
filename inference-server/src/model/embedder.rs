//! Sentence embeddings: BERT or XLM-RoBERTa + pooling (+ optional L2 normalisation) over batches
//! of token-id sequences, and bge-m3's sparse and multi-vector outputs where the folder has
//! their heads ([`super::bge_m3`]). Synchronous and free of I/O after loading; the server calls
//! it from its model thread.

use serde::Serialize;

use super::bert::{Bert, BertConfig};
use super::bge_m3::{sparse_skip_ids, ColbertHead, M3Heads, SparseHead, SparseWeights};
use super::files::ModelFiles;
use super::kernels::linear::Dtype;
use super::pooling::{l2_normalize, Pooling};
use super::tokenizer::Tokenizer;
use super::{ModelError, Result};

/// Which outputs [`Embedder::encode`] computes (all from one forward).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Outputs {
    /// The pooled sentence vector ([`Embedder::embed`]'s).
    pub dense: bool,
    /// bge-m3's lexical weights ([`Embedder::has_sparse`]).
    pub sparse: bool,
    /// bge-m3's per-token vectors ([`Embedder::colbert_dims`]).
    pub colbert: bool,
}

impl Outputs {
    pub const DENSE: Outputs = Outputs {
        dense: true,
        sparse: false,
        colbert: false,
    };
    pub const SPARSE: Outputs = Outputs {
        dense: false,
        sparse: true,
        colbert: false,
    };
    pub const COLBERT: Outputs = Outputs {
        dense: false,
        sparse: false,
        colbert: true,
    };

    /// Every output either asks for.
    pub fn union(self, other: Outputs) -> Outputs {
        Outputs {
            dense: self.dense || other.dense,
            sparse: self.sparse || other.sparse,
            colbert: self.colbert || other.colbert,
        }
    }
}

/// One text's outputs: `Some` exactly for those asked for.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MultiEmbedding {
    pub dense: Option<Vec<f32>>,
    /// `(token id, weight)` ascending by id, weights > 0, special tokens left out.
    pub sparse: Option<SparseWeights>,
    /// One vector per token after the first (`<s>`/`[CLS]`), `</s>` included.
    pub colbert: Option<Vec<Vec<f32>>>,
}

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
    heads: M3Heads,
    info: EmbedderInfo,
}

impl Embedder {
    /// `pooling` overrides the folder's `1_Pooling/config.json`; with neither, CLS pooling
    /// (what BERT-style embedding models such as GTE, and bge-m3, use). bge-m3's heads are
    /// loaded when the folder has them ([`ModelFiles::sparse_head`],
    /// [`ModelFiles::colbert_head`]).
    pub fn load(files: &ModelFiles, pooling: Option<Pooling>, dtype: Dtype) -> Result<Self> {
        let cfg = BertConfig::load(&files.config)?;
        let pooling = match (pooling, &files.pooling_config) {
            (Some(p), _) => p,
            (None, Some(path)) => Pooling::from_config_file(path)?,
            (None, None) => Pooling::Cls,
        };
        let bert = Bert::load(&files.weights.var_builder()?, &cfg, dtype)?;
        let tokenizer = Tokenizer::load(&files.tokenizer)?;
        let hidden = cfg.hidden_size;
        let heads = M3Heads {
            sparse: match &files.sparse_head {
                Some(file) => {
                    let skip = sparse_skip_ids(files.special_tokens.as_deref(), &tokenizer)?;
                    Some(SparseHead::load(file, hidden, skip)?)
                }
                None => None,
            },
            colbert: files
                .colbert_head
                .as_ref()
                .map(|file| ColbertHead::load(file, hidden))
                .transpose()?,
        };
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
            heads,
            info,
        })
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    pub fn info(&self) -> &EmbedderInfo {
        &self.info
    }

    /// Whether the model has bge-m3's sparse head.
    pub fn has_sparse(&self) -> bool {
        self.heads.sparse.is_some()
    }

    /// The size of bge-m3's multi-vector output, when the model has that head.
    pub fn colbert_dims(&self) -> Option<usize> {
        self.heads.colbert.as_ref().map(ColbertHead::dims)
    }

    /// One vector per sequence. The batch runs packed (no padding), so it gives the same vectors
    /// as one-by-one calls.
    pub fn embed(&self, batch: &[Vec<u32>], normalize: bool) -> Result<Vec<Vec<f32>>> {
        Ok(self
            .encode(batch, Outputs::DENSE, normalize)?
            .into_iter()
            .map(|out| out.dense.expect("asked for the dense vector"))
            .collect())
    }

    /// The `outputs` asked for, per sequence, from one packed forward. `normalize` scales the
    /// dense vector and each multi-vector to unit length (FlagEmbedding's
    /// `normalize_embeddings`); lexical weights are never scaled. Asking for a head the model
    /// lacks is an input error.
    pub fn encode(
        &self,
        batch: &[Vec<u32>],
        outputs: Outputs,
        normalize: bool,
    ) -> Result<Vec<MultiEmbedding>> {
        let missing = |what: &str| {
            Err(ModelError::Input(format!(
                "the model {} has no {what} head",
                self.info.model
            )))
        };
        let sparse = match (outputs.sparse, &self.heads.sparse) {
            (true, None) => return missing("sparse"),
            (want, head) => head.as_ref().filter(|_| want),
        };
        let colbert = match (outputs.colbert, &self.heads.colbert) {
            (true, None) => return missing("multi-vector (colbert)"),
            (want, head) => head.as_ref().filter(|_| want),
        };
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        self.bert.check(batch, None)?;
        let dims = self.info.dims;
        let states = self.bert.forward(batch);
        let lens: Vec<usize> = batch.iter().map(Vec::len).collect();
        let mut dense = if outputs.dense {
            let mut pooled = self.pooling.pool(&states, &lens, dims);
            if normalize {
                pooled.iter_mut().for_each(|v| l2_normalize(v));
            }
            pooled.into_iter().map(Some).collect()
        } else {
            vec![None; batch.len()]
        };
        let mut first = 0;
        let mut out = Vec::with_capacity(batch.len());
        for (seq, dense) in batch.iter().zip(dense.iter_mut()) {
            let rows = &states[first * dims..(first + seq.len()) * dims];
            first += seq.len();
            out.push(MultiEmbedding {
                dense: dense.take(),
                sparse: sparse.map(|h| h.weights(rows, seq)),
                colbert: colbert.map(|h| h.vectors(rows, dims, normalize)),
            });
        }
        Ok(out)
    }
}
