//! `out = bias (+ residual) + x · W` in f32 on AVX-512, against weights packed once at load
//! time: the default matmul of the encoder where the CPU has AVX-512 (gemm, candle's matmul
//! crate, is the fallback elsewhere).
//!
//! The classic register-blocked design: `W` is cut into panels of 32 columns stored k-major
//! (each k step is two contiguous zmm loads), and a micro-kernel keeps a 14 x 32 block of the
//! output in 28 zmm accumulators, broadcasting one `x` value per row per k step. A task is a
//! block of rows times a group of panels: the row block stays in L2 while the panels stream
//! through it.

use std::arch::x86_64::*;

use rayon::prelude::*;

use super::memory::filled;
use super::{SharedOut, Start};

/// Output columns per panel (two zmm registers).
const NR: usize = 32;
/// Output rows per micro-kernel call: 28 of the 32 zmm registers hold the accumulators, two
/// the weights of one depth, one the broadcast. (With 12 rows, 24 accumulators, the kernel
/// reached 85 % of the FMA peak on data in L1; with 14, 89 %.)
const MR: usize = 14;
/// Rows per task: their `x` rows (`MC * KC * 4` bytes) stay in L2 while panels pass.
const MC: usize = 240;
/// Depth of one pass: the `MR x KC` slice of `x` (14 KiB) stays in L1 while the panels of a
/// chunk stream past it from L2.
const KC: usize = 256;
/// Panels per chunk: `KC x NR x NC_PANELS` weights (512 KiB) stay in L2 for all the task's rows.
const NC_PANELS: usize = 16;
/// How many k steps ahead the kernel prefetches its weight panel (into L1).
const PREFETCH: usize = 16;
/// How many k steps ahead it also prefetches into L2 (12 KiB): short batches stream their
/// weights from memory, and the L1 distance alone left most of the memory latency exposed
/// (1 x 16 tokens, BERT-base: 22.9 -> 21.3 ms; 48 and 192 steps were slower).
const FAR_PREFETCH: usize = 96;
/// Below this many multiply-adds a task is not worth a rayon hop.
const MIN_TASK_WORK: usize = 1 << 20;

/// True when this CPU runs the kernel (checked once by std).
pub fn available() -> bool {
    is_x86_feature_detected!("avx512f")
}

/// One cache line of f32 values: panels are built of them so every zmm load is aligned
/// (a load split over two lines costs about twice as much).
#[derive(Clone, Copy, Debug)]
#[repr(C, align(64))]
struct Line([f32; 16]);

/// `W` `[k, n]` as column panels of [`NR`], each `k * NR` values, zero-padded past `n`.
#[derive(Debug)]
pub struct PackedWeights {
    lines: Vec<Line>,
    k: usize,
    n: usize,
}

impl PackedWeights {
    /// `w_t`: `[k, n]` row-major.
    pub fn pack(w_t: &[f32], k: usize, n: usize) -> Self {
        assert_eq!(w_t.len(), k * n, "weight size");
        let count = n.div_ceil(NR);
        let mut lines = filled(count * k * NR / 16, Line([0.0; 16]));
        for (p, panel) in lines.chunks_exact_mut(k * NR / 16).enumerate() {
            let (first, width) = (p * NR, NR.min(n - p * NR));
            for (kk, step) in panel.chunks_exact_mut(NR / 16).enumerate() {
                let src = &w_t[kk * n + first..kk * n + first + width];
                for (i, &v) in src.iter().enumerate() {
                    step[i / 16].0[i % 16] = v;
                }
            }
        }
        Self { lines, k, n }
    }

    pub fn k(&self) -> usize {
        self.k
    }

    pub fn n(&self) -> usize {
        self.n
    }

    /// Panel `p`, `k * NR` values.
    fn panel(&self, p: usize) -> &[f32] {
        let lines = &self.lines[p * self.k * NR / 16..(p + 1) * self.k * NR / 16];
        // SAFETY: `Line` is `repr(C)` around 16 f32 values, so the lines are contiguous f32s.
        unsafe { std::slice::from_raw_parts(lines.as_ptr().cast::<f32>(), lines.len() * 16) }
    }
}

