//! A BERT encoder laid out for CPU speed. Weights come from candle's `VarBuilder` and are
//! arranged once at load time for the matmul kernel ([`Weights`]); activations are plain
//! `[tokens, hidden]` f32 buffers that the kernels in [`super::kernels`] fill in place: Q, K and
//! V are one fused matmul, attention runs per (sequence, head) straight from its rows, the
//! residual enters in the output matmul and LayerNorm normalises that buffer in place.
//! Batches are packed: the tokens of all sequences back to back, no padding (so no mask), and
//! the linear layers only do real work. Layers are separate values so that models can run any slice of them (UniNLU
//! runs the lower and upper halves on different inputs). Embeddings take explicit position and
//! token-type ids.
//!
//! (XLM-)RoBERTa checkpoints run through the same code: their weights, layers and kernels are
//! BERT's. What differs (weight prefix, position ids, token types) is decided from `config.json`
//! in one pure place, [`Layout`].

use std::cell::RefCell;
use std::path::Path;

use candle_nn::VarBuilder;
use serde::Deserialize;

use super::kernels::attention::{attention, Dims};
use super::kernels::linear::{linear, linear_into, Activation, Dtype, Weights};
use super::kernels::memory::buffer;
use super::kernels::norm::layer_norm_in_place;
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
    /// `bert` (also when absent), `roberta` or `xlm-roberta`; see [`Layout`].
    #[serde(default)]
    pub model_type: Option<String>,
    /// RoBERTa's padding index, which its position ids start after (transformers' default 1 for
    /// RoBERTa configs; unused for BERT).
    #[serde(default)]
    pub pad_token_id: Option<u32>,
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
        let layout = self.layout();
        if self.max_position_embeddings <= layout.position_offset() {
            return bad(format!(
                "max_position_embeddings {} leaves no position after the padding index {}",
                self.max_position_embeddings,
                layout.position_offset() - 1
            ));
        }
        Ok(())
    }

    /// How this checkpoint's token ids become embedding rows and where its weights live.
    pub fn layout(&self) -> Layout {
        Layout::new(self.model_type.as_deref(), self.pad_token_id)
    }
}

/// The checkpoint families the encoder runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Family {
    /// BERT and its look-alikes (GTE, MiniLM, StructBERT): `model_type` `bert` or absent.
    Bert,
    /// RoBERTa and XLM-RoBERTa (bge-m3, bge-reranker): `model_type` `roberta` or `xlm-roberta`.
    Roberta,
}

/// Everything that differs between BERT and (XLM-)RoBERTa checkpoints once the weights are
/// loaded: the weight-name prefix, the position ids and the token types. Pure, decided from
/// `config.json` ([`BertConfig::layout`]); the encoder, its kernels and the packing are shared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    pub family: Family,
    /// RoBERTa's padding index (0 for BERT, where it is unused).
    pad: u32,
}

impl Layout {
    /// `model_type` `roberta` / `xlm-roberta` is RoBERTa (padding index `pad_token_id`,
    /// transformers' default 1); anything else keeps the BERT rules the encoder always had.
    pub fn new(model_type: Option<&str>, pad_token_id: Option<u32>) -> Self {
        match model_type {
            Some("roberta" | "xlm-roberta") => Self {
                family: Family::Roberta,
                pad: pad_token_id.unwrap_or(1),
            },
            _ => Self {
                family: Family::Bert,
                pad: 0,
            },
        }
    }

    /// The prefix of the encoder's weights inside task checkpoints (`*ForSequenceClassification`
    /// and the like); bare encoders (sentence-transformers, bge-m3) have none.
    pub fn weight_prefix(self) -> &'static str {
        match self.family {
            Family::Bert => "bert",
            Family::Roberta => "roberta",
        }
    }

    /// The position-table rows before the first token's: RoBERTa numbers tokens from
    /// `pad + 1`.
    pub fn position_offset(self) -> usize {
        match self.family {
            Family::Bert => 0,
            Family::Roberta => self.pad as usize + 1,
        }
    }

    /// Appends the position ids of one sequence. BERT: `0, 1, ...`. RoBERTa: transformers'
    /// `create_position_ids_from_input_ids`, `cumsum(id != pad) * (id != pad) + pad`, i.e.
    /// `pad + 1 + i` for an unpadded sequence, and `pad` for a padding token.
    pub fn positions(self, ids: &[u32], out: &mut Vec<u32>) {
        match self.family {
            Family::Bert => out.extend(0..ids.len() as u32),
            Family::Roberta => {
                let mut count = 0;
                out.extend(ids.iter().map(|&id| {
                    if id == self.pad {
                        self.pad
                    } else {
                        count += 1;
                        self.pad + count
                    }
                }));
            }
        }
    }

    /// The token type of a token in `segment` (0 for the first text of a pair, 1 for the
    /// second, as tokenizers' post-processors number them). RoBERTa has one type
    /// (`type_vocab_size` 1): always 0, whatever the tokenizer says.
    pub fn token_type(self, segment: u32) -> u32 {
        match self.family {
            Family::Bert => segment,
            Family::Roberta => 0,
        }
    }

    /// The encoder's weights: under [`Layout::weight_prefix`] when the checkpoint has them
    /// there (task models), else at the top (bare encoders).
    pub fn encoder_weights<'a>(self, vb: &VarBuilder<'a>) -> VarBuilder<'a> {
        let prefix = self.weight_prefix();
        if vb.contains_tensor(&format!("{prefix}.embeddings.word_embeddings.weight")) {
            vb.pp(prefix)
        } else {
            vb.clone()
        }
    }
}

