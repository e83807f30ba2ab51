//! Sentence pooling over token states (CLS or mask-aware mean) and L2 normalisation, as
//! sentence-transformers computes them.

use std::path::Path;
use std::str::FromStr;

use candle_core::{Tensor, D};
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
    pub fn pool(self, hidden: &Tensor, mask: &[u32]) -> Result<Tensor> {
        let (b, t, _) = hidden.dims3()?;
        Ok(match self {
            Self::Cls => hidden.narrow(1, 0, 1)?.squeeze(1)?,
            Self::Mean => {
                let m: Vec<f32> = mask.iter().map(|&v| v as f32).collect();
                let m = Tensor::from_vec(m, (b, t, 1), hidden.device())?;
                let sum = hidden.broadcast_mul(&m)?.sum(1)?;
                let count = m.sum(1)?.clamp(1e-9f32, f32::MAX)?;
                sum.broadcast_div(&count)?
            }
        })
    }
}

/// `x / max(||x||, 1e-12)` per row of `[batch, dim]`, like `torch.nn.functional.normalize`.
pub fn l2_normalize(x: &Tensor) -> Result<Tensor> {
    let norm = x
        .sqr()?
        .sum_keepdim(D::Minus1)?
        .sqrt()?
        .clamp(1e-12f32, f32::MAX)?;
    Ok(x.broadcast_div(&norm)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn mean_ignores_masked_tokens_and_cls_takes_first() {
        let h = Tensor::from_vec(
            vec![1f32, 2., 3., 4., 100., 100., 5., 6., 7., 8., 9., 10.],
            (2, 3, 2),
            &Device::Cpu,
        )
        .unwrap();
        let mask = [1, 1, 0, 1, 1, 1];
        let mean = Pooling::Mean
            .pool(&h, &mask)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        assert_eq!(mean, vec![vec![2., 3.], vec![7., 8.]]);
        let cls = Pooling::Cls
            .pool(&h, &mask)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        assert_eq!(cls, vec![vec![1., 2.], vec![5., 6.]]);
    }

    #[test]
    fn normalize_rows_and_zero_vector() {
        let x = Tensor::from_vec(vec![3f32, 4., 0., 0.], (2, 2), &Device::Cpu).unwrap();
        let n = l2_normalize(&x).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(n, vec![vec![0.6, 0.8], vec![0., 0.]]);
    }
}
