//! `out = bias (+ residual) + x · W` in bf16 on AMX tiles with f32 accumulation (the `--dtype
//! bf16` path).
//!
//! AMX intrinsics are unstable in Rust, so the tile instructions are inline asm. `W` is converted
//! and arranged once at load time ([`PackedWeights`]); `x` is converted per call into the same
//! tile order, so every tile load reads 1 KiB of contiguous memory (64-byte stride). Each output
//! block of 32 x 32 f32 lives in four accumulator tiles (tmm0-3) over the whole K; tmm4-5 hold A
//! (16 rows x 32 bf16), tmm6-7 hold B (16 k-pairs x 16 columns x 2, the VNNI order `tdpbf16ps`
//! wants).
//!
//! Measured on this machine class (one core): a `tdpbf16ps` every 5 ns (3.2 TFLOP/s); the 2 x 2
//! block, the most eight tiles allow, needs one tile load per `tdpbf16ps`, and keeps up with it
//! only from L1 (2.6 TFLOP/s); with the operands streaming from L2 a K step takes 40-50 ns
//! (1.3-1.6 TFLOP/s), from L3 75-150 ns, and tile rows not aligned to cache lines cost three
//! times as much. Hence 64-byte-aligned tile rows, tasks whose weights stay in L2, and prefetches
//! of the next tiles and of the output rows. The whole call reaches 0.8-1.0 TFLOP/s per core
//! at BERT-base shapes (see the `throughput` test), the rest going to the per-block drain and
//! add, and to converting `x`.

use std::arch::asm;
use std::arch::x86_64::{
    __cpuid_count, __m512i, _mm512_cvtne2ps_pbh, _mm512_maskz_loadu_ps, _mm512_storeu_si512,
    _mm_prefetch, _MM_HINT_T0,
};
use std::sync::{Mutex, OnceLock};

use half::bf16;
use rayon::prelude::*;

use super::memory::{buffer, filled};
use super::{SharedOut, Start};

/// Rows of a tile, and k-pairs of a B tile.
const TILE_ROWS: usize = 16;
/// bf16 values in a tile row (64 bytes): the k extent of one `tdpbf16ps`.
const TILE_K: usize = 32;
/// One tile row: 32 bf16 values (as bits), on a cache line of its own. Tile loads of rows that
/// straddle two lines run at a third of the speed (measured), and `Vec<u16>` is only 16-byte
/// aligned.
#[derive(Clone, Copy, Default)]
#[repr(C, align(64))]
struct TileRow([u16; TILE_K]);

/// Rows and columns of the output block held in the four accumulator tiles.
const BLOCK: usize = 2 * TILE_ROWS;
/// Output row blocks per task.
const TASK_ROW_BLOCKS: usize = 4;
/// Bytes of weights per task at most: with the task's A rows they stay in L2 (2 MiB here) while
/// it walks its blocks; tile loads from L3 cost about three times as much (measured).
const TASK_WEIGHT_BYTES: usize = 768 << 10;
/// Tasks per thread at least, where the weights bound allows: for the balance between threads.
const TASKS_PER_THREAD: usize = 4;
/// Below this many multiply-adds (about 40 µs on one core) the work runs on the calling thread:
/// a rayon fan-out costs more than it saves, or waits for a busy core.
const SERIAL_MACS: usize = 1 << 24;

/// True when the CPU has AMX-BF16 (and AVX-512 BF16, used to convert `x`) and the kernel granted
/// this process the tile-data state. Checked once.
pub fn available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(detect)
}

fn detect() -> bool {
    const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
    const XFEATURE_XTILEDATA: libc::c_long = 18;
    const AMX_BF16: u32 = 1 << 22;
    const AMX_TILE: u32 = 1 << 24;
    if !std::arch::is_x86_feature_detected!("avx512bf16") {
        return false;
    }
    // Leaf 7 exists: AVX-512 BF16 is reported there.
    let leaf7 = __cpuid_count(7, 0);
    if leaf7.edx & (AMX_BF16 | AMX_TILE) != AMX_BF16 | AMX_TILE {
        return false;
    }
    // Linux hands out the 8 KiB tile state only on request; the request fails where the kernel
    // or the hypervisor does not enable it in XCR0, which is the OS-support check.
    // SAFETY: arch_prctl with these arguments only changes this process's permitted xfeatures.
    unsafe {
        libc::syscall(
            libc::SYS_arch_prctl,
            ARCH_REQ_XCOMP_PERM,
            XFEATURE_XTILEDATA,
        ) == 0
    }
}

