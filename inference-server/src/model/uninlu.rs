//! SiameseUniNLU (ModelScope's SiameseUIE architecture): a BERT whose lower layers encode text
//! and prompt separately with shared weights, whose upper ("cross-attention") layers run over
//! `[text; prompt]`, and whose two pointer heads give start/end logits per text token.
//!
//! The API follows the model's speed trick: [`UniNluModel::encode_text`] runs the lower layers
//! once per text (all windows in one batch), and [`UniNluModel::score_many`] scores any number of
//! prompts, for any number of texts, in one batched forward.

use serde::Serialize;

use super::bert::{
    load_layers, run_layers, BertConfig, Embeddings, Family, Layer, Linear, TokenIds,
};
use super::files::ModelFiles;
use super::kernels::linear::Dtype;
use super::tokenizer::Tokenizer;
use super::{ModelError, Result};
use crate::model::windows::{merge, TextWindow};

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
    /// `[real tokens of all windows, hidden]`, windows back to back without their padding.
    states: Vec<f32>,
    /// Real tokens per window.
    lens: Vec<usize>,
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
    pub fn load(files: &ModelFiles, dtype: Dtype) -> Result<Self> {
        let cfg = BertConfig::load(&files.config)?;
        if cfg.layout().family != Family::Bert {
            return Err(ModelError::Config(
                "SiameseUniNLU is a BERT model; this config is not BERT's".into(),
            ));
        }
        let vb = files.weights.var_builder()?;
        let lower = load_layers(&vb, "plm.encoder.layer", &cfg, dtype)?;
        let upper = load_layers(&vb, "crossattention.layer", &cfg, dtype)?;
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
            Dtype::F32,
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
    /// from 0), packed: window padding is dropped, which leaves the real tokens' states as they
    /// are (padding is masked) and the padding's logits are never used (see
    /// [`crate::model::windows::merge`]). Windows come from [`crate::model::windows::split`].
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
        let lens: Vec<usize> = windows
            .iter()
            .map(|w| w.mask.iter().take_while(|&&m| m != 0).count())
            .collect();
        if windows
            .iter()
            .zip(&lens)
            .any(|(w, &real)| real == 0 || w.mask[real..].iter().any(|&m| m != 0))
        {
            return Err(ModelError::Input(
                "each window's mask must mark a non-empty prefix of real tokens".into(),
            ));
        }
        let real: Vec<Vec<u32>> = windows
            .iter()
            .zip(&lens)
            .map(|(w, &n)| w.ids[..n].to_vec())
            .collect();
        let ids = TokenIds::packed(&real);
        self.check_ids(&ids.ids)?;
        let states = run_layers(&self.lower, self.embeddings.forward(&ids), &lens);
        let n_tokens = windows
            .iter()
            .zip(&lens)
            .map(|(w, n)| w.start + n)
            .max()
            .unwrap_or(0);
        Ok(TextStates {
            states,
            lens,
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
    /// per prompt, merged over the text's windows. Everything runs packed: the lower layers
    /// over the prompts back to back, the upper layers over one `[window ; prompt]` sequence
    /// per (job, prompt, window), without padding (the upper layers have no position input).
    pub fn score_many(&self, jobs: &[(&TextStates, &[Vec<u32>])]) -> Result<Vec<Vec<Logits>>> {
        let n_prompts: usize = jobs.iter().map(|(_, p)| p.len()).sum();
        if n_prompts == 0 {
            return Ok(jobs.iter().map(|_| Vec::new()).collect());
        }
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

        // Lower layers over all prompts: positions continue after their text's (padded) window,
        // token type 1.
        let mut ids = TokenIds::default();
        let mut prompt_lens = Vec::with_capacity(n_prompts);
        for (text, prompts) in jobs {
            for p in prompts.iter() {
                ids.ids.extend_from_slice(p);
                ids.positions
                    .extend((0..p.len()).map(|j| (text.window_len + j) as u32));
                prompt_lens.push(p.len());
            }
        }
        ids.token_types = vec![1; ids.ids.len()];
        let prompt_states = run_layers(&self.lower, self.embeddings.forward(&ids), &prompt_lens);

        // One sequence per (job, prompt, window): [text window ; prompt].
        let h = self.info.hidden_size;
        let rows = |states: &[f32], first: usize, len: usize| {
            states[first * h..(first + len) * h].to_vec()
        };
        let (mut x, mut lens) = (Vec::new(), Vec::new());
        let mut first_prompt_row = 0;
        for (text, prompts) in jobs {
            for p in prompts.iter() {
                let mut first_window_row = 0;
                for &wlen in &text.lens {
                    x.extend(rows(&text.states, first_window_row, wlen));
                    x.extend(rows(&prompt_states, first_prompt_row, p.len()));
                    lens.push(wlen + p.len());
                    first_window_row += wlen;
                }
                first_prompt_row += p.len();
            }
        }
        let out = run_layers(&self.upper, x, &lens);
        // Heads over every position (cheap: two outputs) instead of copying out the text part.
        let logits = self.heads.forward(&out);

        let mut results = Vec::with_capacity(jobs.len());
        let (mut seq, mut first_row) = (0, 0);
        for (text, prompts) in jobs {
            let mut per_prompt = Vec::with_capacity(prompts.len());
            for _ in 0..prompts.len() {
                let mut heads = Vec::with_capacity(text.windows());
                let mut tails = Vec::with_capacity(text.windows());
                for &wlen in &text.lens {
                    let pick = |k: usize| -> Vec<f32> {
                        (0..wlen).map(|j| logits[(first_row + j) * 2 + k]).collect()
                    };
                    heads.push(pick(0));
                    tails.push(pick(1));
                    first_row += lens[seq];
                    seq += 1;
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
            }
            results.push(per_prompt);
        }
        Ok(results)
    }
}