/// `out[rows, n] = finish(start + x[rows, k] · W)`, all row-major; `finish` runs on every
/// finished piece of an output row while it is still in L1 (an activation in place, without
/// another pass over memory). The start values are added by the kernel's first pass over the
/// output, so `out`'s old contents are never read. Panics if the CPU lacks AVX-512 (callers
/// check [`available`]).
pub fn matmul_then(
    x: &[f32],
    rows: usize,
    w: &PackedWeights,
    start: Start,
    out: &mut [f32],
    finish: impl Fn(&mut [f32]) + Sync,
) {
    assert!(available(), "the AVX-512 kernel needs a CPU with AVX-512F");
    let (k, n) = (w.k, w.n);
    assert_eq!(x.len(), rows * k, "input size");
    assert_eq!(out.len(), rows * n, "output size");
    start.check(rows, n);
    if rows == 0 || n == 0 {
        return;
    }
    let panels = n.div_ceil(NR);
    let threads = rayon::current_num_threads();
    // Row blocks of at most MC rows, as many as a multiple of the threads so that every thread
    // gets the same share (5 blocks on 2 threads would leave one idle a fifth of the time).
    let calls = rows.div_ceil(MR);
    let mut row_blocks = rows.div_ceil(MC).min(calls);
    if row_blocks > 1 {
        row_blocks = row_blocks.next_multiple_of(threads).min(calls);
    }
    // Blocks of whole 14-row calls, their numbers differing by at most one (1024 rows: 12 or
    // 13 calls per block, a 2-row call in the last): equal blocks of 171 rows would each end
    // in a 1- to 3-row call, which runs at a fraction of the speed (too few accumulators to
    // cover the FMA latency), and blocks all rounded up (182) would leave the last one short
    // and the threads unbalanced.
    let block_rows =
        |b: usize| (b * calls / row_blocks * MR)..((b + 1) * calls / row_blocks * MR).min(rows);
    // Split the panels too when there are fewer row blocks than threads, as long as each task
    // keeps enough work.
    let per_panel = rows.div_ceil(row_blocks) * k * NR;
    let groups = (threads.div_ceil(row_blocks))
        .min(panels)
        .min((panels * per_panel / MIN_TASK_WORK).max(1));
    let group_size = panels.div_ceil(groups);
    let dst = SharedOut::new(out);
    // One micro-kernel call: output rows row..row+mr, panel p, the depth slice from `depth`.
    let call = |row: usize, mr: usize, p: usize, depth: usize| {
        let (kc, cols) = (KC.min(k - depth), NR.min(n - p * NR));
        let first = (depth == 0).then(|| Origin {
            bias: start.bias[p * NR..].as_ptr(),
            residual: start
                .residual
                .map_or(std::ptr::null(), |res| res[row * n + p * NR..].as_ptr()),
        });
        // SAFETY: rows row..row+mr of `x`, `out` and the residual exist (row + mr <= rows),
        // columns depth..depth+kc of those `x` rows too, the panel slice holds kc * NR values
        // from `depth` on, the bias `cols` from p*NR on, and columns p*NR..p*NR+cols of those
        // output rows belong to this task alone; `out` outlives the parallel loop.
        unsafe {
            micro(
                mr,
                x.as_ptr().add(row * k + depth),
                k,
                kc,
                w.panel(p)[depth * NR..].as_ptr(),
                dst.at(row * n + p * NR),
                n,
                cols,
                first,
            );
        }
        if depth + kc == k {
            for r in row..row + mr {
                // SAFETY: as above: this task's own, finished output columns.
                finish(unsafe { std::slice::from_raw_parts_mut(dst.at(r * n + p * NR), cols) });
            }
        }
    };
    let task = |t: usize| {
        let (block, group) = (t / groups, t % groups);
        let (first_row, block_end) = (block_rows(block).start, block_rows(block).end);
        let row_calls = || {
            (first_row..block_end)
                .step_by(MR)
                .map(|row| (row, MR.min(block_end - row)))
        };
        let group_panels = group * group_size..((group + 1) * group_size).min(panels);
        if block_end - first_row <= 2 * MR {
            // Few rows (short batches): bound by streaming the weights from memory, so read
            // them in storage order, panel after panel, each from depth 0 to k; `x` and the
            // output block stay in L1.
            for p in group_panels {
                for depth in (0..k).step_by(KC) {
                    for (row, mr) in row_calls() {
                        call(row, mr, p, depth);
                    }
                }
            }
            return;
        }
        // Otherwise a depth slice of a row call's `x` stays in L1 while the panels of a chunk
        // stream past it from L2.
        for depth in (0..k).step_by(KC) {
            for chunk in group_panels.clone().step_by(NC_PANELS) {
                for (row, mr) in row_calls() {
                    for p in chunk..(chunk + NC_PANELS).min(group_panels.end) {
                        call(row, mr, p, depth);
                    }
                }
            }
        }
    };
    let tasks = row_blocks * groups;
    if tasks == 1 {
        task(0);
    } else {
        (0..tasks).into_par_iter().for_each(task);
    }
}

