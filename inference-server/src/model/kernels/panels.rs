//! What the f32 matmul kernels on packed weights share (AVX-512 in [`super::avx512`], AVX2 + FMA
//! in [`super::avx2`]): the weights' panel layout, and the split of `out = start + x · W` into
//! tasks and micro-kernel calls. Each kernel brings its panel width, its row blocking and its
//! micro-kernel.
//!
//! The classic register-blocked design: `W` is cut into panels of `NR` columns stored k-major
//! (each k step is a few aligned vector loads), and a micro-kernel keeps an `mr x NR` block of
//! the output in registers, broadcasting one `x` value per row per k step. A task is a block of
//! rows times a group of panels: the row block stays in L2 while the panels stream through it.

use std::ops::Range;

use rayon::prelude::*;

use super::memory::filled;
use super::simd::Level;
use super::{SharedOut, Start};

/// Depth of one pass: the `mr x KC` slice of `x` (14 KiB at 14 rows) stays in L1 while the
/// panels of a chunk stream past it from L2.
const KC: usize = 256;
/// Row blocks of at most this many rows read the weights in storage order (see the task
/// loop): two 14-row calls of the AVX-512 kernel, whose `x` slices (28 KiB) still fit L1.
const STREAM_ROWS: usize = 28;
/// Below this many multiply-adds a task is not worth a rayon hop.
const MIN_TASK_WORK: usize = 1 << 20;

/// One cache line of f32 values: panels are built of them so every vector load is aligned
/// (a load split over two lines costs about twice as much).
#[derive(Clone, Copy, Debug)]
#[repr(C, align(64))]
struct Line([f32; 16]);

/// `W` `[k, n]` as column panels of `NR` (a multiple of 16), each `k * NR` values k-major,
/// zero-padded past `n`.
#[derive(Debug)]
pub struct Panels<const NR: usize> {
    lines: Vec<Line>,
    k: usize,
    n: usize,
}

impl<const NR: usize> Panels<NR> {
    /// Lines per k step of a panel (checked when the kernel is compiled).
    const STEP_LINES: usize = {
        assert!(
            NR > 0 && NR.is_multiple_of(16),
            "panels are whole cache lines wide"
        );
        NR / 16
    };

