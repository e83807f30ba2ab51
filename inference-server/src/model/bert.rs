//! A BERT encoder on candle tensors, laid out for CPU speed: Q, K and V are one fused matmul
//! against weights transposed once at load time, attention runs per (sequence, head) straight
//! from that matmul's rows ([`super::kernels::attention`]), LayerNorm uses candle's fused kernel,
//! and layers are separate values so that models can run any slice of them (UniNLU runs the
//! lower and upper halves on different inputs). Embeddings take explicit position and
//! token-type ids.

use std::path::Path;

use candle_core::{DType, Device, Storage, Tensor};
use candle_nn::VarBuilder;
use serde::Deserialize;

use super::kernels::attention::{attention, Dims};
use super::kernels::linear::{linear, Activation};
use super::{ModelError, Result};

/// The fields of `config.json` the encoder needs.
#[derive(Clone, Debug, Deserialize)]
pub struct BertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    #[serde(default = "default_positions")]
    pub max_position_embeddings: usize,
    #[serde(default = "default_type_vocab")]
    pub type_vocab_size: usize,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    #[serde(default)]
    pub position_embedding_type: Option<String>,
}

fn default_positions() -> usize {
    512
}
fn default_type_vocab() -> usize {
    2
}
fn default_eps() -> f64 {
    1e-12
}
fn default_act() -> String {
    "gelu".into()
}

impl BertConfig {
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ModelError::Config(format!("{}: {e}", path.display())))?;
        let cfg: Self = serde_json::from_str(&text)
            .map_err(|e| ModelError::Config(format!("{}: {e}", path.display())))?;
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(ModelError::Config(m));
        if self.hidden_act != "gelu" {
            return bad(format!(
                "hidden_act {:?} is not supported (only \"gelu\", erf)",
                self.hidden_act
            ));
        }
        if let Some(kind) = self
            .position_embedding_type
            .as_deref()
            .filter(|k| *k != "absolute")
        {
            return bad(format!("position_embedding_type {kind:?} is not supported"));
        }
        if self.num_attention_heads == 0
            || !self.hidden_size.is_multiple_of(self.num_attention_heads)
        {
            return bad(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            ));
        }
        Ok(())
    }
}

/// `x @ w_t + b` with `w_t` stored `[in, out]` row-major, so the matmul reads it without a
/// transposed view.
#[derive(Clone, Debug)]
pub struct Linear {
    w_t: Tensor,
    b: Tensor,
}

impl Linear {
    fn load(vb: &VarBuilder, in_dim: usize, out_dim: usize) -> Result<Self> {
        Self::fused(std::slice::from_ref(vb), in_dim, out_dim)
    }

    /// Several `Linear(in -> out)` checkpoint layers as one `Linear(in -> n*out)`.
    pub(crate) fn fused(vbs: &[VarBuilder], in_dim: usize, out_dim: usize) -> Result<Self> {
        let mut ws = Vec::with_capacity(vbs.len());
        let mut bs = Vec::with_capacity(vbs.len());
        for vb in vbs {
            ws.push(vb.get((out_dim, in_dim), "weight")?);
            bs.push(vb.get(out_dim, "bias")?);
        }
        Ok(Self {
            w_t: Tensor::cat(&ws, 0)?.t()?.contiguous()?,
            b: Tensor::cat(&bs, 0)?,
        })
    }

    /// `x`: `[rows, in]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_then(x, None, Activation::None)
    }

    /// `act(x @ w_t + b + residual)` in one output buffer ([`linear`]).
    fn forward_then(
        &self,
        x: &Tensor,
        residual: Option<&Tensor>,
        act: Activation,
    ) -> Result<Tensor> {
        let x = x.contiguous()?;
        let (rows, _) = x.dims2()?;
        let mut inputs = vec![&x, &self.w_t, &self.b];
        inputs.extend(residual);
        let out = with_f32_slices(&inputs, |s| {
            linear(s[0], s[1], s[2], s.get(3).copied(), rows, act)
        })?;
        Ok(Tensor::from_vec(out, (rows, self.b.dim(0)?), &Device::Cpu)?)
    }
}

#[derive(Clone, Debug)]
struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f32,
}

