//! Sliding windows over a long text (384 tokens, stride 352, only the last one padded) and the
//! per-token merge of the windows' logits, exactly as the original pipeline does them.

/// Tokens per window when the text needs more than one.
pub const WINDOW_LEN: usize = 384;
/// Distance between window starts (windows overlap by 32 tokens).
pub const WINDOW_STRIDE: usize = 352;

/// One window of text tokens. Every window of a text has the same length.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TextWindow {
    /// Index of the window's first token in the whole text.
    pub start: usize,
    pub ids: Vec<u32>,
    /// 1 for real tokens, 0 for padding.
    pub mask: Vec<u32>,
}

/// How many windows a text of `n` tokens (`[CLS]`/`[SEP]` included) needs.
pub fn window_count(n: usize) -> usize {
    if n <= WINDOW_LEN {
        1
    } else {
        (n - WINDOW_LEN).div_ceil(WINDOW_STRIDE) + 1
    }
}

/// A short text is one unpadded window of its own length; a long one is cut into windows of
/// [`WINDOW_LEN`] tokens, the last padded with id 0 / mask 0.
pub fn split(ids: &[u32]) -> Vec<TextWindow> {
    let count = window_count(ids.len());
    let len = if count == 1 { ids.len() } else { WINDOW_LEN };
    (0..count)
        .map(|j| {
            let start = j * WINDOW_STRIDE;
            let real = &ids[start..(start + len).min(ids.len())];
            let mut window_ids = real.to_vec();
            let mut mask = vec![1; real.len()];
            window_ids.resize(len, 0);
            mask.resize(len, 0);
            TextWindow {
                start,
                ids: window_ids,
                mask,
            }
        })
        .collect()
}

/// Merges per-window values into one value per text token: windows in order, the first value
/// seen for a token is kept and each later one `v` turns it into `(old + v) / 2`. Values of
/// padding positions (beyond `n_tokens`) are dropped. Averaging runs in f64 like the Python
/// original.
pub fn merge<'a>(
    n_tokens: usize,
    windows: impl IntoIterator<Item = (usize, &'a [f32])>,
) -> Vec<f32> {
    let mut merged: Vec<Option<f64>> = vec![None; n_tokens];
    for (start, values) in windows {
        for (i, &v) in values.iter().enumerate() {
            if let Some(slot) = merged.get_mut(start + i) {
                let v = f64::from(v);
                *slot = Some(slot.map_or(v, |old| (old + v) / 2.0));
            }
        }
    }
    merged
        .into_iter()
        .map(|v| v.unwrap_or(f64::NEG_INFINITY) as f32)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts() {
        assert_eq!(window_count(0), 1);
        assert_eq!(window_count(384), 1);
        assert_eq!(window_count(385), 2);
        assert_eq!(window_count(384 + 352), 2);
        assert_eq!(window_count(384 + 353), 3);
        assert_eq!(window_count(427), 2);
    }

    #[test]
    fn short_text_is_one_unpadded_window() {
        let ids: Vec<u32> = (1..=10).collect();
        let w = split(&ids);
        assert_eq!(w.len(), 1);
        assert_eq!(
            w[0],
            TextWindow {
                start: 0,
                ids: ids.clone(),
                mask: vec![1; 10]
            }
        );
    }

    #[test]
    fn long_text_windows_overlap_and_only_last_is_padded() {
        let ids: Vec<u32> = (1..=427).collect();
        let w = split(&ids);
        assert_eq!(w.len(), 2);
        assert_eq!(w[0].start, 0);
        assert_eq!(w[0].ids, (1..=384).collect::<Vec<u32>>());
        assert!(w[0].mask.iter().all(|&m| m == 1));
        assert_eq!(w[1].start, 352);
        assert_eq!(w[1].ids.len(), 384);
        assert_eq!(&w[1].ids[..75], &(353..=427).collect::<Vec<u32>>()[..]);
        assert!(w[1].ids[75..].iter().all(|&id| id == 0));
        assert_eq!(w[1].mask.iter().filter(|&&m| m == 1).count(), 75);
    }

    #[test]
    fn merge_averages_overlap_in_window_order_and_drops_padding() {
        let first = [1.0f32, 2.0, 3.0, 4.0];
        let second = [10.0f32, 20.0, -10000.0, -10000.0];
        let third = [30.0f32];
        let merged = merge(5, [(0, &first[..]), (2, &second[..]), (2, &third[..])]);
        // token 2: 3 -> (3+10)/2 = 6.5 -> (6.5+30)/2 = 18.25; token 3: (4+20)/2; position 5 is
        // beyond the text and dropped.
        assert_eq!(merged[..4], [1.0, 2.0, 18.25, 12.0]);
        assert_eq!(merged[4], -10000.0);
    }
}