    /// `w_t`: `[k, n]` row-major.
    pub fn pack(w_t: &[f32], k: usize, n: usize) -> Self {
        assert_eq!(w_t.len(), k * n, "weight size");
        let count = n.div_ceil(NR);
        let mut lines = filled(count * k * Self::STEP_LINES, Line([0.0; 16]));
        for (p, panel) in lines.chunks_exact_mut(k * Self::STEP_LINES).enumerate() {
            let (first, width) = (p * NR, NR.min(n - p * NR));
            for (kk, step) in panel.chunks_exact_mut(Self::STEP_LINES).enumerate() {
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
        let len = self.k * Self::STEP_LINES;
        let lines = &self.lines[p * len..(p + 1) * len];
        // SAFETY: `Line` is `repr(C)` around 16 f32 values, so the lines are contiguous f32s.
        unsafe { std::slice::from_raw_parts(lines.as_ptr().cast::<f32>(), lines.len() * 16) }
    }
}

/// Where the first pass over an output block starts from, at the block's first row and column.
#[derive(Clone, Copy)]
pub(crate) struct Origin {
    pub bias: *const f32,
    /// Null without a residual; rows `ldc` apart like the output's.
    pub residual: *const f32,
}

/// One micro-kernel call: `c[mr, cols] += a[mr, k] · b[k, NR]` (only the first `cols` columns
/// stored); with `first`, `c` is not read: `c = bias + residual + a · b`.
///
/// Valid when: `a` points at `mr` rows of `k` values (row stride `lda`), `b` at `k * NR` values
/// aligned to 64 bytes, `c` (and `first`'s residual when not null) at `mr` rows (stride `ldc`)
/// with `cols <= NR` writable (readable) values each, `first`'s bias at `cols` values.
#[derive(Clone, Copy)]
pub(crate) struct Call {
    pub a: *const f32,
    pub lda: usize,
    pub k: usize,
    pub b: *const f32,
    pub c: *mut f32,
    pub ldc: usize,
    pub cols: usize,
    pub first: Option<Origin>,
}

/// Defines `unsafe fn micro(mr: usize, call: Call)` (or `$name(mr, call: $call)`), a kernel's
/// dispatch to its micro-kernel `$kernel::<R>`, compiled for each row count `R` listed (1 to the
/// kernel's `mr`).
macro_rules! micro_for_rows {
    ($kernel:ident: $($rows:literal)*) => {
        $crate::model::kernels::panels::micro_for_rows!(
            micro = $kernel($crate::model::kernels::panels::Call): $($rows)*
        );
    };
    ($name:ident = $kernel:ident($call:ty): $($rows:literal)*) => {
        /// Dispatches to the micro-kernel compiled for `mr` rows.
        ///
        /// # Safety
        /// As the micro-kernel's: `call` is valid for `mr` rows; the CPU runs the kernel.
        unsafe fn $name(mr: usize, call: $call) {
            match mr {
                $($rows => $kernel::<$rows>(call),)*
                _ => unreachable!("micro-kernel rows {mr}"),
            }
        }
    };
}
pub(crate) use micro_for_rows;

/// A matmul kernel on panels of `NR` columns: its micro-kernel, the SIMD level it needs, and
/// how it blocks the rows.
pub struct Kernel<const NR: usize> {
    level: Level,
    micro: unsafe fn(mr: usize, call: Call),
    mr: usize,
    mc: usize,
    nc_panels: usize,
}

impl<const NR: usize> Kernel<NR> {
    /// `mr`: rows per micro-kernel call (the register block); `mc`: rows per task at most
    /// (their `x` rows, `mc * KC * 4` bytes, stay in L2 while panels pass); `nc_panels`: panels
    /// per chunk (`KC x NR x nc_panels` weights stay in L2 for all the task's rows).
    ///
    /// # Safety
    /// `micro` runs on every CPU that runs `level`, and does what [`Call`] says for every valid
    /// call of 1 to `mr` rows.
    pub(crate) const unsafe fn new(
        level: Level,
        micro: unsafe fn(mr: usize, call: Call),
        mr: usize,
        mc: usize,
        nc_panels: usize,
    ) -> Self {
        Self {
            level,
            micro,
            mr,
            mc,
            nc_panels,
        }
    }

    /// `out[rows, n] = finish(start + x[rows, k] · W)`, all row-major; `finish` runs on every
    /// finished piece of an output row while it is still in L1 (an activation in place, without
    /// another pass over memory). The start values are added by the kernel's first pass over
    /// the output, so `out`'s old contents are never read. Panics if this CPU does not run the
    /// kernel's SIMD level (callers pick kernels by [`super::simd::Simd`]).
    pub fn matmul_then(
        &self,
        x: &[f32],
        rows: usize,
        w: &Panels<NR>,
        start: Start,
        out: &mut [f32],
        finish: impl Fn(&mut [f32]) + Sync,
    ) {
        let name = self.level.name();
        assert!(
            self.level.runs(),
            "the {name} kernel needs a CPU with {name}"
        );
        let &Kernel {
            level: _,
            micro,
            mr: call_rows,
            mc: max_block_rows,
            nc_panels: chunk_panels,
        } = self;
        let (k, n) = (w.k, w.n);
        assert_eq!(x.len(), rows * k, "input size");
        assert_eq!(out.len(), rows * n, "output size");
        start.check(rows, n);
        if rows == 0 || n == 0 {
            return;
        }
        let split = Split::new(rows, call_rows, max_block_rows, n.div_ceil(NR), k * NR);
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
            // SAFETY: a valid call: rows row..row+mr of `x`, `out` and the residual exist (row + mr
            // <= rows), columns depth..depth+kc of those `x` rows too, the panel slice holds kc * NR
            // values from `depth` on (64-byte aligned: whole lines), the bias `cols` from p*NR on,
            // and columns p*NR..p*NR+cols of those output rows belong to this task alone; `out`
            // outlives the parallel loop. `micro` runs on this CPU: it runs the kernel's level
            // (asserted above), and `micro` runs where it does (`new`'s contract).
            unsafe {
                micro(
                    mr,
                    Call {
                        a: x.as_ptr().add(row * k + depth),
                        lda: k,
                        k: kc,
                        b: w.panel(p)[depth * NR..].as_ptr(),
                        c: dst.at(row * n + p * NR),
                        ldc: n,
                        cols,
                        first,
                    },
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
            let (block, group_panels) = split.task(t);
            let row_calls = || split.calls(block.clone());
            if block.len() <= STREAM_ROWS {
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
                for chunk in group_panels.clone().step_by(chunk_panels) {
                    for (row, mr) in row_calls() {
                        for p in chunk..(chunk + chunk_panels).min(group_panels.end) {
                            call(row, mr, p, depth);
                        }
                    }
                }
            }
        };
        split.run(task);
    }
}

/// How an output of `rows` rows and `panels` column panels is cut into parallel tasks: blocks of
/// whole micro-kernel calls of rows, times groups of panels. Shared by the f32 kernels and the
/// int8 ones ([`super::int8`]).
pub(crate) struct Split {
    rows: usize,
    call_rows: usize,
    calls: usize,
    row_blocks: usize,
    groups: usize,
    group_size: usize,
    panels: usize,
}

impl Split {
    /// `call_rows`: rows per micro-kernel call; `max_block_rows`: rows per task at most;
    /// `panel_work`: multiply-adds of one panel per output row (k times its width).
    pub(crate) fn new(
        rows: usize,
        call_rows: usize,
        max_block_rows: usize,
        panels: usize,
        panel_work: usize,
    ) -> Self {
        let threads = rayon::current_num_threads();
        // Row blocks of at most `max_block_rows` rows, as many as a multiple of the threads so
        // that every thread gets the same share (5 blocks on 2 threads would leave one idle a
        // fifth of the time).
        let calls = rows.div_ceil(call_rows);
        let mut row_blocks = rows.div_ceil(max_block_rows).min(calls).max(1);
        if row_blocks > 1 {
            row_blocks = row_blocks.next_multiple_of(threads).min(calls);
        }
        // Split the panels too when there are fewer row blocks than threads, as long as each
        // task keeps enough work.
        let per_panel = rows.div_ceil(row_blocks) * panel_work;
        let groups = (threads.div_ceil(row_blocks))
            .min(panels)
            .min((panels * per_panel / MIN_TASK_WORK).max(1))
            .max(1);
        Self {
            rows,
            call_rows,
            calls,
            row_blocks,
            groups,
            group_size: panels.div_ceil(groups),
            panels,
        }
    }

    /// Task `t`'s rows and panels.
    pub(crate) fn task(&self, t: usize) -> (Range<usize>, Range<usize>) {
        let (block, group) = (t / self.groups, t % self.groups);
        // Blocks of whole calls, their numbers differing by at most one (1024 rows, 14 per
        // call: 12 or 13 calls per block, a 2-row call in the last): equal blocks of 171 rows
        // would each end in a 1- to 3-row call, which runs at a fraction of the speed (too few
        // accumulators to cover the FMA latency), and blocks all rounded up (182) would leave
        // the last one short and the threads unbalanced.
        let edge = |b: usize| (b * self.calls / self.row_blocks * self.call_rows).min(self.rows);
        let panels = group * self.group_size..((group + 1) * self.group_size).min(self.panels);
        (edge(block)..edge(block + 1), panels)
    }

    /// The micro-kernel calls of a block of rows: first row and row count.
    pub(crate) fn calls(&self, block: Range<usize>) -> impl Iterator<Item = (usize, usize)> {
        let call_rows = self.call_rows;
        block
            .clone()
            .step_by(call_rows)
            .map(move |row| (row, call_rows.min(block.end - row)))
    }

    /// Runs every task, in parallel when there are several.
    pub(crate) fn run(&self, task: impl Fn(usize) + Sync) {
        match self.row_blocks * self.groups {
            1 => task(0),
            tasks => (0..tasks).into_par_iter().for_each(&task),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::simd::Simd;
    use super::super::{avx2, avx512, max_abs_diff, test_values};
    use super::*;

    /// `kernel` against the definition, in f64, on shapes that cut row calls, panels and depth
    /// slices short.
    fn starts_from_bias_and_residual<const NR: usize>(kernel: &Kernel<NR>) {
        let name = kernel.level.name();
        for (rows, k, n) in [
            (1, 1, 1),
            (1, 7, 3),
            (5, 13, 17),
            (6, 9, 16),
            (7, 300, 8),
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
                kernel.matmul_then(&x, rows, &Panels::pack(&w, k, n), start, &mut got, |_| {});
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
                    "{name} {rows}x{k}x{n} {with} residual: max abs diff {worst}"
                );
            }
        }
    }

    /// Every kernel this CPU runs.
    #[test]
    fn kernels_start_from_bias_and_residual_on_odd_shapes() {
        for simd in Simd::supported() {
            match simd.level() {
                Level::Avx512 => starts_from_bias_and_residual(&avx512::KERNEL),
                Level::Avx2 => starts_from_bias_and_residual(&avx2::KERNEL),
                Level::Baseline => {}
            }
        }
    }
}
