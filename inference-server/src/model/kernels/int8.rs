//! `--dtype int8`: `out = start + x · W` with both sides quantised to 8 bits and the products
//! summed exactly in i32.
//!
//! - **Weights**, once at load time: per output column, `w ≈ q · scale` with `|q| <= 127`. A
//!   bf16 copy, row-major, serves the activations' outliers (below).
//! - **Activations**, on every call: per row, asymmetric over the row's range (with 0 in it),
//!   `x ≈ (q - zero) · scale` with `0 <= q <= 127`. Seven bits keep AVX2's `vpmaddubsw`, which
//!   adds two u8 x i8 products into a saturating i16, exact (2 · 127 · 127 = 32258 < 32767), so
//!   VNNI and AVX2 give bit-identical results. Asymmetric because the inputs of the second
//!   feed-forward layer (after GELU) hardly go below zero: a symmetric range would waste half
//!   the levels.
//! - **Outliers**: values beyond [`OUTLIER_RMS`] times the row's RMS (BERT's LayerNorm outputs
//!   and GELU outputs have a few large ones per token) would stretch the row's range and leave
//!   the other values a few levels. They are taken out of the quantised row (their level is the
//!   zero point) and added in f32 against the bf16 weights: on real MiniLM this took the lowest
//!   cosine to f32 over the fixture texts from 0.9935 to 0.9990 (see docs/benchmarks.md).
//! - **Dequantising**: `out = (Σ q_x q_w - zero · Σ q_w) · scale_x · scale_w + Σ_outliers x · w
//!   + bias (+ residual)`, where `Σ q_w` per column is computed at load time.
//!
//! The micro-kernels ([`super::int8_x86`]: AVX-512 VNNI and AVX-VNNI `vpdpbusd`, AVX2
//! `vpmaddubsw` + `vpmaddwd`) read groups of 4 consecutive k values per i32 lane, so the
//! weights are packed as panels of [`NR`] columns whose every 4-deep k step is one 64-byte line.
//! They leave an i32 tile of sums, and the dequantisation above runs once per output value in
//! this module.

use std::ops::Range;

use half::bf16;
use rayon::prelude::*;

use super::memory::{filled, resize_for_overwrite};
use super::panels::Split;
use super::simd::{Cap, Simd};
use super::{SharedOut, Start};

/// Output columns per panel: 16 i32 lanes (one zmm, two ymm).
pub(crate) const NR: usize = 16;
/// k values per i32 lane.
pub(crate) const GROUP: usize = 4;
/// The largest |quantised weight| and the largest activation level (see the module's
/// documentation).
const WEIGHT_LEVEL: f32 = 127.0;
const ACTIVATION_LEVEL: f32 = 127.0;
/// Activations beyond this many times their row's RMS are outliers, computed in f32 (2.5 on real
/// MiniLM: 3 left the empty text at cosine 0.9988 to f32; a few values per row are above it).
const OUTLIER_RMS: f32 = 2.5;
/// Columns of a micro-kernel's tile: the widest call (two panels).
pub(crate) const TILE_COLS: usize = 2 * NR;
/// Rows of a micro-kernel's tile: the tallest call.
pub(crate) const TILE_ROWS: usize = 12;
/// Rows per task at most: their quantised `x` (96 x 3072 bytes for the widest layer) stays in
/// L2 while the weight panels pass.
const BLOCK_ROWS: usize = 96;
/// Below this many values a row quantisation is not worth a rayon hop.
const MIN_PARALLEL_VALUES: usize = 1 << 16;

/// One 4-deep k step of a panel: [`NR`] lanes of [`GROUP`] weights, one aligned cache line.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
pub(crate) struct Line(pub(crate) [i8; NR * GROUP]);

