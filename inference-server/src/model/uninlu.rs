//! SiameseUniNLU (ModelScope's SiameseUIE architecture): a BERT whose lower layers encode text
//! and prompt separately with shared weights, whose upper ("cross-attention") layers run over
//! `[text; prompt]`, and whose two pointer heads give start/end logits per text token.
//!
//! The API follows the model's speed trick: [`UniNluModel::encode_text`] runs the lower layers
//! once per text (all windows in one batch), and [`UniNluModel::score_many`] scores any number of
//! prompts, for any number of texts, in one batched forward.

use candle_core::{DType, Device, Tensor};
use serde::Serialize;

use super::bert::{additive_mask, load_layers, run_layers, BertConfig, Embeddings, Layer, Linear};
use super::files::ModelFiles;
use super::tokenizer::Tokenizer;
use super::{ModelError, Result};
use crate::uninlu::windows::{merge, TextWindow};

/// Added to the logits of padding positions, as the original does.
const PAD_LOGIT: f32 = -10000.0;

/// What `/info` reports.
#[derive(Clone, Debug, Serialize)]
pub struct UniNluInfo {
    pub model: String,
    pub hidden_size: usize,
    pub max_positions: usize,
    pub lower_layers: usize,
    pub upper_layers: usize,
}

pub struct UniNluModel {
    tokenizer: Tokenizer,
    embeddings: Embeddings,
    lower: Vec<Layer>,
    upper: Vec<Layer>,
    /// `head_clsf` and `tail_clsf` fused: hidden -> [start, end].
    heads: Linear,
    info: UniNluInfo,
}

/// Lower-layer states of one text's windows, reusable for every prompt of the request.
#[derive(Clone, Debug)]
pub struct TextStates {
    /// `[windows, window_len, hidden]`.
    states: Tensor,
    /// 0/1, `[windows * window_len]`.
    mask: Vec<u32>,
    starts: Vec<usize>,
    window_len: usize,
    n_tokens: usize,
}

impl TextStates {
    /// Tokens per window: prompt positions start here.
    pub fn window_len(&self) -> usize {
        self.window_len
    }

    pub fn windows(&self) -> usize {
        self.starts.len()
    }

    /// Text tokens covered (`[CLS]`/`[SEP]` included).
    pub fn n_tokens(&self) -> usize {
        self.n_tokens
    }
}

/// Merged start (`head`) and end (`tail`) logits, one per text token.
#[derive(Clone, Debug, PartialEq)]
pub struct Logits {
    pub head: Vec<f32>,
    pub tail: Vec<f32>,
}

