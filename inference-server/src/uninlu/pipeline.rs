//! The UniNLU prediction as a state machine the server can drive level by level (so prompt
//! scoring can go through its batcher), plus [`predict`], which drives it directly.
//!
//! ```text
//! let mut t = Traversal::new(tokenizer, text, schema, &limits)?;
//! let states = model.encode_text(t.text_windows())?;          // once per request
//! loop {
//!     let jobs = t.next_prompts(tokenizer)?;                  // every prompt of the frontier
//!     if jobs.is_empty() { break }
//!     t.accept(&model.score(&states, &ids_of(jobs))?)?;       // logits in job order
//! }
//! let prediction = t.finish();
//! ```
//!
//! The original runs the schema depth-first, one sibling group at a time; here every open
//! sibling group of a depth is scored together, and the output is put back in depth-first order,
//! so results are identical while the batches are larger.

use serde::Serialize;
use serde_json::Value;

use super::decode::{spans, ChainItem, CharText};
use super::prompts::{prompt, PROMPT_MAX_TOKENS};
use super::schema::Schema;
use crate::model::windows::{split, TextWindow};
use super::{Limits, PredictError};
use crate::model::{Encoding, Logits, ModelError, Tokenizer, UniNluModel};

/// One prompt to score against the request's text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PromptJob {
    pub prompt: String,
    /// Token ids, `[CLS] ... [SEP]`, at most 128.
    pub ids: Vec<u32>,
}

/// The answer to one request.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Prediction {
    /// Complete chains, root to leaf, in depth-first schema order.
    pub output: Vec<Vec<ChainItem>>,
    /// For `labels|text` inputs: the labels the output chose (see [`classification_labels`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub labels: Option<Vec<String>>,
    /// Prompts the request ran.
    #[serde(skip)]
    pub prompts: usize,
}

impl Prediction {
    /// The prediction as the original pipeline gives it: the spans without their scores.
    pub fn without_scores(mut self) -> Self {
        self.output
            .iter_mut()
            .flatten()
            .for_each(|item| item.score = None);
        self
    }
}

/// An open sibling group: a schema level to extract, under a chain of chosen ancestors.
struct Group {
    /// Key indices from the root to this level.
    level: Vec<usize>,
    chain: Vec<ChainItem>,
    /// Sorting by it gives depth-first order.
    order: SortKey,
}

pub struct Traversal {
    schema: Schema,
    text: String,
    encoding: Encoding,
    windows: Vec<TextWindow>,
    max_prompts: usize,
    /// Groups whose prompts have not been handed out yet.
    open: Vec<Group>,
    /// Groups whose prompts were handed out by the last `next_prompts`, awaiting `accept`.
    asked: Vec<Group>,
    prompts_run: usize,
    /// Finished chains with their depth-first sort key.
    complete: Vec<(SortKey, Vec<ChainItem>)>,
}

/// `(key index, span index)` per chain element.
type SortKey = Vec<(usize, usize)>;

impl Traversal {
    /// Tokenizes the text (never truncated) and checks the text limits.
    pub fn new(
        tokenizer: &Tokenizer,
        text: &str,
        schema: Schema,
        limits: &Limits,
    ) -> Result<Self, PredictError> {
        let chars = text.chars().count();
        if chars > limits.max_text_chars {
            return Err(PredictError::TextTooLong {
                chars,
                limit: limits.max_text_chars,
            });
        }
        let encoding = tokenizer.encode(text, None)?;
        let windows = split(&encoding.ids);
        if windows.len() > limits.max_windows {
            return Err(PredictError::TooManyWindows {
                windows: windows.len(),
                limit: limits.max_windows,
            });
        }
        Ok(Self {
            schema,
            text: text.to_string(),
            encoding,
            windows,
            max_prompts: limits.max_prompts,
            open: vec![Group {
                level: Vec::new(),
                chain: Vec::new(),
                order: Vec::new(),
            }],
            asked: Vec::new(),
            prompts_run: 0,
            complete: Vec::new(),
        })
    }