/// `W` `[k, n]` quantised per column, packed as panels of [`NR`] columns (zero past `n` and past
/// `k`), an even number of them so that two-panel calls never read past the end.
pub struct QuantWeights {
    lines: Vec<Line>,
    scale: Vec<f32>,
    /// `Σ_k q` per column: what the activations' zero point adds to each sum.
    sums: Vec<i32>,
    /// `W` in bf16, `[k, n]` row-major: the rows that outliers multiply.
    exact: Vec<bf16>,
    k: usize,
    n: usize,
}

impl QuantWeights {
    /// `w_t`: `[k, n]` row-major.
    pub fn pack(w_t: &[f32], k: usize, n: usize) -> Self {
        assert_eq!(w_t.len(), k * n, "weight size");
        // Row by row (the storage order), not column by column.
        let mut max = vec![0f32; n];
        for row in w_t.chunks_exact(n.max(1)) {
            for (m, v) in max.iter_mut().zip(row) {
                *m = m.max(v.abs());
            }
        }
        let scale: Vec<f32> = max
            .iter()
            .map(|&m| {
                if m > 0.0 && m.is_finite() {
                    m / WEIGHT_LEVEL
                } else {
                    1.0
                }
            })
            .collect();
        let steps = k.div_ceil(GROUP);
        let panels = n.div_ceil(NR).next_multiple_of(2);
        let mut lines = filled(panels * steps, Line([0; NR * GROUP]));
        let mut sums = vec![0i32; n];
        for (kk, row) in w_t.chunks_exact(n.max(1)).enumerate() {
            for (c, (&v, &s)) in row.iter().zip(&scale).enumerate() {
                let q = (v / s).round_ties_even().clamp(-WEIGHT_LEVEL, WEIGHT_LEVEL) as i8;
                lines[(c / NR) * steps + kk / GROUP].0[(c % NR) * GROUP + kk % GROUP] = q;
                sums[c] += i32::from(q);
            }
        }
        Self {
            lines,
            scale,
            sums,
            exact: w_t.iter().map(|&v| bf16::from_f32(v)).collect(),
            k,
            n,
        }
    }

    pub fn k(&self) -> usize {
        self.k
    }

    pub fn n(&self) -> usize {
        self.n
    }

    /// 4-deep k steps per panel.
    fn steps(&self) -> usize {
        self.k.div_ceil(GROUP)
    }
}

/// `x` `[rows, k]` quantised per row: `x ≈ (q - zero) · scale` plus the row's outliers, each
/// row padded with zeros to whole groups of [`GROUP`] (the weights are zero there).
#[derive(Default)]
pub struct QuantRows {
    bytes: Vec<u8>,
    rows: Vec<RowQuant>,
    stride: usize,
}

/// How one row of `x` was quantised.
struct RowQuant {
    scale: f32,
    zero: i32,
    /// Column and value.
    outliers: Vec<(u32, f32)>,
}

impl QuantRows {
    /// Quantises `x` into `self`, reusing its buffers.
    pub fn quantize(&mut self, x: &[f32], rows: usize, k: usize) {
        assert_eq!(x.len(), rows * k, "input size");
        self.stride = k.div_ceil(GROUP) * GROUP;
        resize_for_overwrite(&mut self.bytes, rows * self.stride);
        let simd = Simd::best();
        let (stride, k1) = (self.stride.max(1), k.max(1));
        let row = |(q, x): (&mut [u8], &[f32])| quantize_row(simd, x, q);
        if rows * k >= MIN_PARALLEL_VALUES {
            let pairs = self
                .bytes
                .par_chunks_exact_mut(stride)
                .zip(x.par_chunks_exact(k1));
            pairs.map(row).collect_into_vec(&mut self.rows);
        } else {
            let pairs = self.bytes.chunks_exact_mut(stride).zip(x.chunks_exact(k1));
            self.rows.clear();
            self.rows.extend(pairs.map(row));
        }
    }
}