/// Dispatches to the micro-kernel compiled for `mr` rows.
///
/// # Safety
/// As [`kernel`], and `1 <= mr <= MR`.
unsafe fn micro(
    mr: usize,
    a: *const f32,
    lda: usize,
    k: usize,
    b: *const f32,
    c: *mut f32,
    ldc: usize,
    cols: usize,
    first: Option<Origin>,
) {
    match mr {
        14 => kernel::<14>(a, lda, k, b, c, ldc, cols, first),
        13 => kernel::<13>(a, lda, k, b, c, ldc, cols, first),
        12 => kernel::<12>(a, lda, k, b, c, ldc, cols, first),
        11 => kernel::<11>(a, lda, k, b, c, ldc, cols, first),
        10 => kernel::<10>(a, lda, k, b, c, ldc, cols, first),
        9 => kernel::<9>(a, lda, k, b, c, ldc, cols, first),
        8 => kernel::<8>(a, lda, k, b, c, ldc, cols, first),
        7 => kernel::<7>(a, lda, k, b, c, ldc, cols, first),
        6 => kernel::<6>(a, lda, k, b, c, ldc, cols, first),
        5 => kernel::<5>(a, lda, k, b, c, ldc, cols, first),
        4 => kernel::<4>(a, lda, k, b, c, ldc, cols, first),
        3 => kernel::<3>(a, lda, k, b, c, ldc, cols, first),
        2 => kernel::<2>(a, lda, k, b, c, ldc, cols, first),
        1 => kernel::<1>(a, lda, k, b, c, ldc, cols, first),
        _ => unreachable!("micro-kernel rows {mr}"),
    }
}

/// Where the first pass over an output block starts from, at the block's first row and column.
#[derive(Clone, Copy)]
struct Origin {
    bias: *const f32,
    /// Null without a residual; rows `ldc` apart like the output's.
    residual: *const f32,
}

/// `c[R, cols] += a[R, k] · b[k, NR]` (only the first `cols` columns stored); with `first`, `c`
/// is not read: `c = bias + residual + a · b`.
///
/// # Safety
/// `a` points at `R` rows of `k` values (row stride `lda`), `b` at `k * NR` values aligned to 64
/// bytes, `c` (and `first`'s residual when not null) at `R` rows (stride `ldc`) with `cols <=
/// NR` writable (readable) values each, `first`'s bias at `cols` values; the CPU has AVX-512F.
#[target_feature(enable = "avx512f")]
unsafe fn kernel<const R: usize>(
    a: *const f32,
    lda: usize,
    k: usize,
    b: *const f32,
    c: *mut f32,
    ldc: usize,
    cols: usize,
    first: Option<Origin>,
) {
    // The output rows (or the residual's) are read once per call, after the k loop: fetch
    // them during it. (A first pass without a residual reads neither.)
    let read = first.map_or(c.cast_const(), |o| o.residual);
    if !read.is_null() {
        for r in 0..R {
            _mm_prefetch::<_MM_HINT_T0>(read.add(r * ldc).cast());
            _mm_prefetch::<_MM_HINT_T0>(read.add(r * ldc + 16).cast());
        }
    }
    let mut acc = [[_mm512_setzero_ps(); 2]; R];
    if R == 14 {
        // SAFETY: R == 14, so `acc` is that array type; the rest as this function's contract.
        k_loop_14(
            &mut *acc.as_mut_ptr().cast::<[[__m512; 2]; 14]>(),
            a,
            lda,
            k,
            b,
        );
    } else {
        k_loop(&mut acc, a, lda, k, b);
    }
    // Lane masks of the two halves for a panel cut short by n.
    let m0: __mmask16 = if cols >= 16 {
        0xffff
    } else {
        (1u16 << cols) - 1
    };
    let m1: __mmask16 = match cols {
        32.. => 0xffff,
        17..=31 => (1u16 << (cols - 16)) - 1,
        _ => 0,
    };
    let load = |p: *const f32| {
        [
            _mm512_maskz_loadu_ps(m0, p),
            _mm512_maskz_loadu_ps(m1, p.add(16)),
        ]
    };
    let first = first.map(|o| (o, load(o.bias)));
    for (r, acc) in acc.iter().enumerate() {
        let row = c.add(r * ldc);
        let base = match first {
            Some((o, b)) if !o.residual.is_null() => {
                let res = load(o.residual.add(r * ldc));
                [_mm512_add_ps(b[0], res[0]), _mm512_add_ps(b[1], res[1])]
            }
            Some((_, b)) => b,
            None => load(row),
        };
        _mm512_mask_storeu_ps(row, m0, _mm512_add_ps(base[0], acc[0]));
        _mm512_mask_storeu_ps(row.add(16), m1, _mm512_add_ps(base[1], acc[1]));
    }
}