    /// The text's windows, for [`UniNluModel::encode_text`].
    pub fn text_windows(&self) -> &[TextWindow] {
        &self.windows
    }

    pub fn text_encoding(&self) -> &Encoding {
        &self.encoding
    }

    /// Prompts handed out so far.
    pub fn prompts_run(&self) -> usize {
        self.prompts_run
    }

    /// Tokens one prompt occupies in the model's upper layers (every window, `[text; prompt]`):
    /// the unit for a token-bounded batcher.
    pub fn prompt_cost(&self, job: &PromptJob) -> usize {
        self.windows.len() * (self.windows.first().map_or(0, |w| w.ids.len()) + job.ids.len())
    }

    fn level(&self, path: &[usize]) -> &Schema {
        path.iter().fold(&self.schema, |level, &k| {
            level.nodes[k]
                .children
                .as_ref()
                .expect("groups are only opened for keys with a sub-schema")
        })
    }

    /// Every prompt of the open groups, in order; empty when the traversal is done. Each call
    /// must be followed by [`Traversal::accept`] with their logits, in the same order.
    pub fn next_prompts(&mut self, tokenizer: &Tokenizer) -> Result<Vec<PromptJob>, PredictError> {
        let groups = std::mem::take(&mut self.open);
        let count: usize = groups
            .iter()
            .map(|g| self.level(&g.level).nodes.len())
            .sum();
        if self.prompts_run + count > self.max_prompts {
            return Err(PredictError::TooManyPrompts {
                limit: self.max_prompts,
            });
        }
        let mut jobs = Vec::with_capacity(count);
        for group in &groups {
            for node in &self.level(&group.level).nodes {
                let prompt = prompt(&group.chain, &node.key);
                let ids = tokenizer.encode(&prompt, Some(PROMPT_MAX_TOKENS))?.ids;
                jobs.push(PromptJob { prompt, ids });
            }
        }
        self.prompts_run += count;
        self.asked = groups;
        Ok(jobs)
    }

    /// Takes the merged logits of the prompts the last [`Traversal::next_prompts`] returned.
    pub fn accept(&mut self, logits: &[Logits]) -> Result<(), PredictError> {
        let expected: usize = self
            .asked
            .iter()
            .map(|g| self.level(&g.level).nodes.len())
            .sum();
        if logits.len() != expected {
            return Err(ModelError::Input(format!(
                "expected logits for {expected} prompts, got {}",
                logits.len()
            ))
            .into());
        }
        let n = self.encoding.len();
        if let Some(l) = logits
            .iter()
            .find(|l| l.head.len() != n || l.tail.len() != n)
        {
            return Err(ModelError::Input(format!(
                "logits cover {} tokens, the text has {n}",
                l.head.len().min(l.tail.len())
            ))
            .into());
        }
        let asked = std::mem::take(&mut self.asked);
        let text = CharText::new(&self.text);
        let mut logits = logits.iter();
        for group in asked {
            let nodes: Vec<(String, bool)> = self
                .level(&group.level)
                .nodes
                .iter()
                .map(|n| (n.key.clone(), n.children.is_some()))
                .collect();
            for (k, (key, nested)) in nodes.into_iter().enumerate() {
                let l = logits.next().expect("length checked above");
                let found = spans(&text, &self.encoding.offsets, &l.head, &l.tail);
                for (i, f) in found.into_iter().enumerate() {
                    let mut chain = group.chain.clone();
                    chain.push(ChainItem {
                        kind: key.clone(),
                        span: f.span,
                        offset: [f.start, f.end],
                        score: Some(f.score),
                    });
                    let mut order = group.order.clone();
                    order.push((k, i));
                    if nested {
                        let mut level = group.level.clone();
                        level.push(k);
                        self.open.push(Group {
                            level,
                            chain,
                            order,
                        });
                    } else {
                        self.complete.push((order, chain));
                    }
                }
            }
        }
        Ok(())
    }

    pub fn is_done(&self) -> bool {
        self.open.is_empty() && self.asked.is_empty()
    }