/// `q[..x.len()]` = `x` as levels over the row's range with 0 in it, outliers at the zero
/// point, `q`'s rest 0.
fn quantize_row(simd: Simd, x: &[f32], q: &mut [u8]) -> RowQuant {
    let mut stats = [0f32; 3];
    row_stats(simd, x, &mut stats);
    let [sum_squares, ..] = stats;
    let limit = OUTLIER_RMS * (sum_squares / x.len().max(1) as f32).sqrt();
    let [_, lo, hi] = stats;
    let outliers: Vec<(u32, f32)> = match limit.is_finite() && lo.abs().max(hi.abs()) > limit {
        true => (0..x.len() as u32)
            .map(|j| (j, x[j as usize]))
            .filter(|(_, v)| v.abs() > limit)
            .collect(),
        false => Vec::new(),
    };
    if !outliers.is_empty() {
        row_range_within(simd, x, limit, &mut stats);
    }
    let [_, lo, hi] = stats;
    let (lo, hi) = match limit.is_finite() && lo.is_finite() && hi.is_finite() {
        true => (lo.min(0.0), hi.max(0.0)),
        false => (0.0, 0.0),
    };
    let scale = if hi > lo {
        (hi - lo) / ACTIVATION_LEVEL
    } else {
        1.0
    };
    let zero = (-lo / scale).round_ties_even().clamp(0.0, ACTIVATION_LEVEL);
    let (levels_of_x, pad) = q.split_at_mut(x.len());
    levels(simd, x, levels_of_x, 1.0 / scale, zero);
    for &(j, _) in &outliers {
        levels_of_x[j as usize] = zero as u8;
    }
    pad.fill(0);
    RowQuant {
        scale,
        zero: zero as i32,
        outliers,
    }
}

/// Lanes of the reductions below: independent partial results, so that the compiler may keep
/// them in vector registers (a single f32 accumulator is a sequential chain it may not reorder).
const LANES: usize = 16;

super::simd::simd_builds! {
    /// `stats` = `[Σ x², min, max]` of `x` (the sum NaN where `x` holds a NaN).
    fn row_stats(x: &[f32], stats: &mut [f32; 3]) => row_stats_generic
}

#[inline(always)]
fn row_stats_generic(x: &[f32], stats: &mut [f32; 3]) {
    let (mut squares, mut lo, mut hi) = ([0f32; LANES], [0f32; LANES], [0f32; LANES]);
    let chunks = x.chunks_exact(LANES);
    let tail = chunks.remainder();
    for chunk in chunks {
        for i in 0..LANES {
            squares[i] += chunk[i] * chunk[i];
            lo[i] = lo[i].min(chunk[i]);
            hi[i] = hi[i].max(chunk[i]);
        }
    }
    for (i, &v) in tail.iter().enumerate() {
        squares[i] += v * v;
        lo[i] = lo[i].min(v);
        hi[i] = hi[i].max(v);
    }
    let fold =
        |v: &[f32; LANES], f: fn(f32, f32) -> f32| v.iter().copied().reduce(f).unwrap_or(0.0);
    *stats = [
        fold(&squares, |a, b| a + b),
        fold(&lo, f32::min),
        fold(&hi, f32::max),
    ];
}

super::simd::simd_builds! {
    /// `stats[1..]` = `[min, max]` of the values of `x` within `±limit`, and 0.
    fn row_range_within(x: &[f32], limit: f32, stats: &mut [f32; 3]) => row_range_within_generic
}

#[inline(always)]
fn row_range_within_generic(x: &[f32], limit: f32, stats: &mut [f32; 3]) {
    let (mut lo, mut hi) = ([0f32; LANES], [0f32; LANES]);
    let mut chunks = x.chunks_exact(LANES);
    for chunk in &mut chunks {
        for ((&v, lo), hi) in chunk.iter().zip(&mut lo).zip(&mut hi) {
            let v = if v.abs() > limit { 0.0 } else { v };
            *lo = lo.min(v);
            *hi = hi.max(v);
        }
    }
    for ((&v, lo), hi) in chunks.remainder().iter().zip(&mut lo).zip(&mut hi) {
        let v = if v.abs() > limit { 0.0 } else { v };
        *lo = lo.min(v);
        *hi = hi.max(v);
    }
    stats[1] = lo.iter().copied().fold(0.0, f32::min);
    stats[2] = hi.iter().copied().fold(0.0, f32::max);
}