/// `W` (`[k, n]`) in bf16, in tile order: for each 16-column tile, for each 32-deep K step, one
/// 1 KiB B tile whose row `p` holds `(W[2p][c], W[2p + 1][c])` for its 16 columns `c`. Zero-padded
/// to whole tiles and to an even number of column tiles.
pub struct PackedWeights {
    k: usize,
    n: usize,
    k_steps: usize,
    data: Vec<TileRow>,
}

impl PackedWeights {
    /// `w_t`: `[k, n]` row-major f32, rounded to the nearest bf16 (ties to even).
    pub fn pack(w_t: &[f32], k: usize, n: usize) -> Self {
        assert!(k > 0 && n > 0, "empty weight");
        assert_eq!(w_t.len(), k * n, "weight size");
        let k_steps = k.div_ceil(TILE_K);
        let col_tiles = n.div_ceil(BLOCK) * 2;
        let mut data = filled(col_tiles * k_steps * TILE_ROWS, TileRow::default());
        for (kk, row) in w_t.chunks_exact(n).enumerate() {
            let (step, pair, half) = (kk / TILE_K, kk % TILE_K / 2, kk % 2);
            for (c, &v) in row.iter().enumerate() {
                let tile = c / TILE_ROWS * k_steps + step;
                data[tile * TILE_ROWS + pair].0[c % TILE_ROWS * 2 + half] =
                    bf16::from_f32(v).to_bits();
            }
        }
        Self {
            k,
            n,
            k_steps,
            data,
        }
    }

    pub fn k(&self) -> usize {
        self.k
    }

    pub fn n(&self) -> usize {
        self.n
    }
}

/// `out[rows, n] = finish(start + x[rows, k] · W)`, `x` rounded to bf16, products summed in
/// f32; `finish` runs on every finished piece of an output row while it is still in L1 (an
/// activation in place, without another pass over memory). `out`'s old contents are never
/// read. Panics when [`available`] is false or the sizes disagree.
pub fn matmul_then(
    x: &[f32],
    rows: usize,
    w: &PackedWeights,
    start: Start,
    out: &mut [f32],
    finish: impl Fn(&mut [f32]) + Sync,
) {
    assert!(
        available(),
        "AMX-BF16 matmul called on a CPU or kernel without AMX-BF16 tiles (check amx::available())"
    );
    let (k, n) = (w.k, w.n);
    assert_eq!(x.len(), rows * k, "input size");
    assert_eq!(out.len(), rows * n, "output size");
    start.check(rows, n);
    if rows == 0 {
        return;
    }
    // A reused buffer: a fresh one of this size would be mmapped and page-faulted in on every
    // call (about 8 % of the time at BERT shapes).
    static BUFFERS: Mutex<Vec<Vec<TileRow>>> = Mutex::new(Vec::new());
    let mut a = BUFFERS.lock().unwrap().pop().unwrap_or_default();
    pack_rows(x, rows, k, w.k_steps, &mut a);
    let threads = rayon::current_num_threads();
    let row_groups = rows.div_ceil(BLOCK * TASK_ROW_BLOCKS);
    let col_blocks = n.div_ceil(BLOCK);
    let col_group = (TASK_WEIGHT_BYTES / (2 * w.k_steps * size_of::<[TileRow; TILE_ROWS]>()))
        .min(col_blocks.div_ceil((TASKS_PER_THREAD * threads).div_ceil(row_groups)))
        .max(1);
    let col_groups = col_blocks.div_ceil(col_group);
    let out = SharedOut::new(out);
    let job = Job {
        a: &a,
        w,
        rows,
        col_group,
        start,
        out,
        finish: &finish,
    };
    // Column group major: consecutive tasks (which rayon keeps on one thread) share their
    // weights, which stay in L2.
    let task = |t: usize| job.run(t % row_groups, t / row_groups);
    if rows * k * n < SERIAL_MACS || threads == 1 {
        (0..row_groups * col_groups).for_each(task);
    } else {
        (0..row_groups * col_groups).into_par_iter().for_each(task);
    }
    BUFFERS.lock().unwrap().push(a);
}

