//! Spans from merged start/end logits: every token whose start logit is above 0.5 opens a span
//! that ends at the first token at or after it whose end logit is above 0.5. Offsets are in code
//! points of the input text; spans are sorted by `(start, end)`, duplicates kept, as the
//! original does. Each span also gets a score (see [`score`]), which the original has not.

use serde::{Deserialize, Serialize};

/// Raw-logit threshold of the original (no sigmoid).
pub const THRESHOLD: f32 = 0.5;

/// One element of an output chain: `{"type", "span", "offset": [start, end]}`, and `"score"`
/// when the request asks for it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ChainItem {
    #[serde(rename = "type")]
    pub kind: String,
    pub span: String,
    /// `[start, end)` in Unicode code points of the input text.
    #[schema(value_type = Vec<usize>, min_items = 2, max_items = 2)]
    pub offset: [usize; 2],
    /// Only with `"scores": true`: the probability the model gives the span, in (0, 1]; see
    /// [`score`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<f32>,
}

/// A span's score: the sigmoid of its start token's merged start logit times the sigmoid of its
/// end token's merged end logit (how UIE scores spans). A found span's two logits are above
/// [`THRESHOLD`], so its score is above `sigmoid(0.5)^2`, about 0.38.
pub fn score(head: f32, tail: f32) -> f32 {
    let sigmoid = |x: f32| 1.0 / (1.0 + (-x).exp());
    sigmoid(head) * sigmoid(tail)
}

/// One span found for one prompt.
#[derive(Clone, Debug, PartialEq)]
pub struct Found {
    /// `[start, end)` in code points of the text.
    pub start: usize,
    pub end: usize,
    pub span: String,
    pub score: f32,
}

/// A text with its code-point -> byte index, so spans are sliced like Python slices strings.
pub struct CharText<'a> {
    text: &'a str,
    /// Byte index of every code point, plus the text's length at the end.
    bounds: Vec<usize>,
}

impl<'a> CharText<'a> {
    pub fn new(text: &'a str) -> Self {
        let bounds = text
            .char_indices()
            .map(|(i, _)| i)
            .chain(std::iter::once(text.len()))
            .collect();
        Self { text, bounds }
    }

    pub fn chars(&self) -> usize {
        self.bounds.len() - 1
    }

    /// `text[start:end]` with Python semantics: clamped to the text, empty when `start >= end`.
    pub fn slice(&self, start: usize, end: usize) -> &'a str {
        let n = self.chars();
        let (s, e) = (start.min(n), end.min(n));
        if s >= e {
            ""
        } else {
            &self.text[self.bounds[s]..self.bounds[e]]
        }
    }
}

/// `(head, tail)` token index pairs, in head order.
pub fn token_spans(head: &[f32], tail: &[f32]) -> Vec<(usize, usize)> {
    head.iter()
        .enumerate()
        .filter(|(_, &h)| h > THRESHOLD)
        .filter_map(|(h, _)| {
            (h..tail.len())
                .find(|&t| tail[t] > THRESHOLD)
                .map(|t| (h, t))
        })
        .collect()
}

/// Character spans `[offset(head).start, offset(tail).end)`, sorted by `(start, end)` (stable).
pub fn spans(text: &CharText, offsets: &[(usize, usize)], head: &[f32], tail: &[f32]) -> Vec<Found> {
    let mut found: Vec<Found> = token_spans(head, tail)
        .into_iter()
        .map(|(h, t)| {
            let (start, end) = (offsets[h].0, offsets[t].1);
            Found {
                start,
                end,
                span: text.slice(start, end).to_string(),
                score: score(head[h], tail[t]),
            }
        })
        .collect();
    found.sort_by_key(|f| (f.start, f.end));
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_take_the_first_tail_at_or_after_them() {
        //            0     1     2     3     4     5
        let head = [-1.0, 0.6, -1.0, 2.0, 0.5, 0.9];
        let tail = [-1.0, -1.0, 0.51, 3.0, -1.0, -1.0];
        // 1 -> 2, 3 -> 3 (same token), 4 is not above 0.5, 5 finds no tail.
        assert_eq!(token_spans(&head, &tail), vec![(1, 2), (3, 3)]);
    }

    /// The spans without their scores.
    fn places(found: Vec<Found>) -> Vec<(usize, usize, String)> {
        found.into_iter().map(|f| (f.start, f.end, f.span)).collect()
    }

    #[test]
    fn scores_are_the_product_of_both_sigmoids() {
        assert_eq!(score(0.0, 0.0), 0.25);
        let expected = 1.0 / (1.0 + (-2.0f32).exp()) * 0.5;
        assert!((score(2.0, 0.0) - expected).abs() < 1e-7);
        let text = CharText::new("ab");
        let found = spans(&text, &[(0, 0), (0, 1), (1, 2), (0, 0)], &[-9., 3., -9., -9.], &[-9., -9., 1., -9.]);
        assert_eq!(found.len(), 1);
        assert!((found[0].score - score(3.0, 1.0)).abs() < 1e-7, "{found:?}");
    }

    #[test]
    fn spans_use_code_point_offsets_and_sort() {
        let text = CharText::new("谷爱凌😀在北京");
        // [CLS] 谷 爱 凌 [UNK] 在 北 京 [SEP]
        let offsets = [
            (0, 0),
            (0, 1),
            (1, 2),
            (2, 3),
            (3, 4),
            (4, 5),
            (5, 6),
            (6, 7),
            (0, 0),
        ];
        let head = [-9., -9., -9., -9., -9., -9., 1.0, -9., -9.];
        let tail = [-9., -9., -9., -9., -9., -9., -9., 1.0, -9.];
        let mut h2 = head;
        h2[1] = 1.0;
        let mut t2 = tail;
        t2[3] = 1.0;
        assert_eq!(
            places(spans(&text, &offsets, &head, &tail)),
            vec![(5, 7, "北京".to_string())]
        );
        assert_eq!(
            places(spans(&text, &offsets, &h2, &t2)),
            vec![(0, 3, "谷爱凌".to_string()), (5, 7, "北京".to_string())]
        );
    }

    #[test]
    fn special_token_offsets_give_python_slices() {
        let text = CharText::new("abc");
        let offsets = [(0, 0), (0, 1), (1, 3), (0, 0)];
        // A head at [CLS] and one at "bc" both end at [SEP] (offset end 0).
        let head = [1.0, -1.0, 1.0, -1.0];
        let tail = [-1.0, -1.0, -1.0, 1.0];
        assert_eq!(
            places(spans(&text, &offsets, &head, &tail)),
            vec![(0, 0, String::new()), (1, 0, String::new())]
        );
        assert_eq!(text.slice(1, 99), "bc");
    }
}
