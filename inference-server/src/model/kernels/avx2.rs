//! `out = bias (+ residual) + x · W` in f32 on AVX2 + FMA, against weights packed once at load
//! time: the matmul of the encoder on CPUs without AVX-512 (AMD before Zen 4, Intel client
//! parts), where gemm's AVX2 kernel is its only other choice and is slow for short batches.
//!
//! [`super::avx512`]'s design at 256 bits: the micro-kernel keeps a 6 x 16 block of the output
//! in 12 ymm accumulators, on panels of 16 columns (one cache line, two ymm loads per k step);
//! the panels and the split into tasks are [`super::panels`]'.

use std::arch::x86_64::*;

use super::panels::{micro_for_rows, Call, Kernel, Panels};
use super::simd::Level;

/// Output columns per panel (two ymm registers, one cache line).
const NR: usize = 16;
/// Output rows per micro-kernel call: of the 16 ymm registers, 12 hold the accumulators, two
/// the weights of one depth, one the broadcast.
const MR: usize = 6;
/// How many k steps ahead the kernel prefetches its weight panel into L1, and into L2: the
/// same distances in bytes as the AVX-512 kernel's (2 and 12 KiB), whose panels are twice as
/// wide.
const PREFETCH: usize = 32;
const FAR_PREFETCH: usize = 192;

/// `W` `[k, n]` as column panels of [`NR`] (each k step one aligned line).
pub type PackedWeights = Panels<NR>;

/// The kernel. Tasks of at most 144 rows: their `x` (144 KiB at a depth of 256) and a chunk of
/// 16 panels (256 KiB) stay in L2 together even where it is 512 KiB (AMD Zen 1 and 2).
pub const KERNEL: Kernel<NR> =
    // SAFETY: `micro` needs AVX2 and FMA, which level Avx2 means; it takes 1 to MR rows.
    unsafe { Kernel::new(Level::Avx2, micro, MR, 144, 16) };

micro_for_rows!(kernel: 6 5 4 3 2 1);

/// Lane masks for a panel cut short by n: `MASK[8 - j..]` enables the first `j` lanes.
const MASK: [i32; 16] = [-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0];

/// The micro-kernel for `R` rows (see [`Call`]).
///
/// # Safety
/// `call` is valid for `R` rows; the CPU has AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
unsafe fn kernel<const R: usize>(call: Call) {
    let Call {
        a,
        lda,
        k,
        b,
        c,
        ldc,
        cols,
        first,
    } = call;
    // The output rows (or the residual's) are read once per call, after the k loop: fetch
    // them during it. (A first pass without a residual reads neither.)
    let read = first.map_or(c.cast_const(), |o| o.residual);
    if !read.is_null() {
        for r in 0..R {
            _mm_prefetch::<_MM_HINT_T0>(read.add(r * ldc).cast());
        }
    }
    let mut acc = [[_mm256_setzero_ps(); 2]; R];
    for kk in 0..k {
        _mm_prefetch::<_MM_HINT_T0>(b.wrapping_add((kk + PREFETCH) * NR).cast());
        _mm_prefetch::<_MM_HINT_T1>(b.wrapping_add((kk + FAR_PREFETCH) * NR).cast());
        let b0 = _mm256_load_ps(b.add(kk * NR));
        let b1 = _mm256_load_ps(b.add(kk * NR + 8));
        for (r, acc) in acc.iter_mut().enumerate() {
            let av = _mm256_broadcast_ss(&*a.add(r * lda + kk));
            acc[0] = _mm256_fmadd_ps(av, b0, acc[0]);
            acc[1] = _mm256_fmadd_ps(av, b1, acc[1]);
        }
    }
    // Whole panels use plain loads and stores: masked stores are slow on AMD (microcoded).
    let masks = (cols < NR).then(|| {
        let lanes = |j: usize| _mm256_loadu_si256(MASK[8 - j.min(8)..].as_ptr().cast());
        [lanes(cols), lanes(cols.saturating_sub(8))]
    });
    // Masked lanes are not accessed, so `p + 8` may lie past the row's end when cols <= 8.
    let load = |p: *const f32| match masks {
        None => [_mm256_loadu_ps(p), _mm256_loadu_ps(p.add(8))],
        Some([m0, m1]) => [
            _mm256_maskload_ps(p, m0),
            _mm256_maskload_ps(p.wrapping_add(8), m1),
        ],
    };
    let first = first.map(|o| (o, load(o.bias)));
    for (r, acc) in acc.iter().enumerate() {
        let row = c.add(r * ldc);
        let base = match first {
            Some((o, b)) if !o.residual.is_null() => {
                let res = load(o.residual.add(r * ldc));
                [_mm256_add_ps(b[0], res[0]), _mm256_add_ps(b[1], res[1])]
            }
            Some((_, b)) => b,
            None => load(row),
        };
        let sum = [
            _mm256_add_ps(base[0], acc[0]),
            _mm256_add_ps(base[1], acc[1]),
        ];
        match masks {
            None => {
                _mm256_storeu_ps(row, sum[0]);
                _mm256_storeu_ps(row.add(8), sum[1]);
            }
            Some([m0, m1]) => {
                _mm256_maskstore_ps(row, m0, sum[0]);
                _mm256_maskstore_ps(row.wrapping_add(8), m1, sum[1]);
            }
        }
    }
}