/// `x · W + b` with `W` `[in, out]` laid out for the matmul kernel.
pub struct Linear {
    w: Weights,
    b: Vec<f32>,
}

impl Linear {
    pub(crate) fn load(
        vb: &VarBuilder,
        in_dim: usize,
        out_dim: usize,
        dtype: Dtype,
    ) -> Result<Self> {
        Self::fused(std::slice::from_ref(vb), in_dim, out_dim, dtype)
    }

    /// Several `Linear(in -> out)` checkpoint layers as one `Linear(in -> n*out)`.
    pub(crate) fn fused(
        vbs: &[VarBuilder],
        in_dim: usize,
        out_dim: usize,
        dtype: Dtype,
    ) -> Result<Self> {
        Self::fused_scaled(vbs, in_dim, out_dim, dtype, |_| 1.0)
    }

    /// [`Linear::fused`] with output column `c` (weights and bias) multiplied by `scale(c)`.
    fn fused_scaled(
        vbs: &[VarBuilder],
        in_dim: usize,
        out_dim: usize,
        dtype: Dtype,
        scale: impl Fn(usize) -> f32,
    ) -> Result<Self> {
        let n = vbs.len() * out_dim;
        let mut w_t = vec![0f32; in_dim * n];
        let mut b = Vec::with_capacity(n);
        for (part, vb) in vbs.iter().enumerate() {
            // Checkpoints store `[out, in]`; the kernels want `[in, out]`.
            let w = vb.get((out_dim, in_dim), "weight")?.to_vec2::<f32>()?;
            for (o, row) in w.iter().enumerate() {
                let c = part * out_dim + o;
                for (i, v) in row.iter().enumerate() {
                    w_t[i * n + c] = v * scale(c);
                }
            }
            let bias = vb.get(out_dim, "bias")?.to_vec1::<f32>()?;
            b.extend(
                bias.iter()
                    .enumerate()
                    .map(|(o, v)| v * scale(part * out_dim + o)),
            );
        }
        Ok(Self {
            w: Weights::new(w_t, in_dim, n, dtype),
            b,
        })
    }

    pub fn out_dim(&self) -> usize {
        self.b.len()
    }

    /// `x`: `[rows, in]`; returns `[rows, out]`.
    pub fn forward(&self, x: &[f32]) -> Vec<f32> {
        linear(
            x,
            &self.w,
            &self.b,
            None,
            x.len() / self.w.k(),
            Activation::None,
        )
    }

    /// `act(x · W + b + residual)` into `out` ([`linear_into`]).
    fn forward_into(
        &self,
        x: &[f32],
        residual: Option<&[f32]>,
        act: Activation,
        out: &mut Vec<f32>,
    ) {
        linear_into(
            x,
            &self.w,
            &self.b,
            residual,
            x.len() / self.w.k(),
            act,
            out,
        )
    }
}

#[derive(Clone, Debug)]
struct LayerNorm {
    weight: Vec<f32>,
    bias: Vec<f32>,
    eps: f32,
}

impl LayerNorm {
    fn load(vb: &VarBuilder, dim: usize, eps: f64) -> Result<Self> {
        Ok(Self {
            weight: vb.get(dim, "weight")?.to_vec1()?,
            bias: vb.get(dim, "bias")?.to_vec1()?,
            eps: eps as f32,
        })
    }

    fn apply(&self, x: &mut [f32]) {
        layer_norm_in_place(x, &self.weight, &self.bias, self.eps);
    }
}

