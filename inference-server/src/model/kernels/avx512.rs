//! `out = bias (+ residual) + x · W` in f32 on AVX-512, against weights packed once at load
//! time: the default matmul of the encoder where the CPU has AVX-512 ([`super::avx2`] is the
//! one where it has AVX2 + FMA only, gemm, candle's matmul crate, the fallback elsewhere).
//!
//! The micro-kernel keeps a 14 x 32 block of the output in 28 zmm accumulators, on panels of
//! 32 columns (two zmm loads per k step); the panels and the split into tasks are
//! [`super::panels`]'.

use std::arch::x86_64::*;

use super::panels::{micro_for_rows, Call, Kernel, Panels};
use super::simd::Level;

/// Output columns per panel (two zmm registers).
const NR: usize = 32;
/// Output rows per micro-kernel call: 28 of the 32 zmm registers hold the accumulators, two
/// the weights of one depth, one the broadcast. (With 12 rows, 24 accumulators, the kernel
/// reached 85 % of the FMA peak on data in L1; with 14, 89 %.)
const MR: usize = 14;
/// How many k steps ahead the kernel prefetches its weight panel (into L1).
const PREFETCH: usize = 16;
/// How many k steps ahead it also prefetches into L2 (12 KiB): short batches stream their
/// weights from memory, and the L1 distance alone left most of the memory latency exposed
/// (1 x 16 tokens, BERT-base: 22.9 -> 21.3 ms; 48 and 192 steps were slower).
const FAR_PREFETCH: usize = 96;

/// `W` `[k, n]` as column panels of [`NR`] (each k step two aligned zmm loads).
pub type PackedWeights = Panels<NR>;

/// The kernel. Tasks of at most 240 rows: their `x` stays in L2 while chunks of 16 panels
/// (512 KiB) pass.
pub const KERNEL: Kernel<NR> =
    // SAFETY: `micro` needs AVX-512F, which level Avx512 means; it takes 1 to MR rows.
    unsafe { Kernel::new(Level::Avx512, micro, MR, 240, 16) };

micro_for_rows!(kernel: 14 13 12 11 10 9 8 7 6 5 4 3 2 1);

/// The micro-kernel for `R` rows (see [`Call`]).
///
/// # Safety
/// `call` is valid for `R` rows; the CPU has AVX-512F.
#[target_feature(enable = "avx512f")]
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