impl LayerNorm {
    fn load(vb: &VarBuilder, dim: usize, eps: f64) -> Result<Self> {
        Ok(Self {
            weight: vb.get(dim, "weight")?,
            bias: vb.get(dim, "bias")?,
            eps: eps as f32,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(candle_nn::ops::layer_norm(
            x,
            &self.weight,
            &self.bias,
            self.eps,
        )?)
    }
}

/// `LayerNorm(word + token_type + position)`.
#[derive(Clone, Debug)]
pub struct Embeddings {
    word: Tensor,
    position: Tensor,
    token_type: Tensor,
    norm: LayerNorm,
}

impl Embeddings {
    pub fn load(vb: &VarBuilder, cfg: &BertConfig) -> Result<Self> {
        let h = cfg.hidden_size;
        Ok(Self {
            word: vb.get((cfg.vocab_size, h), "word_embeddings.weight")?,
            position: vb.get(
                (cfg.max_position_embeddings, h),
                "position_embeddings.weight",
            )?,
            token_type: vb.get((cfg.type_vocab_size, h), "token_type_embeddings.weight")?,
            norm: LayerNorm::load(&vb.pp("LayerNorm"), h, cfg.layer_norm_eps)?,
        })
    }

    /// All three id tensors are `[batch, len]` u32; returns `[batch, len, hidden]`.
    pub fn forward(
        &self,
        ids: &Tensor,
        positions: &Tensor,
        token_types: &Tensor,
    ) -> Result<Tensor> {
        let (b, t) = ids.dims2()?;
        let h = self.word.dim(1)?;
        let lookup = |table: &Tensor, idx: &Tensor| -> Result<Tensor> {
            Ok(table.index_select(&idx.flatten_all()?, 0)?)
        };
        // Same summation order as transformers' BertEmbeddings.
        let x = ((lookup(&self.word, ids)? + lookup(&self.token_type, token_types)?)?
            + lookup(&self.position, positions)?)?;
        self.norm
            .forward(&x)?
            .reshape((b, t, h))
            .map_err(Into::into)
    }

    pub fn vocab_size(&self) -> usize {
        self.word.dims()[0]
    }

    pub fn max_positions(&self) -> usize {
        self.position.dims()[0]
    }
}

/// One transformer layer (post-LayerNorm BERT).
#[derive(Clone, Debug)]
pub struct Layer {
    qkv: Linear,
    attn_out: Linear,
    attn_norm: LayerNorm,
    intermediate: Linear,
    output: Linear,
    out_norm: LayerNorm,
    heads: usize,
}

impl Layer {
    /// `vb` points at `...layer.{i}`.
    pub fn load(vb: &VarBuilder, cfg: &BertConfig) -> Result<Self> {
        let (h, i, eps) = (cfg.hidden_size, cfg.intermediate_size, cfg.layer_norm_eps);
        let att = vb.pp("attention");
        let sa = att.pp("self");
        let mut qkv = Linear::fused(&[sa.pp("query"), sa.pp("key"), sa.pp("value")], h, h)?;
        // 1/sqrt(head_dim) folded into the query projection: saves a pass over the scores.
        let scale = (1.0 / ((h / cfg.num_attention_heads) as f64).sqrt()) as f32;
        let columns: Vec<f32> = (0..3 * h)
            .map(|c| if c < h { scale } else { 1.0 })
            .collect();
        let columns = Tensor::from_vec(columns, 3 * h, &Device::Cpu)?;
        qkv.w_t = qkv.w_t.broadcast_mul(&columns)?;
        qkv.b = (&qkv.b * &columns)?;
        Ok(Self {
            qkv,
            attn_out: Linear::load(&att.pp("output.dense"), h, h)?,
            attn_norm: LayerNorm::load(&att.pp("output.LayerNorm"), h, eps)?,
            intermediate: Linear::load(&vb.pp("intermediate.dense"), h, i)?,
            output: Linear::load(&vb.pp("output.dense"), i, h)?,
            out_norm: LayerNorm::load(&vb.pp("output.LayerNorm"), h, eps)?,
            heads: cfg.num_attention_heads,
        })
    }

    /// `x`: `[batch, len, hidden]`; `mask`: additive, `[batch, 1, 1, len]`, `None` when no key
    /// is masked (see [`additive_mask`]).
    pub fn forward(&self, x: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        let (b, t, h) = x.dims3()?;
        let x = x.reshape((b * t, h))?;
        let qkv = self.qkv.forward(&x)?;
        let mask = mask
            .map(|m| m.flatten_all()?.to_vec1::<f32>())
            .transpose()?;
        let dims = Dims {
            batch: b,
            len: t,
            heads: self.heads,
            head_dim: h / self.heads,
        };
        let context = with_f32_slices(&[&qkv], |s| attention(s[0], mask.as_deref(), dims))?;
        let context = Tensor::from_vec(context, (b * t, h), &Device::Cpu)?;
        let x = self.attn_norm.forward(&self.attn_out.forward_then(
            &context,
            Some(&x),
            Activation::None,
        )?)?;
        let inner = self
            .intermediate
            .forward_then(&x, None, Activation::GeluErf)?;
        let y = self.out_norm.forward(&self.output.forward_then(
            &inner,
            Some(&x),
            Activation::None,
        )?)?;
        Ok(y.reshape((b, t, h))?)
    }
}

/// Runs `f` on the f32 values of contiguous CPU tensors, without copying them.
fn with_f32_slices<R>(xs: &[&Tensor], f: impl FnOnce(&[&[f32]]) -> R) -> Result<R> {
    let guards: Vec<_> = xs.iter().map(|x| x.storage_and_layout()).collect();
    let slices = guards
        .iter()
        .map(
            |(storage, layout)| match (&**storage, layout.contiguous_offsets()) {
                (Storage::Cpu(cpu), Some((start, end))) => Ok(&cpu.as_slice::<f32>()?[start..end]),
                _ => Err(candle_core::Error::Msg(
                    "the CPU kernels need contiguous CPU tensors".into(),
                )),
            },
        )
        .collect::<candle_core::Result<Vec<_>>>()?;
    Ok(f(&slices))
}

/// Runs `x` through `layers` in order.
pub fn run_layers(layers: &[Layer], x: Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
    layers
        .iter()
        .try_fold(x, |x, layer| layer.forward(&x, mask))
}

/// Loads `{prefix}.0`, `{prefix}.1`, ... for as many layers as the checkpoint holds.
pub fn load_layers(vb: &VarBuilder, prefix: &str, cfg: &BertConfig) -> Result<Vec<Layer>> {
    let mut layers = Vec::new();
    loop {
        let layer_vb = vb.pp(format!("{prefix}.{}", layers.len()));
        if !layer_vb.contains_tensor("attention.self.query.weight") {
            return Ok(layers);
        }
        layers.push(Layer::load(&layer_vb, cfg)?);
    }
}

/// 0/1 key mask `[batch, len]` (row-major) -> additive `[batch, 1, 1, len]`: 0 for kept keys, the
/// most negative f32 for masked ones, as transformers does. `None` when nothing is masked.
pub fn additive_mask(mask: &[u32], batch: usize, len: usize) -> Result<Option<Tensor>> {
    if mask.iter().all(|&m| m != 0) {
        return Ok(None);
    }
    let values: Vec<f32> = mask
        .iter()
        .map(|&m| if m == 0 { f32::MIN } else { 0.0 })
        .collect();
    Ok(Some(Tensor::from_vec(
        values,
        (batch, 1, 1, len),
        &Device::Cpu,
    )?))
}

/// A plain BERT encoder (embeddings + all layers), as used by sentence-embedding models.
#[derive(Clone, Debug)]
pub struct Bert {
    embeddings: Embeddings,
    layers: Vec<Layer>,
}

impl Bert {
    /// Accepts unprefixed keys (sentence-transformers, GTE) and `bert.`-prefixed ones.
    pub fn load(vb: &VarBuilder, cfg: &BertConfig) -> Result<Self> {
        let vb = if vb.contains_tensor("bert.embeddings.word_embeddings.weight") {
            vb.pp("bert")
        } else {
            vb.clone()
        };
        let layers = load_layers(&vb, "encoder.layer", cfg)?;
        if layers.is_empty() {
            return Err(ModelError::Config(
                "the checkpoint has no encoder.layer.* weights".into(),
            ));
        }
        Ok(Self {
            embeddings: Embeddings::load(&vb.pp("embeddings"), cfg)?,
            layers,
        })
    }

    pub fn embeddings(&self) -> &Embeddings {
        &self.embeddings
    }

    /// `ids` and `mask`: `[batch, len]` row-major; returns the last hidden states
    /// `[batch, len, hidden]`.
    pub fn forward(&self, ids: &[u32], mask: &[u32], batch: usize, len: usize) -> Result<Tensor> {
        let dev = Device::Cpu;
        let ids = Tensor::from_slice(ids, (batch, len), &dev)?;
        let positions = Tensor::arange(0u32, len as u32, &dev)?
            .unsqueeze(0)?
            .broadcast_as((batch, len))?;
        let types = Tensor::zeros((batch, len), DType::U32, &dev)?;
        let x = self.embeddings.forward(&ids, &positions, &types)?;
        run_layers(&self.layers, x, additive_mask(mask, batch, len)?.as_ref())
    }
}