super::simd::simd_builds! {
    /// `q = clamp(round(x · inv_scale) + zero, 0, ACTIVATION_LEVEL)`.
    fn levels(x: &[f32], q: &mut [u8], inv_scale: f32, zero: f32) => levels_generic
}

#[inline(always)]
#[allow(clippy::manual_clamp)] // clamp keeps NaN; see below
fn levels_generic(x: &[f32], q: &mut [u8], inv_scale: f32, zero: f32) {
    for (q, &v) in q.iter_mut().zip(x) {
        // max/min, unlike clamp, take NaN to a bound, so the conversion always sees a value
        // in 0..=ACTIVATION_LEVEL (and needs no saturating fix-ups).
        let level = ((v * inv_scale).round_ties_even() + zero)
            .max(0.0)
            .min(ACTIVATION_LEVEL);
        // SAFETY: `level` is finite and within u8.
        *q = unsafe { level.to_int_unchecked::<u8>() };
    }
}

/// One micro-kernel call: `tile[r][c] = Σ_g Σ_i a[r][4g + i] · panel[g][c][i]` for the call's
/// rows and the columns of its panels (16 per panel).
///
/// Valid when `a` points at the call's rows of `4 · steps` bytes (row stride `lda`), `b` at the
/// first of the kernel's panels, each `steps` lines, `panel_lines` lines apart, and `tile` at
/// [`TILE_ROWS`] rows of [`TILE_COLS`] writable i32 values.
#[derive(Clone, Copy)]
pub(crate) struct Call {
    pub a: *const u8,
    pub lda: usize,
    pub steps: usize,
    pub b: *const Line,
    pub panel_lines: usize,
    pub tile: *mut [i32; TILE_COLS],
}

/// An int8 matmul kernel: its micro-kernel and blocking.
pub struct Kernel {
    pub name: &'static str,
    micro: unsafe fn(rows: usize, call: Call),
    /// Rows per call, at most [`TILE_ROWS`].
    mr: usize,
    /// Panels per call (1 or 2).
    panels: usize,
    /// The lowest `NLU_KERNEL` cap it runs under.
    cap: Cap,
    /// Whether this CPU runs it.
    runs: fn() -> bool,
}

impl Kernel {
    /// # Safety
    /// `micro` runs on every CPU where `runs` says true, and does what [`Call`] says for `1..=mr`
    /// rows and `panels` panels.
    pub(crate) const unsafe fn new(
        name: &'static str,
        micro: unsafe fn(rows: usize, call: Call),
        mr: usize,
        panels: usize,
        cap: Cap,
        runs: fn() -> bool,
    ) -> Self {
        assert!(mr <= TILE_ROWS && panels * NR <= TILE_COLS);
        Self {
            name,
            micro,
            mr,
            panels,
            cap,
            runs,
        }
    }