    /// The complete chains in depth-first order.
    pub fn finish(mut self) -> Prediction {
        self.complete.sort_by(|a, b| a.0.cmp(&b.0));
        let output: Vec<Vec<ChainItem>> = self.complete.into_iter().map(|(_, c)| c).collect();
        Prediction {
            labels: classification_labels(&self.text, &output),
            output,
            prompts: self.prompts_run,
        }
    }
}

/// Prompts scored per forward in [`predict`], bounded by tokens (`prompt_cost`) so that a
/// large schema on a long text does not allocate huge attention matrices at once.
const PREDICT_CHUNK_TOKENS: usize = 8192;

/// Runs one request start to finish on the calling thread.
pub fn predict(
    model: &UniNluModel,
    text: &str,
    schema: &Value,
    limits: &Limits,
) -> Result<Prediction, PredictError> {
    let tokenizer = model.tokenizer();
    let mut traversal = Traversal::new(tokenizer, text, Schema::parse(schema, limits)?, limits)?;
    let states = model.encode_text(traversal.text_windows())?;
    loop {
        let jobs = traversal.next_prompts(tokenizer)?;
        if jobs.is_empty() {
            break;
        }
        let mut logits = Vec::with_capacity(jobs.len());
        let mut chunk: Vec<Vec<u32>> = Vec::new();
        let mut chunk_tokens = 0;
        for job in &jobs {
            let cost = traversal.prompt_cost(job);
            if !chunk.is_empty() && chunk_tokens + cost > PREDICT_CHUNK_TOKENS {
                logits.extend(model.score(&states, &std::mem::take(&mut chunk))?);
                chunk_tokens = 0;
            }
            chunk.push(job.ids.clone());
            chunk_tokens += cost;
        }
        logits.extend(model.score(&states, &chunk)?);
        traversal.accept(&logits)?;
    }
    Ok(traversal.finish())
}

/// For classification-style inputs (`label1,label2,...|text`): the labels chosen by the output,
/// i.e. leaf spans inside the label list that equal one of its labels exactly, in output order,
/// each once. `None` when the text has no `|`.
pub fn classification_labels(text: &str, output: &[Vec<ChainItem>]) -> Option<Vec<String>> {
    let (label_list, _) = text.split_once('|')?;
    let list_chars = label_list.chars().count();
    let labels: Vec<&str> = label_list.split(',').filter(|l| !l.is_empty()).collect();
    let mut chosen: Vec<String> = Vec::new();
    for leaf in output.iter().filter_map(|chain| chain.last()) {
        let inside = leaf.offset[0] < leaf.offset[1] && leaf.offset[1] <= list_chars;
        if inside && labels.contains(&leaf.span.as_str()) && !chosen.contains(&leaf.span) {
            chosen.push(leaf.span.clone());
        }
    }
    Some(chosen)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf(span: &str, start: usize, end: usize) -> Vec<ChainItem> {
        vec![ChainItem {
            kind: "分类".into(),
            span: span.into(),
            offset: [start, end],
            score: None,
        }]
    }

    #[test]
    fn labels_are_exact_matches_inside_the_label_list() {
        let text = "正向,负向|负向的评论，正向";
        let output = vec![
            leaf("负向", 3, 5),
            leaf("向,负", 1, 4),
            leaf("正向", 0, 2),
            leaf("负向", 3, 5),
            // Same words in the text part do not count.
            leaf("正向", 12, 14),
        ];
        assert_eq!(
            classification_labels(text, &output),
            Some(vec!["负向".to_string(), "正向".to_string()])
        );
        assert_eq!(classification_labels("no labels here", &output), None);
        assert_eq!(classification_labels("a,b|text", &[]), Some(vec![]));
    }
}

#[cfg(test)]
mod traversal_tests {
    use super::*;
    use crate::model::files::TokenizerFiles;
    use serde_json::json;

    fn tokenizer() -> Tokenizer {
        let model = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../shared/fixtures/uninlu-tiny/model");
        Tokenizer::load(&TokenizerFiles::Json(model.join("tokenizer.json"))).unwrap()
    }