/// Token, position and token-type ids of a batch's tokens, sequences back to back (packed) or
/// padded to one length.
#[derive(Clone, Debug, Default)]
pub struct TokenIds {
    pub ids: Vec<u32>,
    pub positions: Vec<u32>,
    pub token_types: Vec<u32>,
}

impl TokenIds {
    /// Sequences packed back to back, positions from 0, token type 0 (BERT).
    pub fn packed(seqs: &[Vec<u32>]) -> Self {
        Self::pack(Layout::new(None, None), seqs, None)
    }

    /// Sequences packed back to back, positions and token types per `layout`; `segments`
    /// (one per token, as the tokenizer numbers the texts of a pair) default to 0.
    pub fn pack(layout: Layout, seqs: &[Vec<u32>], segments: Option<&[Vec<u32>]>) -> Self {
        let mut t = Self::default();
        for (i, seq) in seqs.iter().enumerate() {
            t.ids.extend_from_slice(seq);
            layout.positions(seq, &mut t.positions);
            match segments.map(|s| &s[i]) {
                Some(seg) => t
                    .token_types
                    .extend(seg.iter().map(|&s| layout.token_type(s))),
                None => t
                    .token_types
                    .extend(std::iter::repeat_n(layout.token_type(0), seq.len())),
            }
        }
        t
    }
}

/// `LayerNorm(word + token_type + position)`.
#[derive(Clone, Debug)]
pub struct Embeddings {
    word: Vec<f32>,
    position: Vec<f32>,
    token_type: Vec<f32>,
    hidden: usize,
    norm: LayerNorm,
    layout: Layout,
}

impl Embeddings {
    pub fn load(vb: &VarBuilder, cfg: &BertConfig) -> Result<Self> {
        let h = cfg.hidden_size;
        let table = |rows: usize, name: &str| -> Result<Vec<f32>> {
            Ok(vb.get((rows, h), name)?.flatten_all()?.to_vec1()?)
        };
        Ok(Self {
            word: table(cfg.vocab_size, "word_embeddings.weight")?,
            position: table(cfg.max_position_embeddings, "position_embeddings.weight")?,
            token_type: table(cfg.type_vocab_size, "token_type_embeddings.weight")?,
            hidden: h,
            norm: LayerNorm::load(&vb.pp("LayerNorm"), h, cfg.layer_norm_eps)?,
            layout: cfg.layout(),
        })
    }

    /// Returns `[tokens, hidden]`. Ids must be inside the tables (callers check the vocabulary
    /// and the position count before, to answer with a clear error).
    pub fn forward(&self, t: &TokenIds) -> Vec<f32> {
        let h = self.hidden;
        let mut x = buffer(t.ids.len() * h);
        fn row(table: &[f32], i: u32, h: usize) -> &[f32] {
            &table[i as usize * h..(i as usize + 1) * h]
        }
        for ((&id, &pos), &tt) in t.ids.iter().zip(&t.positions).zip(&t.token_types) {
            let (w, ty, p) = (
                row(&self.word, id, h),
                row(&self.token_type, tt, h),
                row(&self.position, pos, h),
            );
            // Same summation order as transformers' BertEmbeddings.
            x.extend(w.iter().zip(ty).zip(p).map(|((w, ty), p)| (w + ty) + p));
        }
        self.norm.apply(&mut x);
        x
    }

    pub fn vocab_size(&self) -> usize {
        self.word.len() / self.hidden
    }

    /// The longest sequence the position table allows (RoBERTa: its rows less
    /// [`Layout::position_offset`], e.g. 514 - 2 = 512).
    pub fn max_positions(&self) -> usize {
        self.position.len() / self.hidden - self.layout.position_offset()
    }

    pub fn type_vocab_size(&self) -> usize {
        self.token_type.len() / self.hidden
    }

    pub fn layout(&self) -> Layout {
        self.layout
    }

    pub fn hidden_size(&self) -> usize {
        self.hidden
    }
}