    /// Every int8 kernel this CPU runs, fastest first (the tests run each).
    pub fn supported() -> impl Iterator<Item = &'static Kernel> {
        #[cfg(target_arch = "x86_64")]
        let all: &'static [&Kernel] = &super::int8_x86::KERNELS;
        #[cfg(not(target_arch = "x86_64"))]
        let all: &'static [&Kernel] = &[];
        all.iter().copied().filter(|k| (k.runs)())
    }

    /// The kernel `--dtype int8` runs: the fastest this CPU has within `NLU_KERNEL`'s cap
    /// (`avx-vnni` leaves out AVX-512 VNNI, `avx2` both VNNIs, `gemm` every int8 kernel); none
    /// on CPUs without AVX2 + FMA.
    pub fn best() -> Option<&'static Kernel> {
        let cap = super::simd::cap();
        Self::supported().find(|k| k.cap <= cap)
    }

    /// `out[rows, n] = finish(start + x · W)`, `x` quantised by [`QuantRows::quantize`] from
    /// `[rows, W.k]`; `finish` runs on each finished piece of an output row. `out`'s old contents
    /// are not read. Panics if this CPU does not run the kernel.
    pub fn matmul_then(
        &self,
        x: &QuantRows,
        rows: usize,
        w: &QuantWeights,
        start: Start,
        out: &mut [f32],
        finish: impl Fn(&mut [f32]) + Sync,
    ) {
        assert!(
            (self.runs)(),
            "the {} kernel needs a CPU with it",
            self.name
        );
        let (k, n, steps) = (w.k, w.n, w.steps());
        assert_eq!(x.rows.len(), rows, "quantised rows");
        assert_eq!(x.stride, steps * GROUP, "quantised row length");
        assert_eq!(out.len(), rows * n, "output size");
        start.check(rows, n);
        if rows == 0 || n == 0 {
            return;
        }
        let width = self.panels * NR;
        let split = Split::new(rows, self.mr, BLOCK_ROWS, n.div_ceil(width), k * width);
        let dst = SharedOut::new(out);
        let simd = Simd::best();
        let task = |t: usize| {
            let (block, col_blocks) = split.task(t);
            let columns = col_blocks.start * width..(col_blocks.end * width).min(n);
            // SAFETY: the columns `columns` of the rows `block` belong to this task alone (its
            // rows and column blocks are its own); `out` outlives the tasks.
            let out_of = |r: usize, cols: Range<usize>| unsafe {
                std::slice::from_raw_parts_mut(dst.at(r * n + cols.start), cols.len())
            };
            let mut tile = [[0i32; TILE_COLS]; TILE_ROWS];
            for cb in col_blocks {
                let (col, cols) = (cb * width, width.min(n - cb * width));
                for (row, mr) in split.calls(block.clone()) {
                    // SAFETY: a valid call: rows row..row+mr of the quantised `x` exist, each
                    // `stride` = 4 · steps bytes; panels cb·panels.. exist (an even count, so
                    // a two-panel call's second one too), each `steps` lines; the tile is
                    // TILE_ROWS x TILE_COLS. The CPU runs the kernel (asserted above; `new`'s
                    // contract).
                    unsafe {
                        (self.micro)(
                            mr,
                            Call {
                                a: x.bytes.as_ptr().add(row * x.stride),
                                lda: x.stride,
                                steps,
                                b: w.lines.as_ptr().add(cb * self.panels * steps),
                                panel_lines: steps,
                                tile: tile.as_mut_ptr(),
                            },
                        );
                    }
                    for (r, sums) in (row..row + mr).zip(&tile) {
                        let o = out_of(r, col..col + cols);
                        dequantize(simd, x, r, w, col, sums, start, o);
                        if x.rows[r].outliers.is_empty() {
                            finish(o);
                        }
                    }
                }
            }
            // The outliers, over all the task's columns at once (per column block, the loop
            // overhead cost more than the products), then what waited for them.
            for r in block {
                if !x.rows[r].outliers.is_empty() {
                    let o = out_of(r, columns.clone());
                    for &(j, v) in &x.rows[r].outliers {
                        let row = &w.exact[j as usize * n + columns.start..][..columns.len()];
                        add_scaled_row(simd, o, row, v);
                    }
                    finish(o);
                }
            }
        };
        split.run(task);
    }
}

/// `o = (sums - zero · Σ q_w) · scale_x · scale_w + bias (+ residual)` for row `r` of `x` and
/// the columns from `col` of `w` (the outliers come later).
#[allow(clippy::too_many_arguments)]
fn dequantize(
    simd: Simd,
    x: &QuantRows,
    r: usize,
    w: &QuantWeights,
    col: usize,
    sums: &[i32],
    start: Start,
    o: &mut [f32],
) {
    let (n, cols) = (w.n, o.len());
    let columns = col..col + cols;
    let row = Row {
        zero: x.rows[r].zero,
        scale: x.rows[r].scale,
        sums: &sums[..cols],
        w_sums: &w.sums[columns.clone()],
        w_scale: &w.scale[columns.clone()],
        bias: &start.bias[columns.clone()],
    };
    match start.residual {
        Some(res) => dequantize_with(simd, row, &res[r * n + col..][..cols], o),
        None => dequantize_with(simd, row, &[], o),
    }
}