impl UniNluModel {
    pub fn load(files: &ModelFiles) -> Result<Self> {
        let cfg = BertConfig::load(&files.config)?;
        let vb = files.weights.var_builder()?;
        let lower = load_layers(&vb, "plm.encoder.layer", &cfg)?;
        let upper = load_layers(&vb, "crossattention.layer", &cfg)?;
        if lower.is_empty() || upper.is_empty() {
            return Err(ModelError::Config(format!(
                "not a SiameseUniNLU checkpoint: {} plm.encoder.layer.* and {} crossattention.layer.* layers",
                lower.len(),
                upper.len()
            )));
        }
        let embeddings = Embeddings::load(&vb.pp("plm.embeddings"), &cfg)?;
        let heads = Linear::fused(
            &[vb.pp("head_clsf"), vb.pp("tail_clsf")],
            cfg.hidden_size,
            1,
        )?;
        let info = UniNluInfo {
            model: files.name(),
            hidden_size: cfg.hidden_size,
            max_positions: embeddings.max_positions(),
            lower_layers: lower.len(),
            upper_layers: upper.len(),
        };
        Ok(Self {
            tokenizer: Tokenizer::load(&files.tokenizer)?,
            embeddings,
            lower,
            upper,
            heads,
            info,
        })
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    pub fn info(&self) -> &UniNluInfo {
        &self.info
    }

    fn check_ids(&self, ids: &[u32]) -> Result<()> {
        let vocab = self.embeddings.vocab_size();
        match ids.iter().find(|&&id| id as usize >= vocab) {
            Some(id) => Err(ModelError::Input(format!(
                "token id {id} is outside the vocabulary"
            ))),
            None => Ok(()),
        }
    }

    /// Runs the lower layers over all windows of one text at once (token type 0, positions
    /// from 0). Windows come from [`crate::uninlu::windows::split`].
    pub fn encode_text(&self, windows: &[TextWindow]) -> Result<TextStates> {
        let len = windows.first().map(|w| w.ids.len()).unwrap_or(0);
        if len == 0
            || windows
                .iter()
                .any(|w| w.ids.len() != len || w.mask.len() != len)
        {
            return Err(ModelError::Input(
                "text windows must be non-empty and of equal length".into(),
            ));
        }
        if len >= self.info.max_positions {
            return Err(ModelError::Input(format!(
                "a window of {len} tokens leaves no positions for a prompt (model has {})",
                self.info.max_positions
            )));
        }
        let ids: Vec<u32> = windows.iter().flat_map(|w| w.ids.iter().copied()).collect();
        let mask: Vec<u32> = windows
            .iter()
            .flat_map(|w| w.mask.iter().copied())
            .collect();
        self.check_ids(&ids)?;
        let n = windows.len();
        let dev = Device::Cpu;
        let positions = Tensor::arange(0u32, len as u32, &dev)?
            .unsqueeze(0)?
            .broadcast_as((n, len))?;
        let types = Tensor::zeros((n, len), DType::U32, &dev)?;
        let x = self.embeddings.forward(
            &Tensor::from_slice(&ids, (n, len), &dev)?,
            &positions,
            &types,
        )?;
        let states = run_layers(&self.lower, x, additive_mask(&mask, n, len)?.as_ref())?;
        let n_tokens = windows
            .iter()
            .map(|w| w.start + w.mask.iter().filter(|&&m| m != 0).count())
            .max()
            .unwrap_or(0);
        Ok(TextStates {
            states,
            mask,
            starts: windows.iter().map(|w| w.start).collect(),
            window_len: len,
            n_tokens,
        })
    }

    /// Scores `prompts` (token ids with `[CLS]`/`[SEP]`) against one text.
    pub fn score(&self, text: &TextStates, prompts: &[Vec<u32>]) -> Result<Vec<Logits>> {
        Ok(self
            .score_many(&[(text, prompts)])?
            .pop()
            .unwrap_or_default())
    }

    /// Scores every job's prompts against its text in one batched forward; results are per job,
    /// per prompt, merged over the text's windows. Prompts are padded to the longest (masked);
    /// texts of different lengths are padded to the longest window (masked), which changes
    /// nothing in the result since the upper layers have no position input.
    pub fn score_many(&self, jobs: &[(&TextStates, &[Vec<u32>])]) -> Result<Vec<Vec<Logits>>> {
        let dev = Device::Cpu;
        let n_prompts: usize = jobs.iter().map(|(_, p)| p.len()).sum();
        if n_prompts == 0 {
            return Ok(jobs.iter().map(|_| Vec::new()).collect());
        }
        let plen = jobs
            .iter()
            .flat_map(|(_, ps)| ps.iter().map(Vec::len))
            .max()
            .unwrap_or(0);
        let tlen = jobs.iter().map(|(t, _)| t.window_len).max().unwrap_or(0);
        for (text, prompts) in jobs {
            for p in prompts.iter() {
                if p.is_empty() || text.window_len + p.len() > self.info.max_positions {
                    return Err(ModelError::Input(format!(
                        "a prompt of {} tokens does not fit after a text window of {} tokens ({} positions)",
                        p.len(),
                        text.window_len,
                        self.info.max_positions
                    )));
                }
                self.check_ids(p)?;
            }
        }

        // Lower layers over all prompts: positions continue after their text's window,
        // token type 1 everywhere (padding included).
        let mut ids = vec![0u32; n_prompts * plen];
        let mut pmask = vec![0u32; n_prompts * plen];
        let mut positions = vec![0u32; n_prompts * plen];
        let mut row = 0;
        for (text, prompts) in jobs {
            for p in prompts.iter() {
                let r = row * plen;
                ids[r..r + p.len()].copy_from_slice(p);
                pmask[r..r + p.len()].fill(1);
                for (j, pos) in positions[r..r + plen].iter_mut().enumerate() {
                    *pos = (text.window_len + j) as u32;
                }
                row += 1;
            }
        }
        let x = self.embeddings.forward(
            &Tensor::from_vec(ids, (n_prompts, plen), &dev)?,
            &Tensor::from_vec(positions, (n_prompts, plen), &dev)?,
            &Tensor::ones((n_prompts, plen), DType::U32, &dev)?,
        )?;
        let prompt_states = run_layers(
            &self.lower,
            x,
            additive_mask(&pmask, n_prompts, plen)?.as_ref(),
        )?;

        // All texts' windows, padded to the longest window.
        let mut window_states = Vec::with_capacity(jobs.len());
        let mut window_masks: Vec<Vec<u32>> = Vec::new();
        for (text, _) in jobs {
            let pad = tlen - text.window_len;
            window_states.push(text.states.pad_with_zeros(1, 0, pad)?);
            for m in text.mask.chunks(text.window_len) {
                let mut m = m.to_vec();
                m.resize(tlen, 0);
                window_masks.push(m);
            }
        }
        let window_states = Tensor::cat(&window_states, 0)?;

        // One row per (job, prompt, window): [text window ; prompt].
        let (mut text_rows, mut prompt_rows, mut mask) = (Vec::new(), Vec::new(), Vec::new());
        let (mut first_window, mut first_prompt) = (0u32, 0u32);
        for (text, prompts) in jobs {
            for p in 0..prompts.len() as u32 {
                for w in 0..text.windows() as u32 {
                    text_rows.push(first_window + w);
                    prompt_rows.push(first_prompt + p);
                    mask.extend_from_slice(&window_masks[(first_window + w) as usize]);
                    let pr = ((first_prompt + p) as usize) * plen;
                    mask.extend_from_slice(&pmask[pr..pr + plen]);
                }
            }
            first_window += text.windows() as u32;
            first_prompt += prompts.len() as u32;
        }
        let rows = text_rows.len();
        let text_rows = Tensor::from_vec(text_rows, rows, &dev)?;
        let prompt_rows = Tensor::from_vec(prompt_rows, rows, &dev)?;
        let x = Tensor::cat(
            &[
                window_states.index_select(&text_rows, 0)?,
                prompt_states.index_select(&prompt_rows, 0)?,
            ],
            1,
        )?;
        let total = tlen + plen;
        let out = run_layers(&self.upper, x, additive_mask(&mask, rows, total)?.as_ref())?;
        let hidden = out.dim(2)?;
        // Heads over every position (cheap: two outputs) instead of copying out the text part.
        let logits = self
            .heads
            .forward(&out.reshape((rows * total, hidden))?)?
            .flatten_all()?
            .to_vec1::<f32>()?;

        let mut results = Vec::with_capacity(jobs.len());
        let mut row = 0;
        for (text, prompts) in jobs {
            let mut per_prompt = Vec::with_capacity(prompts.len());
            for _ in 0..prompts.len() {
                let mut heads = Vec::with_capacity(text.windows());
                let mut tails = Vec::with_capacity(text.windows());
                for w in 0..text.windows() {
                    let base = (row + w) * total;
                    let wmask = &text.mask[w * text.window_len..(w + 1) * text.window_len];
                    let pick = |k: usize| -> Vec<f32> {
                        wmask
                            .iter()
                            .enumerate()
                            .map(|(j, &m)| {
                                let v = logits[(base + j) * 2 + k];
                                if m == 0 {
                                    v + PAD_LOGIT
                                } else {
                                    v
                                }
                            })
                            .collect()
                    };
                    heads.push(pick(0));
                    tails.push(pick(1));
                }
                let windows = |vals: &[Vec<f32>]| -> Vec<f32> {
                    merge(
                        text.n_tokens,
                        text.starts
                            .iter()
                            .copied()
                            .zip(vals.iter().map(Vec::as_slice)),
                    )
                };
                per_prompt.push(Logits {
                    head: windows(&heads),
                    tail: windows(&tails),
                });
                row += text.windows();
            }
            results.push(per_prompt);
        }
        Ok(results)
    }
}