/// One transformer layer (post-LayerNorm BERT).
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
    pub fn load(vb: &VarBuilder, cfg: &BertConfig, dtype: Dtype) -> Result<Self> {
        let (h, i, eps) = (cfg.hidden_size, cfg.intermediate_size, cfg.layer_norm_eps);
        let att = vb.pp("attention");
        let sa = att.pp("self");
        // 1/sqrt(head_dim) folded into the query projection: saves a pass over the scores.
        let scale = (1.0 / ((h / cfg.num_attention_heads) as f64).sqrt()) as f32;
        let qkv = Linear::fused_scaled(
            &[sa.pp("query"), sa.pp("key"), sa.pp("value")],
            h,
            h,
            dtype,
            |c| if c < h { scale } else { 1.0 },
        )?;
        Ok(Self {
            qkv,
            attn_out: Linear::load(&att.pp("output.dense"), h, h, dtype)?,
            attn_norm: LayerNorm::load(&att.pp("output.LayerNorm"), h, eps)?,
            intermediate: Linear::load(&vb.pp("intermediate.dense"), h, i, dtype)?,
            output: Linear::load(&vb.pp("output.dense"), i, h, dtype)?,
            out_norm: LayerNorm::load(&vb.pp("output.LayerNorm"), h, eps)?,
            heads: cfg.num_attention_heads,
        })
    }

    /// `x`: `[tokens, hidden]`, the sequences of `lens` back to back; replaced by the layer's
    /// output. `scratch` holds the intermediate buffers (reused from layer to layer).
    fn forward(&self, x: &mut Vec<f32>, lens: &[usize], scratch: &mut Scratch) {
        let h = self.attn_out.b.len();
        let dims = Dims {
            lens,
            heads: self.heads,
            head_dim: h / self.heads,
        };
        let Scratch {
            qkv,
            context,
            inner,
            next,
        } = scratch;
        self.qkv.forward_into(x, None, Activation::None, qkv);
        attention(qkv, dims, context);
        self.attn_out
            .forward_into(context, Some(x), Activation::None, next);
        self.attn_norm.apply(next);
        std::mem::swap(x, next);
        self.intermediate
            .forward_into(x, None, Activation::GeluErf, inner);
        self.output
            .forward_into(inner, Some(x), Activation::None, next);
        self.out_norm.apply(next);
        std::mem::swap(x, next);
    }
}

/// The buffers a layer works in besides its input and output.
#[derive(Default)]
struct Scratch {
    qkv: Vec<f32>,
    context: Vec<f32>,
    inner: Vec<f32>,
    next: Vec<f32>,
}

impl Scratch {
    fn bytes(&self) -> usize {
        let floats = [&self.qkv, &self.context, &self.inner, &self.next]
            .iter()
            .map(|v| v.capacity())
            .sum::<usize>();
        floats * size_of::<f32>()
    }
}

/// Most bytes of layer buffers a thread keeps between forwards (BERT-base: batches up to about
/// 4,800 tokens; MiniLM: 9,700).
const KEPT_SCRATCH_BYTES: usize = 128 << 20;

thread_local! {
    /// The layer buffers of this thread's last forward, kept for its next one when they are
    /// not larger than [`KEPT_SCRATCH_BYTES`]: fresh buffers are page-faulted in, and the
    /// kernel zeroing those pages took 4 % of a BERT-base bf16 32 x 128 forward.
    static SCRATCH: RefCell<Scratch> = RefCell::default();
}

/// Runs `x` (`[tokens, hidden]`, the sequences of `lens` back to back) through `layers` in
/// order.
pub fn run_layers(layers: &[Layer], mut x: Vec<f32>, lens: &[usize]) -> Vec<f32> {
    SCRATCH.with_borrow_mut(|scratch| {
        for layer in layers {
            layer.forward(&mut x, lens, scratch);
        }
        if scratch.bytes() > KEPT_SCRATCH_BYTES {
            *scratch = Scratch::default();
        }
    });
    x
}

/// Loads `{prefix}.0`, `{prefix}.1`, ... for as many layers as the checkpoint holds.
pub fn load_layers(
    vb: &VarBuilder,
    prefix: &str,
    cfg: &BertConfig,
    dtype: Dtype,
) -> Result<Vec<Layer>> {
    let mut layers = Vec::new();
    loop {
        let layer_vb = vb.pp(format!("{prefix}.{}", layers.len()));
        if !layer_vb.contains_tensor("attention.self.query.weight") {
            return Ok(layers);
        }
        layers.push(Layer::load(&layer_vb, cfg, dtype)?);
    }
}

/// A plain BERT (or XLM-RoBERTa) encoder (embeddings + all layers), as used by
/// sentence-embedding models and, under a classification head, by cross-encoders.
pub struct Bert {
    embeddings: Embeddings,
    layers: Vec<Layer>,
}