/// `acc[r] += a[r, ..k] · b[..k, NR]` for every row: the micro-kernel's k loop.
///
/// # Safety
/// As [`kernel`].
#[target_feature(enable = "avx512f")]
unsafe fn k_loop<const R: usize>(
    acc: &mut [[__m512; 2]; R],
    a: *const f32,
    lda: usize,
    k: usize,
    b: *const f32,
) {
    for kk in 0..k {
        _mm_prefetch::<_MM_HINT_T0>(b.wrapping_add((kk + PREFETCH) * NR).cast());
        _mm_prefetch::<_MM_HINT_T0>(b.wrapping_add((kk + PREFETCH) * NR + 16).cast());
        _mm_prefetch::<_MM_HINT_T1>(b.wrapping_add((kk + FAR_PREFETCH) * NR).cast());
        _mm_prefetch::<_MM_HINT_T1>(b.wrapping_add((kk + FAR_PREFETCH) * NR + 16).cast());
        let b0 = _mm512_load_ps(b.add(kk * NR));
        let b1 = _mm512_load_ps(b.add(kk * NR + 16));
        for (r, acc) in acc.iter_mut().enumerate() {
            let av = _mm512_set1_ps(*a.add(r * lda + kk));
            acc[0] = _mm512_fmadd_ps(av, b0, acc[0]);
            acc[1] = _mm512_fmadd_ps(av, b1, acc[1]);
        }
    }
}

/// One row's broadcast (from `$addr + $da` bytes) and its two multiply-adds, for [`k_loop_14`].
macro_rules! row {
    ($bc:literal, $addr:literal, $da:literal, $z0:literal, $z1:literal) => {
        concat!(
            "vbroadcastss zmm",
            $bc,
            ", dword ptr [",
            $addr,
            " + ",
            $da,
            "]\n",
            "vfmadd231ps zmm",
            $z0,
            ", zmm28, zmm",
            $bc,
            "\n",
            "vfmadd231ps zmm",
            $z1,
            ", zmm29, zmm",
            $bc,
            "\n",
        )
    };
}

/// One k step of [`k_loop_14`], `$da` bytes into the rows of `a` and `$db` into the panel.
/// The prefetches are spread through it: all four at the top made the memory-bound 1 x 16
/// case 10 % slower.
macro_rules! step {
    ($da:literal, $db:literal) => {
        concat!(
            "vmovaps zmm28, [{b} + ",
            $db,
            "]\n",
            "vmovaps zmm29, [{b} + ",
            $db,
            " + 64]\n",
            row!("30", "{a0}", $da, "0", "1"),
            row!("31", "{a0} + {s}", $da, "2", "3"),
            row!("30", "{a0} + {s}*2", $da, "4", "5"),
            row!("31", "{a3}", $da, "6", "7"),
            "prefetcht0 [{b} + {near} + ",
            $db,
            "]\n",
            row!("30", "{a0} + {s}*4", $da, "8", "9"),
            row!("31", "{a3} + {s}*2", $da, "10", "11"),
            row!("30", "{a6}", $da, "12", "13"),
            row!("31", "{a3} + {s}*4", $da, "14", "15"),
            "prefetcht0 [{b} + {near} + ",
            $db,
            " + 64]\n",
            row!("30", "{a0} + {s}*8", $da, "16", "17"),
            row!("31", "{a9}", $da, "18", "19"),
            "prefetcht1 [{b} + {far} + ",
            $db,
            "]\n",
            row!("30", "{a6} + {s}*4", $da, "20", "21"),
            row!("31", "{a3} + {s}*8", $da, "22", "23"),
            "prefetcht1 [{b} + {far} + ",
            $db,
            " + 64]\n",
            row!("30", "{a0} + {s3}*4", $da, "24", "25"),
            row!("31", "{a9} + {s}*4", $da, "26", "27"),
        )
    };
}