/// What one output row's dequantisation reads, each slice as long as the output.
#[derive(Clone, Copy)]
struct Row<'a> {
    zero: i32,
    scale: f32,
    sums: &'a [i32],
    w_sums: &'a [i32],
    w_scale: &'a [f32],
    bias: &'a [f32],
}

super::simd::simd_builds! {
    /// `o = (sums - zero · w_sums) · scale · w_scale + bias (+ residual, unless empty)`.
    fn dequantize_with(row: Row, residual: &[f32], o: &mut [f32]) => dequantize_generic
}

#[inline(always)]
fn dequantize_generic(row: Row, residual: &[f32], o: &mut [f32]) {
    let (zero, scale) = (row.zero, row.scale);
    let columns = row
        .sums
        .iter()
        .zip(row.w_sums)
        .zip(row.w_scale)
        .zip(row.bias);
    let values = columns.map(|(((&s, &ws), &sc), &b)| (s - zero * ws) as f32 * (scale * sc) + b);
    // Two loops, so that each vectorises without a per-value branch.
    if residual.is_empty() {
        for (o, v) in o.iter_mut().zip(values) {
            *o = v;
        }
    } else {
        for ((o, v), &res) in o.iter_mut().zip(values).zip(residual) {
            *o = v + res;
        }
    }
}

super::simd::simd_builds! {
    /// `o += v · w`, `w` in bf16.
    fn add_scaled_row(o: &mut [f32], w: &[bf16], v: f32) => add_scaled_row_generic
}

#[inline(always)]
fn add_scaled_row_generic(o: &mut [f32], w: &[bf16], v: f32) {
    for (o, w) in o.iter_mut().zip(w) {
        // bf16 is f32's upper half (the weights hold no NaN to quiet).
        *o += v * f32::from_bits(u32::from(w.to_bits()) << 16);
    }
}

/// Whether this CPU runs `--dtype int8` (an int8 kernel within `NLU_KERNEL`'s cap).
pub fn available() -> bool {
    Kernel::best().is_some()
}

thread_local! {
    /// The quantised input of the last call on this thread, its buffers reused (a fresh one
    /// per layer would page-fault on every forward).
    static ROWS: std::cell::RefCell<QuantRows> = std::cell::RefCell::default();
}

/// `out = finish(start + x · W)` on the [`Kernel::best`] kernel. Panics where there is none
/// ([`available`] is the check).
pub fn matmul_then(
    x: &[f32],
    rows: usize,
    w: &QuantWeights,
    start: Start,
    out: &mut [f32],
    finish: impl Fn(&mut [f32]) + Sync,
) {
    let kernel = Kernel::best().expect("--dtype int8 needs a CPU with AVX2 and FMA");
    ROWS.with_borrow_mut(|q| {
        q.quantize(x, rows, w.k);
        kernel.matmul_then(q, rows, w, start, out, finish);
    });
}

#[cfg(test)]
mod tests {
    use super::super::{max_abs_diff, test_values};
    use super::*;

    /// The quantised values back as f32, in f64: `(q - zero) · scale` per row, the outliers'
    /// places 0.
    fn dequantized_rows(q: &QuantRows, rows: usize, k: usize) -> Vec<f64> {
        (0..rows * k)
            .map(|i| {
                let (r, c) = (i / k, i % k);
                (i32::from(q.bytes[r * q.stride + c]) - q.rows[r].zero) as f64
                    * q.rows[r].scale as f64
            })
            .collect()
    }

