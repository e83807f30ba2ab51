//! Cross-encoders (rerankers): a (query, passage) pair runs through the encoder as one sequence
//! and a classification head turns its first token's state into one logit.
//!
//! Two heads, one computation (`out(tanh(dense(state of token 0)))`), told apart by the
//! config's family ([`super::bert::Layout`]):
//! - `BertForSequenceClassification`: `bert.pooler.dense` + tanh, then `classifier`;
//! - `XLMRobertaForSequenceClassification` (bge-reranker): `classifier.dense` + tanh, then
//!   `classifier.out_proj` (no pooler).
//!
//! Dropout is off at inference, so neither head has more to it. Only `num_labels` 1 (a
//! relevance score) is supported. [`CrossEncoder::score`] returns raw logits; whether a score
//! is the logit or its sigmoid is [`ScoreActivation`], decided from `config.json`.

use candle_nn::VarBuilder;
use serde::Serialize;

use super::bert::{Bert, BertConfig, Family, Linear};
use super::files::ModelFiles;
use super::kernels::linear::Dtype;
use super::tokenizer::{PairEncoding, Tokenizer};
use super::{ModelError, Result};

/// What turns a logit into the model's score.
///
/// The rule, sentence-transformers' `CrossEncoder` default (4.x, `get_default_activation_fn`):
/// 1. the activation the model was saved with: `sentence_transformers.activation_fn` in
///    `config.json` (sentence-transformers >= 4), else `sbert_ce_default_activation_function`
///    (older): a class path ending in `Sigmoid` or `Identity` (any other is refused);
/// 2. otherwise sigmoid when `num_labels` is 1 (always, here), identity otherwise.
///
/// TEI applies the sigmoid unless `raw_scores` is asked for; an HTTP layer can do the same with
/// [`ScoreActivation::apply`], or skip it for raw scores.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ScoreActivation {
    Sigmoid,
    Identity,
}

impl ScoreActivation {
    pub fn apply(self, logit: f32) -> f32 {
        match self {
            Self::Sigmoid => 1.0 / (1.0 + (-logit).exp()),
            Self::Identity => logit,
        }
    }

    /// The rule above, from `config.json`'s content.
    pub fn from_config(config: &serde_json::Value) -> Result<Self> {
        let saved = config
            .get("sentence_transformers")
            .and_then(|st| st.get("activation_fn"))
            .or_else(|| config.get("sbert_ce_default_activation_function"))
            .filter(|v| !v.is_null());
        match saved {
            Some(v) => {
                let path = v.as_str().ok_or_else(|| {
                    ModelError::Config(format!("the cross-encoder activation {v} is not a string"))
                })?;
                match path.rsplit('.').next() {
                    Some("Sigmoid") => Ok(Self::Sigmoid),
                    Some("Identity") => Ok(Self::Identity),
                    _ => Err(ModelError::Config(format!(
                        "cross-encoder activation {path:?} is not supported (only Sigmoid or Identity)"
                    ))),
                }
            }
            None if num_labels(config) == 1 => Ok(Self::Sigmoid),
            None => Ok(Self::Identity),
        }
    }
}

/// transformers' `PretrainedConfig.num_labels`: `num_labels`, else the size of `id2label`, else 2.
fn num_labels(config: &serde_json::Value) -> usize {
    config
        .get("num_labels")
        .and_then(|n| n.as_u64())
        .map(|n| n as usize)
        .or_else(|| config.get("id2label")?.as_object().map(|m| m.len()))
        .unwrap_or(2)
}

/// What an `/info` route can report.
#[derive(Clone, Debug, Serialize)]
pub struct CrossEncoderInfo {
    pub model: String,
    pub family: Family,
    /// The longest pair (special tokens included) the position table allows.
    pub max_positions: usize,
    pub activation: ScoreActivation,
    /// The encoder's hidden size.
    pub hidden_size: usize,
    /// What the encoder's weights are multiplied in.
    pub dtype: Dtype,
}

pub struct CrossEncoder {
    bert: Bert,
    /// BERT: the pooler's dense layer; XLM-R: `classifier.dense`. Followed by tanh.
    dense: Linear,
    /// BERT: `classifier`; XLM-R: `classifier.out_proj`. hidden -> 1.
    out: Linear,
    tokenizer: Tokenizer,
    hidden: usize,
    info: CrossEncoderInfo,
}

/// `vb` has `{name}.weight`, else a config error naming the checkpoint kind expected.
fn require(vb: &VarBuilder, name: &str, kind: &str) -> Result<()> {
    if vb.contains_tensor(&format!("{name}.weight")) {
        Ok(())
    } else {
        Err(ModelError::Config(format!(
            "not a {kind} checkpoint: it has no {name}.weight"
        )))
    }
}

