//! Multi-head self-attention read straight from the fused QKV projection rows. One task per
//! (sequence, head) on the rayon pool, each running single-threaded gemms for the scores and
//! the context: candle's batched matmul instead runs the heads one after another, each split
//! over the threads with a barrier, and needs a head-major copy of q, k and v before and a
//! transpose copy after. Here the context lands in `[tokens, hidden]` order, ready for the
//! output projection.

use gemm::{gemm, Parallelism};
use rayon::prelude::*;

use super::math::softmax_in_place;
use super::memory::resize_for_overwrite;
use super::SharedOut;

/// Shape of one attention call: the rows of `qkv` are the tokens of the sequences one after
/// another (a packed batch: no padding, so no mask); `hidden = heads * head_dim`.
#[derive(Clone, Copy, Debug)]
pub struct Dims<'a> {
    pub lens: &'a [usize],
    pub heads: usize,
    pub head_dim: usize,
}

/// `qkv`: `[tokens, 3 * hidden]`, rows `[q | k | v]` with q already scaled by
/// `1/sqrt(head_dim)`. Returns the context `softmax(q kᵀ) v` of every sequence,
/// `[tokens, hidden]`, into `out` (its old contents are dropped).
pub fn attention(qkv: &[f32], d: Dims, out: &mut Vec<f32>) {
    let Dims {
        lens,
        heads,
        head_dim: dh,
    } = d;
    let h = heads * dh;
    let row = 3 * h;
    let tokens: usize = lens.iter().sum();
    assert_eq!(qkv.len(), tokens * row, "qkv size");
    let starts: Vec<usize> = lens
        .iter()
        .scan(0, |next, &len| {
            let start = *next;
            *next += len;
            Some(start)
        })
        .collect();
    let longest = lens.iter().copied().max().unwrap_or(0);
    // Every head of every sequence writes its columns of its rows.
    resize_for_overwrite(out, tokens * h);
    let dst = SharedOut::new(out);
    (0..lens.len() * heads).into_par_iter().for_each_init(
        || vec![0f32; longest * longest],
        |scores, task| {
            let (s, j) = (task / heads, task % heads);
            let (first, t) = (starts[s], lens[s]);
            if t == 0 {
                return;
            }
            let scores = &mut scores[..t * t];
            let q = &qkv[first * row + j * dh..];
            let (k, v) = (&q[h..], &q[2 * h..]);
            // SAFETY: every read stays inside `qkv` (row `first + t-1`, column below 3h);
            // every write goes to rows first.. first+t-1, columns j*dh.. j*dh+dh-1 of `out`,
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
            scores.chunks_exact_mut(t).for_each(softmax_in_place);
            unsafe {
                // context[t, dh] = p[t, t] · v[t, dh], written into out's head columns.
                gemm(
                    t,
                    dh,
                    t,
                    dst.at(first * h + j * dh),
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
}

#[cfg(test)]
mod tests {
    use super::super::{max_abs_diff, test_values};
    use super::*;

    /// Straight from the definition, in f64, one sequence after another.
    fn naive(qkv: &[f32], d: Dims) -> Vec<f32> {
        let h = d.heads * d.head_dim;
        let tokens: usize = d.lens.iter().sum();
        let at = |first: usize, i: usize, c: usize| qkv[(first + i) * 3 * h + c] as f64;
        let mut out = vec![0f32; tokens * h];
        let mut first = 0;
        for &len in d.lens {
            for j in 0..d.heads {
                for i in 0..len {
                    let s: Vec<f64> = (0..len)
                        .map(|key| {
                            (0..d.head_dim)
                                .map(|c| {
                                    at(first, i, j * d.head_dim + c)
                                        * at(first, key, h + j * d.head_dim + c)
                                })
                                .sum()
                        })
                        .collect();
                    let max = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    let e: Vec<f64> = s.iter().map(|x| (x - max).exp()).collect();
                    let z: f64 = e.iter().sum();
                    for c in 0..d.head_dim {
                        let v: f64 = (0..len)
                            .map(|key| e[key] / z * at(first, key, 2 * h + j * d.head_dim + c))
                            .sum();
                        out[(first + i) * h + j * d.head_dim + c] = v as f32;
                    }
                }
            }
            first += len;
        }
        out
    }

    /// Sequences of different lengths (an empty one too) back to back, odd head sizes.
    #[test]
    fn packed_batches_match_the_definition() {
        for (lens, heads, head_dim) in [
            (vec![1], 1, 1),
            (vec![1], 2, 3),
            (vec![5, 5, 5], 3, 7),
            (vec![17, 1, 0, 9], 4, 16),
            (vec![33, 2], 2, 64),
        ] {
            let d = Dims {
                lens: &lens,
                heads,
                head_dim,
            };
            let tokens = lens.iter().sum::<usize>();
            let qkv = test_values(tokens * 3 * heads * head_dim, lens[0] as u64, 2.0);
            // Stale contents, as in a reused buffer: every element must be written.
            let mut got = vec![f32::NAN; tokens * heads * head_dim];
            attention(&qkv, d, &mut got);
            let worst = max_abs_diff(
                got.iter()
                    .zip(&naive(&qkv, d))
                    .map(|(&g, &w)| (g.into(), w.into())),
            );
            assert!(worst < 1e-5, "{d:?}: max abs diff {worst}");
        }
    }
}