    /// `test_values` with a spike of `spike` every 29th value: outliers.
    fn spiky(n: usize, seed: u64, amplitude: f32, spike: f32) -> Vec<f32> {
        let mut x = test_values(n, seed, amplitude);
        x.iter_mut()
            .step_by(29)
            .for_each(|v| *v = spike.copysign(*v));
        x
    }

    /// The packed weights back as `[k, n]` f64.
    fn dequantized_weights(w: &QuantWeights) -> Vec<f64> {
        let (k, n, steps) = (w.k, w.n, w.steps());
        (0..k * n)
            .map(|i| {
                let (kk, c) = (i / n, i % n);
                let line = &w.lines[(c / NR) * steps + kk / GROUP];
                line.0[(c % NR) * GROUP + kk % GROUP] as f64 * w.scale[c] as f64
            })
            .collect()
    }

    #[test]
    fn rows_are_quantised_within_half_a_level_with_zero_exact() {
        let (rows, k) = (5, 37);
        let mut x = spiky(rows * k, 1, 3.0, 40.0);
        x[..k].iter_mut().for_each(|v| *v = v.abs() + 0.5); // a row with no negative value
        x[k..2 * k].fill(0.0); // and one of zeros
        x[2 * k + 3] = 0.0;
        let mut q = QuantRows::default();
        q.quantize(&x, rows, k);
        assert_eq!(q.stride, 40);
        let back = dequantized_rows(&q, rows, k);
        for r in 0..rows {
            let half = q.rows[r].scale as f64 / 2.0 + 1e-6;
            // The spikes, exactly, and nothing else.
            let spikes: Vec<(u32, f32)> = (0..k)
                .filter(|c| x[r * k + c].abs() > 30.0)
                .map(|c| (c as u32, x[r * k + c]))
                .collect();
            assert_eq!(q.rows[r].outliers, spikes, "row {r}");
            for c in 0..k {
                let i = r * k + c;
                if x[i].abs() > 30.0 {
                    assert_eq!(back[i], 0.0, "an outlier's place is the zero point");
                    continue;
                }
                assert!(
                    (back[i] - x[i] as f64).abs() <= half,
                    "row {r} col {c}: {} vs {}",
                    back[i],
                    x[i]
                );
            }
            assert!(q.bytes[r * q.stride + k..(r + 1) * q.stride]
                .iter()
                .all(|&b| b == 0));
        }
        assert_eq!(back[2 * k + 3], 0.0, "zero is a level");
        assert!(back[k..2 * k].iter().all(|&v| v == 0.0));
        // A positive row uses the whole range from 0: its largest value is the top level.
        assert_eq!(q.rows[0].zero, 0);
        assert_eq!(q.bytes[..k].iter().max(), Some(&(ACTIVATION_LEVEL as u8)));
    }

    #[test]
    fn weights_are_quantised_per_column_within_half_a_level() {
        let (k, n) = (13, 21);
        let w = test_values(k * n, 2, 0.5);
        let packed = QuantWeights::pack(&w, k, n);
        let back = dequantized_weights(&packed);
        for (i, (&got, &want)) in back.iter().zip(&w).enumerate() {
            let half = packed.scale[i % n] as f64 / 2.0 + 1e-9;
            assert!((got - want as f64).abs() <= half, "weight {i}");
        }
        assert_eq!(
            packed.lines.len(),
            2 * k.div_ceil(GROUP),
            "two panels (an even count)"
        );
    }