impl CrossEncoder {
    pub fn load(files: &ModelFiles, dtype: Dtype) -> Result<Self> {
        let cfg = BertConfig::load(&files.config)?;
        let text = std::fs::read_to_string(&files.config)
            .map_err(|e| ModelError::Config(format!("{}: {e}", files.config.display())))?;
        let raw: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| ModelError::Config(format!("{}: {e}", files.config.display())))?;
        let labels = num_labels(&raw);
        if labels != 1 {
            return Err(ModelError::Config(format!(
                "a cross-encoder needs num_labels 1 (one relevance logit), not {labels}"
            )));
        }
        let activation = ScoreActivation::from_config(&raw)?;
        let vb = files.weights.var_builder()?;
        let layout = cfg.layout();
        let h = cfg.hidden_size;
        let (dense, out) = match layout.family {
            Family::Bert => {
                let kind = "BertForSequenceClassification";
                let base = layout.encoder_weights(&vb);
                require(&base, "pooler.dense", kind)?;
                require(&vb, "classifier", kind)?;
                (base.pp("pooler.dense"), vb.pp("classifier"))
            }
            Family::Roberta => {
                let kind = "XLMRobertaForSequenceClassification";
                require(&vb, "classifier.dense", kind)?;
                require(&vb, "classifier.out_proj", kind)?;
                (vb.pp("classifier.dense"), vb.pp("classifier.out_proj"))
            }
        };
        let dense = Linear::load(&dense, h, h, Dtype::F32)?;
        let out = Linear::load(&out, h, 1, Dtype::F32)?;
        let bert = Bert::load(&vb, &cfg, dtype)?;
        let info = CrossEncoderInfo {
            model: files.name(),
            family: layout.family,
            max_positions: bert.embeddings().max_positions(),
            activation,
            hidden_size: h,
            dtype,
        };
        Ok(Self {
            bert,
            dense,
            out,
            tokenizer: Tokenizer::load(&files.tokenizer)?,
            hidden: h,
            info,
        })
    }

    /// Encodes pairs with [`Tokenizer::encode_pair`] (truncate at [`CrossEncoderInfo::max_positions`]
    /// or less).
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    pub fn info(&self) -> &CrossEncoderInfo {
        &self.info
    }

    /// One raw logit per pair (apply [`CrossEncoderInfo::activation`] for scores). The batch
    /// runs packed, so it gives the same logits as one-by-one calls.
    pub fn score(&self, pairs: &[PairEncoding]) -> Result<Vec<f32>> {
        if pairs.is_empty() {
            return Ok(Vec::new());
        }
        let (ids, segments): (Vec<Vec<u32>>, Vec<Vec<u32>>) = pairs
            .iter()
            .map(|p| (p.ids.clone(), p.segments.clone()))
            .unzip();
        self.bert.check(&ids, Some(&segments))?;
        let states = self.bert.forward_segments(&ids, Some(&segments));
        let h = self.hidden;
        let mut first_tokens = Vec::with_capacity(pairs.len() * h);
        let mut start = 0;
        for seq in &ids {
            first_tokens.extend_from_slice(&states[start * h..(start + 1) * h]);
            start += seq.len();
        }
        let mut x = self.dense.forward(&first_tokens);
        x.iter_mut().for_each(|v| *v = v.tanh());
        Ok(self.out.forward(&x))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn activation_follows_the_saved_one_then_num_labels() {
        let act = |v| ScoreActivation::from_config(&v).unwrap();
        assert_eq!(
            act(json!({"id2label": {"0": "LABEL_0"}})),
            ScoreActivation::Sigmoid
        );
        assert_eq!(act(json!({"num_labels": 1})), ScoreActivation::Sigmoid);
        assert_eq!(
            act(json!({})),
            ScoreActivation::Identity,
            "transformers' default: 2 labels"
        );
        assert_eq!(
            act(json!({"id2label": {"0": "LABEL_0"},
                "sentence_transformers": {"activation_fn": "torch.nn.modules.linear.Identity"}})),
            ScoreActivation::Identity
        );
        assert_eq!(
            act(json!({"num_labels": 1,
                "sbert_ce_default_activation_function": "torch.nn.modules.linear.Identity"})),
            ScoreActivation::Identity
        );
        assert_eq!(
            act(json!({"num_labels": 1, "sbert_ce_default_activation_function": null})),
            ScoreActivation::Sigmoid
        );
        assert!(ScoreActivation::from_config(&json!({
            "sentence_transformers": {"activation_fn": "torch.nn.modules.activation.Tanh"}
        }))
        .is_err());
    }

    #[test]
    fn sigmoid_and_identity() {
        assert_eq!(ScoreActivation::Sigmoid.apply(0.0), 0.5);
        assert!((ScoreActivation::Sigmoid.apply(2.0) - 0.880_797).abs() < 1e-6);
        assert_eq!(ScoreActivation::Identity.apply(-3.5), -3.5);
    }
}