/// [`k_loop`] for 14 rows in assembly. LLVM recomputes the 14 row addresses of `a` at every
/// step (a chain of 14 dependent adds per 28 FMAs, on the ALUs the FMAs need); here four row
/// pointers and two strides reach all 14 rows through addressing modes, and two steps share
/// one round of pointer updates: a step is 28 FMAs, 16 loads, 4 prefetches and 3.5 integer
/// ops.
///
/// # Safety
/// As [`kernel`] with `R` = 14.
#[target_feature(enable = "avx512f")]
unsafe fn k_loop_14(
    acc: &mut [[__m512; 2]; 14],
    a: *const f32,
    lda: usize,
    k: usize,
    b: *const f32,
) {
    let s = lda * size_of::<f32>();
    std::arch::asm!(
        "test {pairs}, {pairs}",
        "jz 3f",
        "2:",
        step!("0", "0"),
        step!("4", "128"),
        "add {a0}, 8",
        "add {a3}, 8",
        "add {a6}, 8",
        "add {a9}, 8",
        "add {b}, 256",
        "dec {pairs}",
        "jnz 2b",
        "3:",
        "test {odd}, {odd}",
        "jz 4f",
        step!("0", "0"),
        "4:",
        a0 = inout(reg) a => _,
        a3 = inout(reg) a.add(3 * lda) => _,
        a6 = inout(reg) a.add(6 * lda) => _,
        a9 = inout(reg) a.add(9 * lda) => _,
        s = in(reg) s,
        s3 = in(reg) 3 * s,
        b = inout(reg) b => _,
        pairs = inout(reg) k / 2 => _,
        odd = in(reg) k % 2,
        near = const PREFETCH * NR * size_of::<f32>(),
        far = const FAR_PREFETCH * NR * size_of::<f32>(),
        inout("zmm0") acc[0][0],
        inout("zmm1") acc[0][1],
        inout("zmm2") acc[1][0],
        inout("zmm3") acc[1][1],
        inout("zmm4") acc[2][0],
        inout("zmm5") acc[2][1],
        inout("zmm6") acc[3][0],
        inout("zmm7") acc[3][1],
        inout("zmm8") acc[4][0],
        inout("zmm9") acc[4][1],
        inout("zmm10") acc[5][0],
        inout("zmm11") acc[5][1],
        inout("zmm12") acc[6][0],
        inout("zmm13") acc[6][1],
        inout("zmm14") acc[7][0],
        inout("zmm15") acc[7][1],
        inout("zmm16") acc[8][0],
        inout("zmm17") acc[8][1],
        inout("zmm18") acc[9][0],
        inout("zmm19") acc[9][1],
        inout("zmm20") acc[10][0],
        inout("zmm21") acc[10][1],
        inout("zmm22") acc[11][0],
        inout("zmm23") acc[11][1],
        inout("zmm24") acc[12][0],
        inout("zmm25") acc[12][1],
        inout("zmm26") acc[13][0],
        inout("zmm27") acc[13][1],
        out("zmm28") _,
        out("zmm29") _,
        out("zmm30") _,
        out("zmm31") _,
        options(nostack, readonly),
    );
}

#[cfg(test)]
mod tests {
    use super::super::{max_abs_diff, test_values};
    use super::*;

    #[test]
    fn starts_from_bias_and_residual_on_odd_shapes() {
        if !available() {
            eprintln!("skipping: this CPU has no AVX-512F");
            return;
        }
        for (rows, k, n) in [
            (1, 1, 1),
            (1, 7, 3),
            (5, 13, 17),
            (14, 5, 32),
            (13, 70, 65),
            (33, 384, 100),
            (250, 64, 48),
            (500, 96, 1100),
        ] {
            let (x, w) = (test_values(rows * k, 1, 0.5), test_values(k * n, 2, 0.5));
            let (bias, residual) = (test_values(n, 3, 0.5), test_values(rows * n, 4, 0.5));
            for residual in [None, Some(&residual[..])] {
                // Stale contents, as in a reused buffer: must not be read.
                let mut got = vec![f32::NAN; rows * n];
                let start = Start {
                    bias: &bias,
                    residual,
                };
                let packed = PackedWeights::pack(&w, k, n);
                matmul_then(&x, rows, &packed, start, &mut got, |_| {});
                let worst = max_abs_diff((0..rows * n).map(|i| {
                    let (r, c) = (i / n, i % n);
                    let want = bias[c] as f64
                        + residual.map_or(0.0, |res| res[i] as f64)
                        + (0..k)
                            .map(|j| x[r * k + j] as f64 * w[j * n + c] as f64)
                            .sum::<f64>();
                    (got[i] as f64, want)
                }));
                let with = if residual.is_some() {
                    "with"
                } else {
                    "without"
                };
                assert!(
                    worst < 1e-4,
                    "{rows}x{k}x{n} {with} residual: max abs diff {worst}"
                );
            }
        }
    }
}