    /// Runs every int8 kernel this CPU has on `x` `[rows, k]` and `w` `[k, n]`, with and without
    /// a residual, against the definition on the quantised values in f64 (the sums are exact, so
    /// only the f32 dequantisation differs), and checks that all kernels give the same bits.
    fn check_kernels(x: &[f32], w: &[f32], rows: usize, k: usize, n: usize) {
        let (bias, residual) = (test_values(n, 3, 0.5), test_values(rows * n, 4, 0.5));
        let mut q = QuantRows::default();
        q.quantize(x, rows, k);
        let packed = QuantWeights::pack(w, k, n);
        let (xq, wq) = (dequantized_rows(&q, rows, k), dequantized_weights(&packed));
        for residual in [None, Some(&residual[..])] {
            let mut first: Option<(&str, Vec<f32>)> = None;
            for kernel in Kernel::supported() {
                // Stale contents, as in a reused buffer: must not be read.
                let mut got = vec![f32::NAN; rows * n];
                let start = Start {
                    bias: &bias,
                    residual,
                };
                // An affine `finish`: applied twice, or before the outliers are in, it shows.
                let finish = |o: &mut [f32]| o.iter_mut().for_each(|v| *v = 2.0 * *v + 1.0);
                kernel.matmul_then(&q, rows, &packed, start, &mut got, finish);
                let worst = max_abs_diff((0..rows * n).map(|i| {
                    let (r, c) = (i / n, i % n);
                    let outliers = q.rows[r]
                        .outliers
                        .iter()
                        .map(|&(j, v)| v as f64 * bf16::from_f32(w[j as usize * n + c]).to_f64());
                    let want = bias[c] as f64
                        + residual.map_or(0.0, |res| res[i] as f64)
                        + (0..k).map(|j| xq[r * k + j] * wq[j * n + c]).sum::<f64>()
                        + outliers.sum::<f64>();
                    (got[i] as f64, 2.0 * want + 1.0)
                }));
                let tolerance = 1e-6 * (k as f64).max(100.0);
                assert!(
                    worst < tolerance,
                    "{} {rows}x{k}x{n} residual {}: max abs diff {worst}",
                    kernel.name,
                    residual.is_some()
                );
                // Same sums, same dequantisation: bit-identical whatever the kernel.
                match &first {
                    None => first = Some((kernel.name, got)),
                    Some((name, bits)) => assert!(
                        bits.iter()
                            .zip(&got)
                            .all(|(a, b)| a.to_bits() == b.to_bits()),
                        "{name} and {} differ",
                        kernel.name
                    ),
                }
            }
        }
    }

    /// Shapes that cut calls, panels, column blocks and groups of 4 short.
    #[test]
    fn kernels_compute_the_quantised_product_exactly() {
        for (rows, k, n) in [
            (1, 1, 1),
            (1, 7, 3),
            (5, 13, 17),
            (12, 9, 32),
            (13, 70, 65),
            (33, 384, 100),
            (250, 64, 48),
            (97, 300, 1100),
        ] {
            let (x, w) = (spiky(rows * k, 1, 2.0, 30.0), test_values(k * n, 2, 0.5));
            check_kernels(&x, &w, rows, k, n);
        }
    }

    /// The extremes `vpmaddubsw` sees: activation levels of 127 against weights of ±127, whose
    /// pairs sum to ±2 · 127 · 127; a kernel that saturated would be off by hundreds.
    #[test]
    fn kernels_do_not_saturate_at_the_extremes() {
        let (rows, k, n) = (3, 64, 32);
        // Row 0 all at its maximum (the top level, zero point 0), row 1 all at its minimum, row 2
        // alternating.
        let x: Vec<f32> = (0..rows * k)
            .map(|i| match i / k {
                0 => 1.0,
                1 => -1.0,
                _ => [1.0, -1.0][i % 2],
            })
            .collect();
        // Columns of +1, of -1, and alternating by depth: levels ±127.
        let w: Vec<f32> = (0..k * n)
            .map(|i| match (i % n) % 3 {
                0 => 1.0,
                1 => -1.0,
                _ => [1.0, -1.0][(i / n) % 2],
            })
            .collect();
        let mut q = QuantRows::default();
        q.quantize(&x, rows, k);
        assert!(q.bytes[..k].iter().all(|&b| b == ACTIVATION_LEVEL as u8));
        assert!(QuantWeights::pack(&w, k, n).lines[0]
            .0
            .iter()
            .all(|&v| v.abs() == WEIGHT_LEVEL as i8));
        check_kernels(&x, &w, rows, k, n);
    }
}
