//! Sentence pooling over a packed batch's token states (CLS, or the mean of each sequence's
//! tokens) and L2 normalisation, as sentence-transformers computes them.

use std::path::Path;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::{ModelError, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Pooling {
    /// The first token's state.
    Cls,
    /// The average of the states of the real (unmasked) tokens.
    Mean,
}

impl FromStr for Pooling {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "cls" => Ok(Self::Cls),
            "mean" => Ok(Self::Mean),
            other => Err(format!("unknown pooling {other:?} (expected cls or mean)")),
        }
    }
}

impl std::fmt::Display for Pooling {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Cls => "cls",
            Self::Mean => "mean",
        })
    }
}

impl Pooling {
    /// Reads sentence-transformers' `1_Pooling/config.json`.
    pub fn from_config_file(path: &Path) -> Result<Self> {
        let bad = |m: String| ModelError::Config(format!("{}: {m}", path.display()));
        let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
        let cfg: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
        let on = |key: &str| cfg.get(key).and_then(|v| v.as_bool()).unwrap_or(false);
        match (on("pooling_mode_cls_token"), on("pooling_mode_mean_tokens")) {
            (true, false) => Ok(Self::Cls),
            (false, true) => Ok(Self::Mean),
            _ => Err(bad(
                "exactly one of CLS or mean pooling must be enabled".into()
            )),
        }
    }

    /// `hidden`: `[batch, len, dim]`; `mask`: 0/1 `[batch, len]` row-major. Returns `[batch, dim]`.
    /// `hidden`: `[tokens, dims]`, the sequences of `lens` back to back (see
    /// [`super::bert::Bert::forward`]); one vector per sequence.
    pub fn pool(self, hidden: &[f32], lens: &[usize], dims: usize) -> Vec<Vec<f32>> {
        let mut first = 0;
        lens.iter()
            .map(|&len| {
                let rows = &hidden[first * dims..(first + len) * dims];
                first += len;
                match self {
                    Self::Cls => rows[..dims].to_vec(),
                    Self::Mean => {
                        let mut sum = vec![0f32; dims];
                        for row in rows.chunks_exact(dims) {
                            sum.iter_mut().zip(row).for_each(|(s, v)| *s += v);
                        }
                        sum.iter().map(|s| s / len.max(1) as f32).collect()
                    }
                }
            })
            .collect()
    }
}

/// Scales `v` to unit L2 norm (a zero vector stays zero).
pub fn l2_normalize(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    v.iter_mut().for_each(|x| *x /= norm);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_averages_each_sequence_and_cls_takes_its_first_row() {
        // Two sequences of lengths 2 and 3, dims 2, packed back to back.
        let h = [1f32, 2., 3., 4., 5., 6., 7., 8., 9., 10.];
        let lens = [2, 3];
        assert_eq!(
            Pooling::Mean.pool(&h, &lens, 2),
            vec![vec![2., 3.], vec![7., 8.]]
        );
        assert_eq!(
            Pooling::Cls.pool(&h, &lens, 2),
            vec![vec![1., 2.], vec![5., 6.]]
        );
    }

    #[test]
    fn normalize_rows_and_zero_vector() {
        let mut v = [3f32, 4.];
        l2_normalize(&mut v);
        assert_eq!(v, [0.6, 0.8]);
        let mut zero = [0f32, 0.];
        l2_normalize(&mut zero);
        assert_eq!(zero, [0., 0.]);
    }
}