/// Writes `x` in bf16 to `a` in tile order: for each 16-row tile, for each K step, one 1 KiB A
/// tile. Zero-padded to whole tiles and to an even number of row tiles (one output block).
fn pack_rows(x: &[f32], rows: usize, k: usize, k_steps: usize, a: &mut Vec<TileRow>) {
    let stream = k_steps * TILE_ROWS;
    let len = rows.div_ceil(BLOCK) * 2 * stream;
    if a.capacity() < len {
        *a = buffer(len);
    }
    a.resize(len, TileRow::default());
    let pack_tiles = |(t, tiles): (usize, &mut [TileRow])| {
        for r in 0..TILE_ROWS {
            let row = t * TILE_ROWS + r;
            let src = if row < rows { &x[row * k..][..k] } else { &[] };
            // SAFETY: `available()` (asserted by the caller) implies AVX-512 BF16.
            unsafe { pack_row(src, k_steps, &mut tiles[r..]) };
        }
    };
    if rows * k < SERIAL_MACS / 64 {
        a.chunks_mut(stream).enumerate().for_each(pack_tiles);
    } else {
        a.par_chunks_mut(stream).enumerate().for_each(pack_tiles);
    }
}

/// Rounds one row of `x` to bf16 (nearest, ties to even) into its row of each of `k_steps` A
/// tiles: `dst[0]`, `dst[16]`, ...; zeros past the end of `src` (which is empty for the padding
/// rows).
#[target_feature(enable = "avx512f,avx512bf16")]
fn pack_row(src: &[f32], k_steps: usize, dst: &mut [TileRow]) {
    for step in 0..k_steps {
        let from = step * TILE_K;
        let len = src.len().saturating_sub(from).min(TILE_K);
        let mask = |half: usize| (((1u64 << len.clamp(half, half + 16)) >> half) - 1) as u16;
        let dst = &mut dst[step * TILE_ROWS].0;
        // SAFETY: the masks cover only the `len` values of `src` from `from`; `dst` is 64 bytes.
        unsafe {
            let at = src.as_ptr().wrapping_add(from);
            let lo = _mm512_maskz_loadu_ps(mask(0), at);
            let hi = _mm512_maskz_loadu_ps(mask(16), at.wrapping_add(16));
            let v: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(hi, lo));
            _mm512_storeu_si512(dst.as_mut_ptr().cast(), v);
        }
    }
}

struct Job<'a> {
    a: &'a [TileRow],
    w: &'a PackedWeights,
    rows: usize,
    /// Output column blocks per task.
    col_group: usize,
    start: Start<'a>,
    out: SharedOut,
    finish: &'a (dyn Fn(&mut [f32]) + Sync),
}

impl Job<'_> {
    /// One task: the output blocks of row group `rg` and column group `cg`.
    fn run(&self, rg: usize, cg: usize) {
        let (n, k_steps) = (self.w.n, self.w.k_steps);
        let row_blocks =
            rg * TASK_ROW_BLOCKS..((rg + 1) * TASK_ROW_BLOCKS).min(self.rows.div_ceil(BLOCK));
        let col_blocks = cg * self.col_group..((cg + 1) * self.col_group).min(n.div_ceil(BLOCK));
        let stream = k_steps * TILE_ROWS;
        let mut sums = Sums([0.0; BLOCK * BLOCK]);
        let _tiles = Tiles::configure();
        for rb in row_blocks {
            let a = &self.a[2 * rb * stream..][..2 * stream];
            for cb in col_blocks.clone() {
                let b = &self.w.data[2 * cb * stream..][..2 * stream];
                let (r0, c0) = (rb * BLOCK, cb * BLOCK);
                let (rows, width) = (r0..self.rows.min(r0 + BLOCK), BLOCK.min(n - c0));
                // The block's output (and residual) rows are far apart (and, at BERT sizes,
                // not in L2): fetch them while the tiles work.
                for r in rows.clone() {
                    let row = self.out.at(r * n + c0).cast_const();
                    let res = self.start.residual.map(|res| res[r * n + c0..].as_ptr());
                    for line in [Some(row), res].into_iter().flatten() {
                        // SAFETY: SSE is baseline on x86_64; a prefetch never faults.
                        unsafe {
                            _mm_prefetch::<_MM_HINT_T0>(line.cast());
                            _mm_prefetch::<_MM_HINT_T0>(line.wrapping_add(width - 1).cast());
                        }
                    }
                }
                // SAFETY: `a` and `b` each hold two tile streams of `k_steps` tiles.
                unsafe { block(&mut sums, a.as_ptr(), b.as_ptr(), stream, k_steps) };
                for (r, sums) in rows.zip(sums.0.chunks_exact(BLOCK)) {
                    // SAFETY: row `r` < rows and columns `c0..c0 + width` <= n lie in `out`,
                    // and no other task writes this block.
                    let out =
                        unsafe { std::slice::from_raw_parts_mut(self.out.at(r * n + c0), width) };
                    let bias = &self.start.bias[c0..c0 + width];
                    let res = self.start.residual.map(|res| &res[r * n + c0..][..width]);
                    // SAFETY: `available()` implies AVX-512.
                    unsafe { begin(out, sums, bias, res) };
                    (self.finish)(out);
                }
            }
        }
    }
}