    /// Logits over `[CLS] 甲 乙 丙 丁 [SEP]` with the given head and tail tokens.
    fn logits(heads: &[usize], tails: &[usize]) -> Logits {
        let mark = |on: &[usize]| {
            (0..6)
                .map(|i| if on.contains(&i) { 1.0 } else { -1.0 })
                .collect()
        };
        Logits {
            head: mark(heads),
            tail: mark(tails),
        }
    }

    fn item(kind: &str, span: &str, start: usize, end: usize) -> ChainItem {
        ChainItem {
            kind: kind.into(),
            span: span.into(),
            offset: [start, end],
            score: None,
        }
    }

    #[test]
    fn expands_found_spans_and_outputs_complete_chains_depth_first() {
        let tok = tokenizer();
        let schema =
            Schema::parse(&json!({"A": {"x": null}, "B": null}), &Limits::default()).unwrap();
        let mut t = Traversal::new(&tok, "甲乙丙丁", schema, &Limits::default()).unwrap();
        assert_eq!(t.text_encoding().len(), 6);

        let level1: Vec<String> = t
            .next_prompts(&tok)
            .unwrap()
            .into_iter()
            .map(|j| j.prompt)
            .collect();
        assert_eq!(level1, ["A: ", "B: "]);
        // A finds 甲 and 丙丁, B finds 乙.
        t.accept(&[logits(&[1, 3], &[1, 4]), logits(&[2], &[2])])
            .unwrap();

        let level2: Vec<String> = t
            .next_prompts(&tok)
            .unwrap()
            .into_iter()
            .map(|j| j.prompt)
            .collect();
        assert_eq!(level2, ["A: 甲, x: ", "A: 丙丁, x: "]);
        assert!(
            t.accept(&[logits(&[], &[])]).is_err(),
            "one logits entry per prompt"
        );
        // A rejected accept leaves the traversal where it was.
        // Nothing under 甲 (so its chain is dropped), 甲乙 under 丙丁.
        t.accept(&[logits(&[], &[]), logits(&[1], &[2])]).unwrap();

        assert!(t.next_prompts(&tok).unwrap().is_empty());
        assert!(t.is_done());
        let p = t.finish();
        // Every found span is scored from its own two logits (1.0 and 1.0 here).
        let one = super::super::decode::score(1.0, 1.0);
        assert!(p.output.iter().flatten().all(|i| i.score == Some(one)), "{p:?}");
        let p = p.without_scores();
        assert_eq!(p.prompts, 4);
        assert_eq!(
            p.output,
            vec![
                vec![item("A", "丙丁", 2, 4), item("x", "甲乙", 0, 2)],
                vec![item("B", "乙", 1, 2)],
            ]
        );
        assert_eq!(p.labels, None);
    }

    #[test]
    fn prompt_budget_is_checked_as_the_traversal_expands() {
        let tok = tokenizer();
        let limits = Limits {
            max_prompts: 3,
            ..Limits::default()
        };
        let schema = Schema::parse(&json!({"A": {"x": null, "y": null}}), &limits).unwrap();
        let mut t = Traversal::new(&tok, "甲乙丙丁", schema, &limits).unwrap();
        assert_eq!(t.next_prompts(&tok).unwrap().len(), 1);
        // One span: 1 + 2 prompts fit the budget of 3.
        t.accept(&[logits(&[1], &[1])]).unwrap();
        assert_eq!(t.next_prompts(&tok).unwrap().len(), 2);

        let mut t = Traversal::new(
            &tok,
            "甲乙丙丁",
            Schema::parse(&json!({"A": {"x": null, "y": null}}), &limits).unwrap(),
            &limits,
        )
        .unwrap();
        t.next_prompts(&tok).unwrap();
        // Two spans: 1 + 4 prompts exceed it.
        t.accept(&[logits(&[1, 2], &[2])]).unwrap();
        assert!(matches!(
            t.next_prompts(&tok),
            Err(PredictError::TooManyPrompts { limit: 3 })
        ));
    }
}
