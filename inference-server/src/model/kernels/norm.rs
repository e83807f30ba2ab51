//! LayerNorm in place over the rows of the buffer the linear layer just wrote (bias and
//! residual are already in it, see [`super::linear`]), so residual + LayerNorm cost one pass and
//! no new buffer.

use rayon::prelude::*;

use super::simd::{simd_builds, Simd};

/// Rows below this many values per task run on the calling thread: a rayon hop costs more.
const MIN_VALUES_PER_TASK: usize = 16 * 1024;

/// `x`: `[rows, weight.len()]` row-major; each row becomes
/// `(row - mean) / sqrt(var + eps) * weight + bias` (biased variance, as PyTorch).
pub fn layer_norm_in_place(x: &mut [f32], weight: &[f32], bias: &[f32], eps: f32) {
    layer_norm_on(Simd::best(), x, weight, bias, eps)
}

/// [`layer_norm_in_place`] at a given SIMD level.
pub fn layer_norm_on(simd: Simd, x: &mut [f32], weight: &[f32], bias: &[f32], eps: f32) {
    let n = weight.len();
    assert!(n > 0 && bias.len() == n, "weight and bias sizes");
    assert!(x.len().is_multiple_of(n), "input size");
    let rows_per_task = (MIN_VALUES_PER_TASK / n).max(1);
    x.par_chunks_mut(rows_per_task * n)
        .for_each(|rows| normalize_rows_on(simd, rows, weight, bias, eps));
}

simd_builds! {
    fn normalize_rows_on(rows: &mut [f32], weight: &[f32], bias: &[f32], eps: f32) => normalize_rows
}

#[inline(always)]
fn normalize_rows(rows: &mut [f32], weight: &[f32], bias: &[f32], eps: f32) {
    for row in rows.chunks_exact_mut(weight.len()) {
        let n = row.len() as f32;
        let mean = lane_sum(row.iter().copied()) / n;
        // Two passes (mean, then squared deviations): no cancellation for rows with a large mean.
        let var = lane_sum(row.iter().map(|v| (v - mean) * (v - mean))) / n;
        let inv = 1.0 / (var + eps).sqrt();
        for ((v, w), b) in row.iter_mut().zip(weight).zip(bias) {
            *v = (*v - mean) * inv * w + b;
        }
    }
}

/// A sum over 16 lanes, so it vectorises (an in-order float sum is a chain of scalar adds).
#[inline(always)]
fn lane_sum(values: impl Iterator<Item = f32>) -> f32 {
    let mut lanes = [0f32; 16];
    for (i, v) in values.enumerate() {
        lanes[i % 16] += v;
    }
    lanes.iter().sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(x: &[f32], w: &[f32], b: &[f32], eps: f64) -> Vec<f32> {
        x.chunks(w.len())
            .flat_map(|row| {
                let n = row.len() as f64;
                let mean = row.iter().map(|&v| v as f64).sum::<f64>() / n;
                let var = row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
                row.iter()
                    .zip(w)
                    .zip(b)
                    .map(move |((&v, &w), &b)| {
                        ((v as f64 - mean) / (var + eps).sqrt() * w as f64 + b as f64) as f32
                    })
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    #[test]
    fn matches_the_definition() {
        let shapes = [(1, 1), (1, 7), (3, 384), (70, 768), (1000, 33)];
        for (simd, (rows, n)) in Simd::supported().flat_map(|s| shapes.map(|shape| (s, shape))) {
            // A large common offset per row: the one-pass formula would lose it.
            let x: Vec<f32> = (0..rows * n)
                .map(|i| 1000.0 + ((i * 7919) % 101) as f32 / 10.0)
                .collect();
            let w: Vec<f32> = (0..n).map(|i| 0.5 + (i % 5) as f32 / 4.0).collect();
            let b: Vec<f32> = (0..n).map(|i| (i % 3) as f32 - 1.0).collect();
            let mut got = x.clone();
            layer_norm_on(simd, &mut got, &w, &b, 1e-12);
            let want = naive(&x, &w, &b, 1e-12);
            let worst = got
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f32::max);
            // n = 1: every value is its row's mean, so the output is the bias alone.
            let level = simd.level().name();
            assert!(worst < 1e-3, "{level} {rows}x{n}: max abs diff {worst}");
        }
    }
}