/// One output block of f32 sums, row-major, its rows on whole cache lines (as [`TileRow`]).
#[repr(C, align(64))]
struct Sums([f32; BLOCK * BLOCK]);

/// `out = sums + bias (+ residual)` (element-wise, over `out`'s length), vectorised for
/// AVX-512.
#[target_feature(enable = "avx512f")]
fn begin(out: &mut [f32], sums: &[f32], bias: &[f32], residual: Option<&[f32]>) {
    let terms = out.iter_mut().zip(sums).zip(bias);
    match residual {
        Some(res) => terms.zip(res).for_each(|(((o, s), b), r)| *o = s + b + r),
        None => terms.for_each(|((o, s), b)| *o = s + b),
    }
}

/// This thread's tile configuration, for the life of the value: eight tiles of 16 rows x 64
/// bytes (palette 1). The configuration and the tile state are per thread.
struct Tiles;

#[repr(C, align(64))]
struct TileConfig {
    palette: u8,
    start_row: u8,
    reserved: [u8; 14],
    bytes_per_row: [u16; 16],
    rows: [u8; 16],
}

impl Tiles {
    fn configure() -> Self {
        let mut config = TileConfig {
            palette: 1,
            start_row: 0,
            reserved: [0; 14],
            bytes_per_row: [0; 16],
            rows: [0; 16],
        };
        config.bytes_per_row[..8].fill(64);
        config.rows[..8].fill(TILE_ROWS as u8);
        // SAFETY: a valid palette-1 configuration; the tile state was granted by `available()`.
        unsafe { asm!("ldtilecfg [{}]", in(reg) &config, options(nostack, readonly)) };
        Tiles
    }
}

impl Drop for Tiles {
    fn drop(&mut self) {
        // SAFETY: returns the tiles to their initial state, which also lets the kernel skip
        // saving 8 KiB on context switches.
        unsafe { asm!("tilerelease", options(nostack, nomem)) };
    }
}

