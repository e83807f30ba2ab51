//! Multi-head self-attention read straight from the fused QKV projection rows. One task per
//! (sequence, head) on the rayon pool, each running single-threaded gemms for the scores and
//! the context: candle's batched matmul instead runs the heads one after another, each split
//! over the threads with a barrier, and needs a head-major copy of q, k and v before and a
//! transpose copy after. Here the context lands in `[tokens, hidden]` order, ready for the
//! output projection.

use gemm::{gemm, Parallelism};
use rayon::prelude::*;

/// Sizes of one attention call; `hidden = heads * head_dim`.
#[derive(Clone, Copy, Debug)]
pub struct Dims {
    pub batch: usize,
    pub len: usize,
    pub heads: usize,
    pub head_dim: usize,
}

/// The output buffer, shared by tasks that write disjoint (sequence, head) blocks of it.
#[derive(Clone, Copy)]
struct Out(*mut f32);
unsafe impl Send for Out {}
unsafe impl Sync for Out {}

impl Out {
    /// Through a method, so that closures capture the whole (`Sync`) value, not its pointer.
    fn at(self, offset: usize) -> *mut f32 {
        self.0.wrapping_add(offset)
    }
}

/// `qkv`: `[batch * len, 3 * hidden]`, rows `[q | k | v]` with q already scaled by
/// `1/sqrt(head_dim)`; `mask`: additive, `[batch, len]` over keys. Returns the context
/// `softmax(q kᵀ + mask) v`, `[batch * len, hidden]`.
pub fn attention(qkv: &[f32], mask: Option<&[f32]>, d: Dims) -> Vec<f32> {
    let Dims {
        batch,
        len: t,
        heads,
        head_dim: dh,
    } = d;
    let h = heads * dh;
    let row = 3 * h;
    assert_eq!(qkv.len(), batch * t * row, "qkv size");
    if let Some(m) = mask {
        assert_eq!(m.len(), batch * t, "mask size");
    }
    let mut out = vec![0f32; batch * t * h];
    let dst = Out(out.as_mut_ptr());
    (0..batch * heads).into_par_iter().for_each_init(
        || vec![0f32; t * t],
        |scores, task| {
            let (b, j) = (task / heads, task % heads);
            let q = &qkv[b * t * row + j * dh..];
            let (k, v) = (&q[h..], &q[2 * h..]);
            // SAFETY: every read stays inside `qkv` (row `b*t + t-1`, column below 3h);
            // every write goes to rows b*t.. b*t+t-1, columns j*dh.. j*dh+dh-1 of `out`,
            // which no other task touches; `out` outlives the parallel loop.
            unsafe {
                // scores[t, t] = q[t, dh] · kᵀ: element (d, key) of kᵀ is k[key*row + d].
                gemm(
                    t,
                    t,
                    dh,
                    scores.as_mut_ptr(),
                    1,
                    t as isize,
                    false,
                    q.as_ptr(),
                    1,
                    row as isize,
                    k.as_ptr(),
                    row as isize,
                    1,
                    0.0,
                    1.0,
                    false,
                    false,
                    false,
                    Parallelism::None,
                );
            }
            let key_mask = mask.map(|m| &m[b * t..(b + 1) * t]);
            for r in scores.chunks_exact_mut(t) {
                softmax_row(r, key_mask);
            }
            unsafe {
                // context[t, dh] = p[t, t] · v[t, dh], written into out's head columns.
                gemm(
                    t,
                    dh,
                    t,
                    dst.at(b * t * h + j * dh),
                    1,
                    h as isize,
                    false,
                    scores.as_ptr(),
                    1,
                    t as isize,
                    v.as_ptr(),
                    1,
                    row as isize,
                    0.0,
                    1.0,
                    false,
                    false,
                    false,
                    Parallelism::None,
                );
            }
        },
    );
    out
}

/// In place: `softmax(r + mask)`, max-subtracted like candle's and PyTorch's.
fn softmax_row(r: &mut [f32], mask: Option<&[f32]>) {
    if let Some(m) = mask {
        r.iter_mut().zip(m).for_each(|(x, m)| *x += m);
    }
    let max = r.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for x in r.iter_mut() {
        *x = (*x - max).exp();
        sum += *x;
    }
    r.iter_mut().for_each(|x| *x /= sum);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Straight from the definition, in f64.
    fn naive(qkv: &[f32], mask: Option<&[f32]>, d: Dims) -> Vec<f32> {
        let h = d.heads * d.head_dim;
        let at = |b: usize, i: usize, c: usize| qkv[(b * d.len + i) * 3 * h + c] as f64;
        let mut out = vec![0f32; d.batch * d.len * h];
        for b in 0..d.batch {
            for j in 0..d.heads {
                for i in 0..d.len {
                    let s: Vec<f64> = (0..d.len)
                        .map(|key| {
                            let dot: f64 = (0..d.head_dim)
                                .map(|c| {
                                    at(b, i, j * d.head_dim + c)
                                        * at(b, key, h + j * d.head_dim + c)
                                })
                                .sum();
                            dot + mask.map_or(0.0, |m| m[b * d.len + key] as f64)
                        })
                        .collect();
                    let max = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    let e: Vec<f64> = s.iter().map(|x| (x - max).exp()).collect();
                    let z: f64 = e.iter().sum();
                    for c in 0..d.head_dim {
                        let v: f64 = (0..d.len)
                            .map(|key| e[key] / z * at(b, key, 2 * h + j * d.head_dim + c))
                            .sum();
                        out[(b * d.len + i) * h + j * d.head_dim + c] = v as f32;
                    }
                }
            }
        }
        out
    }

    /// Deterministic values in [-2, 2).
    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0
            })
            .collect()
    }

    fn check(d: Dims, masked_tail: usize) {
        let h = d.heads * d.head_dim;
        let qkv = values(d.batch * d.len * 3 * h, (d.len * 31 + d.heads) as u64);
        // The last `masked_tail` keys of every other sequence are padding.
        let mask: Vec<f32> = (0..d.batch * d.len)
            .map(|i| {
                let (b, key) = (i / d.len, i % d.len);
                if b % 2 == 1 && key >= d.len - masked_tail {
                    f32::MIN
                } else {
                    0.0
                }
            })
            .collect();
        let mask = (masked_tail > 0).then_some(mask.as_slice());
        let got = attention(&qkv, mask, d);
        let want = naive(&qkv, mask, d);
        let worst = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(worst < 1e-5, "{d:?}: max abs diff {worst}");
    }

    #[test]
    fn matches_the_definition_on_odd_shapes() {
        for (batch, len, heads, head_dim, masked) in [
            (1, 1, 1, 1, 0),
            (1, 1, 2, 3, 0),
            (3, 5, 3, 7, 2),
            (2, 17, 4, 16, 5),
            (2, 33, 2, 64, 31),
        ] {
            check(
                Dims {
                    batch,
                    len,
                    heads,
                    head_dim,
                },
                masked,
            );
        }
    }
}