impl Bert {
    /// Accepts unprefixed keys (sentence-transformers, GTE, bge-m3) and keys under the family's
    /// prefix (`bert.`, `roberta.`: [`Layout::encoder_weights`]).
    pub fn load(vb: &VarBuilder, cfg: &BertConfig, dtype: Dtype) -> Result<Self> {
        let vb = cfg.layout().encoder_weights(vb);
        let layers = load_layers(&vb, "encoder.layer", cfg, dtype)?;
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

    /// Checks that `seqs` fit the model: not empty, within the position table, ids inside the
    /// vocabulary, and `segments` (when given) one per token and within the token types.
    pub fn check(&self, seqs: &[Vec<u32>], segments: Option<&[Vec<u32>]>) -> Result<()> {
        let vocab = self.embeddings.vocab_size();
        let max = self.embeddings.max_positions();
        let types = self.embeddings.type_vocab_size();
        let layout = self.embeddings.layout();
        if segments.is_some_and(|s| s.len() != seqs.len()) {
            return Err(ModelError::Input(
                "token types are not given for every sequence".into(),
            ));
        }
        for (i, seq) in seqs.iter().enumerate() {
            if seq.is_empty() {
                return Err(ModelError::Input("empty token sequence".into()));
            }
            if seq.len() > max {
                return Err(ModelError::Input(format!(
                    "{} tokens exceed the model's {max} positions",
                    seq.len()
                )));
            }
            if let Some(id) = seq.iter().find(|&&id| id as usize >= vocab) {
                return Err(ModelError::Input(format!(
                    "token id {id} is outside the vocabulary"
                )));
            }
            if let Some(seg) = segments.map(|s| &s[i]) {
                if seg.len() != seq.len() {
                    return Err(ModelError::Input(format!(
                        "{} token types for {} tokens",
                        seg.len(),
                        seq.len()
                    )));
                }
                if let Some(t) = seg
                    .iter()
                    .map(|&s| layout.token_type(s))
                    .find(|&t| t as usize >= types)
                {
                    return Err(ModelError::Input(format!(
                        "token type {t} is outside the model's {types} types"
                    )));
                }
            }
        }
        Ok(())
    }

    /// The last hidden states of every token of `seqs`, packed: `[total tokens, hidden]`, the
    /// sequences back to back; token type 0 throughout. Ids and lengths must fit the model
    /// ([`Bert::check`]).
    pub fn forward(&self, seqs: &[Vec<u32>]) -> Vec<f32> {
        self.forward_segments(seqs, None)
    }

    /// [`Bert::forward`] with the tokenizer's segment ids (0 for the first text of a pair, 1 for
    /// the second); the layout decides what token types they become.
    pub fn forward_segments(&self, seqs: &[Vec<u32>], segments: Option<&[Vec<u32>]>) -> Vec<f32> {
        let lens: Vec<usize> = seqs.iter().map(Vec::len).collect();
        let ids = TokenIds::pack(self.embeddings.layout(), seqs, segments);
        let x = self.embeddings.forward(&ids);
        run_layers(&self.layers, x, &lens)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_follows_model_type() {
        assert_eq!(Layout::new(None, Some(0)).family, Family::Bert);
        assert_eq!(Layout::new(Some("bert"), Some(1)).family, Family::Bert);
        for kind in ["roberta", "xlm-roberta"] {
            let l = Layout::new(Some(kind), None);
            assert_eq!(l.family, Family::Roberta);
            assert_eq!(l.weight_prefix(), "roberta");
            // transformers' RoBERTa default padding index is 1: positions from 2.
            assert_eq!(l.position_offset(), 2);
        }
    }

    #[test]
    fn roberta_positions_skip_the_padding_index_and_types_are_zero() {
        let l = Layout::new(Some("xlm-roberta"), Some(1));
        let mut pos = Vec::new();
        l.positions(&[0, 5, 7, 2], &mut pos);
        assert_eq!(pos, [2, 3, 4, 5]);
        // A padding token keeps the padding index and is not counted, as
        // create_position_ids_from_input_ids does.
        pos.clear();
        l.positions(&[0, 1, 7, 2], &mut pos);
        assert_eq!(pos, [2, 1, 3, 4]);
        let t = TokenIds::pack(
            l,
            &[vec![0, 5, 2], vec![0, 6]],
            Some(&[vec![0, 0, 1], vec![1, 1]]),
        );
        assert_eq!(t.token_types, [0; 5]);
        assert_eq!(t.positions, [2, 3, 4, 2, 3]);
    }

    #[test]
    fn bert_positions_count_from_zero_and_keep_segments() {
        let l = Layout::new(Some("bert"), Some(0));
        let t = TokenIds::pack(
            l,
            &[vec![101, 0, 102], vec![101, 102]],
            Some(&[vec![0, 0, 1], vec![0, 1]]),
        );
        assert_eq!(t.positions, [0, 1, 2, 0, 1]);
        assert_eq!(t.token_types, [0, 0, 1, 0, 1]);
        assert_eq!(
            TokenIds::packed(&[vec![101, 0, 102]]).token_types,
            [0, 0, 0]
        );
    }
}
