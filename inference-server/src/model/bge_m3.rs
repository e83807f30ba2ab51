//! bge-m3's extra heads over the encoder's last hidden states, as FlagEmbedding computes them at
//! inference (`EncoderOnlyEmbedderM3ModelForInference` and `M3Embedder.encode_single_device`):
//!
//! - sparse (lexical weights): `relu(sparse_linear(state))` per token; per token id the largest
//!   weight, keeping only positive weights and skipping the cls, eos, pad and unk tokens;
//! - multi-vector (ColBERT): `colbert_linear(state)` for every token but the first (`<s>`),
//!   L2-normalised per vector when embeddings are normalised.
//!
//! The heads live next to the encoder weights as `sparse_linear.{safetensors,pt}` and
//! `colbert_linear.{safetensors,pt}` (`{weight, bias}` state dicts; see
//! [`super::files::ModelFiles`]); a model without them simply has no such outputs.

use std::path::Path;

use super::bert::Linear;
use super::files::WeightsFile;
use super::kernels::linear::Dtype;
use super::pooling::l2_normalize;
use super::tokenizer::Tokenizer;
use super::{ModelError, Result};

/// One text's lexical weights: `(token id, weight)`, ascending by token id, weights > 0.
pub type SparseWeights = Vec<(u32, f32)>;

/// `Linear(hidden -> out)` from a head file; `out` from the file when `None`.
fn load_linear(file: &WeightsFile, hidden: usize, out: Option<usize>) -> Result<Linear> {
    let vb = file.var_builder()?;
    let out = match out {
        Some(out) => out,
        None => {
            let dims = vb.get_unchecked("weight")?.dims().to_vec();
            match dims[..] {
                [out, inp] if inp == hidden => out,
                _ => {
                    return Err(ModelError::Config(format!(
                        "{file:?}: weight of shape {dims:?} is not [dims, {hidden}]"
                    )))
                }
            }
        }
    };
    Linear::load(&vb, hidden, out, Dtype::F32)
}

/// bge-m3's `sparse_linear`.
pub struct SparseHead {
    linear: Linear,
    /// Ids whose weights are never reported (cls, eos, pad, unk).
    skip: Vec<u32>,
}

impl SparseHead {
    pub fn load(file: &WeightsFile, hidden: usize, skip: Vec<u32>) -> Result<Self> {
        Ok(Self {
            linear: load_linear(file, hidden, Some(1))?,
            skip,
        })
    }

    /// `states`: one sequence's token states, `[ids.len(), hidden]`.
    pub fn weights(&self, states: &[f32], ids: &[u32]) -> SparseWeights {
        lexical_weights(ids, &self.linear.forward(states), &self.skip)
    }
}

/// FlagEmbedding's `_process_token_weights` on `relu`'s input: per token id the largest
/// weight, keeping only positive ones (which is also what `relu` leaves) and no `skip` id.
fn lexical_weights(ids: &[u32], weights: &[f32], skip: &[u32]) -> SparseWeights {
    debug_assert_eq!(ids.len(), weights.len());
    let mut out: SparseWeights = ids
        .iter()
        .zip(weights)
        .filter(|&(id, &w)| w > 0.0 && !skip.contains(id))
        .map(|(&id, &w)| (id, w))
        .collect();
    out.sort_by_key(|&(id, _)| id);
    out.dedup_by(|next, kept| {
        let same = next.0 == kept.0;
        if same {
            kept.1 = kept.1.max(next.1);
        }
        same
    });
    out
}

/// bge-m3's `colbert_linear`.
pub struct ColbertHead {
    linear: Linear,
    dims: usize,
}

impl ColbertHead {
    /// The output size comes from the file (bge-m3: the hidden size).
    pub fn load(file: &WeightsFile, hidden: usize) -> Result<Self> {
        let linear = load_linear(file, hidden, None)?;
        let dims = linear.out_dim();
        Ok(Self { linear, dims })
    }

    pub fn dims(&self) -> usize {
        self.dims
    }

    /// `states`: one sequence's token states, `[tokens, hidden]`; one vector per token after
    /// the first.
    pub fn vectors(&self, states: &[f32], hidden: usize, normalize: bool) -> Vec<Vec<f32>> {
        let rest = states.get(hidden..).unwrap_or_default();
        if rest.is_empty() {
            return Vec::new();
        }
        self.linear
            .forward(rest)
            .chunks_exact(self.dims)
            .map(|v| {
                let mut v = v.to_vec();
                if normalize {
                    l2_normalize(&mut v);
                }
                v
            })
            .collect()
    }
}

/// The tokens bge-m3's sparse output skips: what the tokenizer files call `cls_token`,
/// `eos_token`, `pad_token` and `unk_token` (FlagEmbedding's `unused_tokens`); without such a
/// file, XLM-RoBERTa's `<s>`, `</s>`, `<pad>` and `<unk>`. Tokens the vocabulary lacks are
/// left out.
pub fn sparse_skip_ids(special_tokens: Option<&Path>, tokenizer: &Tokenizer) -> Result<Vec<u32>> {
    let map: serde_json::Value = match special_tokens {
        Some(path) => {
            let bad = |e: String| ModelError::Config(format!("{}: {e}", path.display()));
            let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
            serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?
        }
        None => serde_json::Value::Null,
    };
    let token = |key: &str, default: &str| -> String {
        map.get(key)
            .and_then(|v| v.as_str().or_else(|| v.get("content")?.as_str()))
            .unwrap_or(default)
            .to_string()
    };
    let mut ids: Vec<u32> = [
        token("cls_token", "<s>"),
        token("eos_token", "</s>"),
        token("pad_token", "<pad>"),
        token("unk_token", "<unk>"),
    ]
    .iter()
    .filter_map(|t| tokenizer.token_id(t))
    .collect();
    ids.sort_unstable();
    ids.dedup();
    Ok(ids)
}

/// The heads a folder has (either, both or none).
#[derive(Default)]
pub struct M3Heads {
    pub sparse: Option<SparseHead>,
    pub colbert: Option<ColbertHead>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lexical_weights_keep_the_largest_positive_weight_per_id_and_skip_specials() {
        let ids = [0, 5, 3, 5, 5, 9, 2];
        let w = [3.0, 0.1, 0.4, 0.7, 0.2, -0.5, 1.0];
        assert_eq!(lexical_weights(&ids, &w, &[0, 2]), vec![(3, 0.4), (5, 0.7)]);
    }
}