/// `sums[32 x 32] = A · B` over `steps` K steps: `a` and `a + stream` are the two A tile streams
/// (rows 0-15 and 16-31), `b` and `b + stream` the two B tile streams (columns 0-15 and
/// 16-31), each advancing 1 KiB per step.
///
/// The accumulators start from zero and go to a scratch block that the caller writes to `out`
/// with the bias and residual: as fast as loading and storing `out` in place (measured), and
/// the same path for the edge blocks.
///
/// # Safety
/// Tiles configured by [`Tiles`]; both streams of `a` and `b` hold `steps` tiles.
#[inline]
unsafe fn block(
    sums: &mut Sums,
    a: *const TileRow,
    b: *const TileRow,
    stream: usize,
    steps: usize,
) {
    debug_assert!(steps > 0);
    let c = sums.0.as_mut_ptr();
    // SAFETY: per the contract above; tmm0-7 are not used by compiled code.
    unsafe {
        asm!(
            "tilezero tmm0",
            "tilezero tmm1",
            "tilezero tmm2",
            "tilezero tmm3",
            "2:",
            "tileloadd tmm4, [{a0} + {s} * 1]",
            "tileloadd tmm6, [{b0} + {s} * 1]",
            "tdpbf16ps tmm0, tmm4, tmm6",
            "tileloadd tmm7, [{b1} + {s} * 1]",
            "tdpbf16ps tmm1, tmm4, tmm7",
            "tileloadd tmm5, [{a1} + {s} * 1]",
            "tdpbf16ps tmm2, tmm5, tmm6",
            "tdpbf16ps tmm3, tmm5, tmm7",
            // The next-but-one step's tiles, into L1: tile loads that miss L1 cost more
            // (3-5 % faster at BERT shapes with this, measured).
            ".irp off, 0,64,128,192,256,320,384,448,512,576,640,704,768,832,896,960",
            "prefetcht0 [{a0} + \\off + 2048]",
            "prefetcht0 [{a1} + \\off + 2048]",
            "prefetcht0 [{b0} + \\off + 2048]",
            "prefetcht0 [{b1} + \\off + 2048]",
            ".endr",
            "add {a0}, 1024",
            "add {a1}, 1024",
            "add {b0}, 1024",
            "add {b1}, 1024",
            "dec {n}",
            "jnz 2b",
            "tilestored [{c} + {cs} * 1], tmm0",
            "tilestored [{c} + {cs} * 1 + 64], tmm1",
            "tilestored [{c2} + {cs} * 1], tmm2",
            "tilestored [{c2} + {cs} * 1 + 64], tmm3",
            c = in(reg) c,
            c2 = in(reg) c.add(TILE_ROWS * BLOCK),
            cs = in(reg) BLOCK * 4,
            s = in(reg) 64usize,
            a0 = inout(reg) a => _,
            a1 = inout(reg) a.add(stream) => _,
            b0 = inout(reg) b => _,
            b1 = inout(reg) b.add(stream) => _,
            n = inout(reg) steps => _,
            options(nostack),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_values;
    use super::*;

    fn skip() -> bool {
        if !available() {
            eprintln!("skipping: CPU has no AMX-BF16 (or the kernel refused the tile state)");
        }
        !available()
    }

    /// `out += x · W` through [`matmul_then`], with `out`'s values as the residual.
    fn matmul_accumulate(x: &[f32], rows: usize, w: &PackedWeights, out: &mut [f32]) {
        let (prior, bias) = (out.to_vec(), vec![0.0; w.n()]);
        let start = Start {
            bias: &bias,
            residual: Some(&prior),
        };
        matmul_then(x, rows, w, start, out, |_| {});
    }

    /// `bias + residual + x · W` in f64 on the bf16-rounded inputs, and the bound the f32
    /// accumulation may stray from it: a small multiple of the f32 epsilon times the sum of
    /// |terms|.
    fn reference(
        x: &[f32],
        w: &[f32],
        bias: &[f32],
        residual: Option<&[f32]>,
        rows: usize,
    ) -> (Vec<f64>, Vec<f64>) {
        let round = |v: f32| bf16::from_f32(v).to_f64();
        let (k, n) = (x.len() / rows, bias.len());
        let (mut want, mut bound) = (Vec::new(), Vec::new());
        for r in 0..rows {
            for c in 0..n {
                let terms = (0..k).map(|i| round(x[r * k + i]) * round(w[i * n + c]));
                let (sum, abs) = terms.fold((0.0, 0.0), |(s, a), t| (s + t, a + t.abs()));
                let start = bias[c] as f64 + residual.map_or(0.0, |res| res[r * n + c] as f64);
                want.push(start + sum);
                bound.push(1e-5 * (abs + start.abs()) + 1e-6);
            }
        }
        (want, bound)
    }

    #[test]
    fn matches_the_definition_on_odd_shapes() {
        if skip() {
            return;
        }
        for (rows, k, n) in [
            (1, 1, 1),
            (1, 7, 3),
            (5, 33, 17),
            (33, 70, 65),
            (16, 64, 32),
            (64, 300, 96),
            (17, 768, 2304),
            (130, 3072, 768),
        ] {
            let (x, w) = (test_values(rows * k, 1, 0.7), test_values(k * n, 2, 0.7));
            let (bias, prior) = (test_values(n, 3, 0.7), test_values(rows * n, 4, 0.7));
            let packed = PackedWeights::pack(&w, k, n);
            for residual in [None, Some(&prior[..])] {
                // Stale contents, as in a reused buffer: must not be read (a NaN fails below).
                let mut out = vec![f32::NAN; rows * n];
                let start = Start {
                    bias: &bias,
                    residual,
                };
                matmul_then(&x, rows, &packed, start, &mut out, |_| {});
                let (want, bound) = reference(&x, &w, &bias, residual, rows);
                for (i, ((got, want), bound)) in out.iter().zip(&want).zip(&bound).enumerate() {
                    assert!(
                        (*got as f64 - want).abs() <= *bound,
                        "{rows}x{k}x{n} at ({}, {}): got {got}, want {want} ± {bound}",
                        i / n,
                        i % n
                    );
                }
            }
        }
    }

    /// Small integers are exact in bf16 and their sums exact in f32, so the result must equal
    /// the integer arithmetic exactly, including the values `out` held before.
    #[test]
    fn adds_to_what_the_output_held() {
        if skip() {
            return;
        }
        let (rows, k, n) = (40, 96, 48);
        let int = |len: usize, seed: usize| -> Vec<i64> {
            (0..len)
                .map(|i| ((i * 37 + seed * 11) % 15) as i64 - 7)
                .collect()
        };
        let (x, w, prior) = (int(rows * k, 1), int(k * n, 2), int(rows * n, 3));
        let float = |v: &[i64]| v.iter().map(|&v| v as f32).collect::<Vec<_>>();
        let mut out = float(&prior);
        matmul_accumulate(
            &float(&x),
            rows,
            &PackedWeights::pack(&float(&w), k, n),
            &mut out,
        );
        for r in 0..rows {
            for c in 0..n {
                let dot: i64 = (0..k).map(|i| x[r * k + i] * w[i * n + c]).sum();
                assert_eq!(
                    out[r * n + c],
                    (prior[r * n + c] + dot) as f32,
                    "at ({r}, {c})"
                );
            }
        }
    }

    #[test]
    fn rounds_inputs_to_nearest_even_bf16() {
        if skip() {
            return;
        }
        // 1 + 2^-8 lies halfway between two bf16 values: ties go to the even one (1.0);
        // 1 + 3·2^-9 rounds up to 1 + 2^-7.
        for (v, want) in [
            (1.0 + 1.0 / 256.0, 1.0),
            (1.0 + 3.0 / 512.0, 1.0 + 1.0 / 128.0),
        ] {
            let mut out = [0.0];
            matmul_accumulate(&[v], 1, &PackedWeights::pack(&[1.0], 1, 1), &mut out);
            assert_eq!(out[0], want, "x = {v}");
            matmul_accumulate(&[1.0], 1, &PackedWeights::pack(&[v], 1, 1), &mut out);
            assert_eq!(out[0], 2.0 * want, "w = {v}");
        }
    }

    /// GFLOP/s at BERT-base shapes, best of 5 rounds by wall time and by process CPU time (the
    /// second is per busy core and less disturbed by other load on a shared machine):
    /// `cargo test -p nlu-server --release --lib amx -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn throughput() {
        if skip() {
            return;
        }
        let cpu_time = || {
            let mut t = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            // SAFETY: writes only `t`.
            unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut t) };
            t.tv_sec as f64 + t.tv_nsec as f64 * 1e-9
        };
        let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        println!(
            "{} threads, load average {}",
            rayon::current_num_threads(),
            load.trim()
        );
        for (rows, k, n) in [
            (1024, 768, 3072),
            (1024, 3072, 768),
            (4096, 768, 768),
            (4096, 768, 2304),
            (4096, 768, 3072),
            (4096, 3072, 768),
        ] {
            let (x, w) = (test_values(rows * k, 1, 0.7), test_values(k * n, 2, 0.7));
            let packed = PackedWeights::pack(&w, k, n);
            let mut out = vec![0.0; rows * n];
            matmul_accumulate(&x, rows, &packed, &mut out);
            let (mut wall, mut cpu) = (f64::MAX, f64::MAX);
            for _ in 0..5 {
                let (start, cpu_start) = (std::time::Instant::now(), cpu_time());
                for _ in 0..5 {
                    matmul_accumulate(&x, rows, &packed, &mut out);
                }
                wall = wall.min(start.elapsed().as_secs_f64() / 5.0);
                cpu = cpu.min((cpu_time() - cpu_start) / 5.0);
            }
            let flop = 2.0 * (rows * k * n) as f64;
            println!(
                "{rows}x{k}x{n}: {:.2} ms, {:.0} GFLOP/s, {:.0} GFLOP per CPU-second",
                wall * 1e3,
                flop / wall / 1e9,
                flop / cpu / 1e9
            );
        }
    }
}
