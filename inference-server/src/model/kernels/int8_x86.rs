//! The int8 micro-kernels ([`super::int8`] has the formats and the driver): each sums u8 x i8
//! products of 4-deep k groups into i32 lanes, one lane per output column.
//!
//! - **AVX-512 VNNI** (Intel Ice Lake and later, AMD Zen 4): `vpdpbusd` does 64 multiply-adds
//!   into 16 i32 lanes in one instruction. A call covers 12 rows x two panels (24 of the 32 zmm
//!   registers accumulate), so each broadcast of 4 activation bytes serves two instructions.
//! - **AVX-VNNI** (Intel Alder Lake and Sierra Forest, AMD Zen 5: CPUs with it but without
//!   AVX-512 VNNI are the ones that run it): the same `vpdpbusd` on ymm, 32 multiply-adds per
//!   instruction where AVX2 needs two multiplies. A call covers 6 rows x one panel (12 of the 16
//!   ymm registers accumulate).
//! - **AVX2** (every x86-64 server CPU since 2013): `vpmaddubsw` multiplies 32 u8 x i8 pairs and
//!   adds neighbours into i16 (the weights' 7-bit range keeps that exact), `vpmaddwd` by ones
//!   widens to i32. A call covers 4 rows x one panel (8 ymm accumulators, and room for the
//!   products in flight).

use std::arch::x86_64::*;

use super::int8::{Call, Kernel, GROUP, TILE_COLS};
use super::simd::{Cap, Level};

/// VNNI rows per call.
const VNNI_ROWS: usize = 12;
/// AVX-VNNI rows per call.
const AVX_VNNI_ROWS: usize = 6;
/// AVX2 rows per call.
const AVX2_ROWS: usize = 4;

// SAFETY: `vnni_micro` needs AVX-512F and AVX-512 VNNI, which `vnni_runs` checks; it computes
// two panels for 1 to 12 rows.
pub static VNNI: Kernel = unsafe {
    Kernel::new(
        "avx512-vnni",
        vnni_micro,
        VNNI_ROWS,
        2,
        Cap::Avx512,
        vnni_runs,
    )
};

// SAFETY: `avx_vnni_micro` needs AVX2 and AVX-VNNI, which `avx_vnni_runs` checks; it computes
// one panel for 1 to 6 rows.
pub static AVX_VNNI: Kernel = unsafe {
    Kernel::new(
        "avx-vnni",
        avx_vnni_micro,
        AVX_VNNI_ROWS,
        1,
        Cap::AvxVnni,
        avx_vnni_runs,
    )
};

// SAFETY: `avx2_micro` needs AVX2, which `Level::Avx2.runs` checks; it computes one panel for 1
// to 4 rows.
pub static AVX2: Kernel =
    unsafe { Kernel::new("avx2", avx2_micro, AVX2_ROWS, 1, Cap::Avx2, avx2_runs) };

/// Fastest first.
pub static KERNELS: [&Kernel; 3] = [&VNNI, &AVX_VNNI, &AVX2];

fn vnni_runs() -> bool {
    Level::Avx512.runs() && is_x86_feature_detected!("avx512vnni")
}

fn avx_vnni_runs() -> bool {
    Level::Avx2.runs() && is_x86_feature_detected!("avxvnni")
}

fn avx2_runs() -> bool {
    Level::Avx2.runs()
}

super::panels::micro_for_rows!(vnni_micro = vnni(Call): 12 11 10 9 8 7 6 5 4 3 2 1);
super::panels::micro_for_rows!(avx_vnni_micro = avx_vnni(Call): 6 5 4 3 2 1);
super::panels::micro_for_rows!(avx2_micro = avx2(Call): 4 3 2 1);

/// The 4 activation bytes of row `r`, k group `s`, in every i32 lane's place.
///
/// # Safety
/// The call's `a` holds row `r`'s group `s`.
#[inline(always)]
unsafe fn group(call: &Call, r: usize, s: usize) -> i32 {
    call.a
        .add(r * call.lda + s * GROUP)
        .cast::<i32>()
        .read_unaligned()
}

/// # Safety
/// `call` is valid for `R` rows and two panels (see [`Call`]); the CPU has AVX-512F and VNNI.
#[target_feature(enable = "avx512f,avx512vnni")]
unsafe fn vnni<const R: usize>(call: Call) {
    let (first, second) = (call.b, call.b.add(call.panel_lines));
    let mut acc = [[_mm512_setzero_si512(); 2]; R];
    for s in 0..call.steps {
        let b0 = _mm512_load_si512(first.add(s).cast());
        let b1 = _mm512_load_si512(second.add(s).cast());
        for (r, acc) in acc.iter_mut().enumerate() {
            let a = _mm512_set1_epi32(group(&call, r, s));
            acc[0] = _mm512_dpbusd_epi32(acc[0], a, b0);
            acc[1] = _mm512_dpbusd_epi32(acc[1], a, b1);
        }
    }
    for (r, acc) in acc.iter().enumerate() {
        let row = call.tile.add(r).cast::<i32>();
        _mm512_storeu_si512(row.cast(), acc[0]);
        _mm512_storeu_si512(row.add(TILE_COLS / 2).cast(), acc[1]);
    }
}

/// # Safety
/// `call` is valid for `R` rows and one panel (see [`Call`]); the CPU has AVX2 and AVX-VNNI.
#[target_feature(enable = "avx2,avxvnni")]
unsafe fn avx_vnni<const R: usize>(call: Call) {
    one_panel::<R>(call, |acc, a, b| _mm256_dpbusd_avx_epi32(acc, a, b));
}

/// # Safety
/// `call` is valid for `R` rows and one panel (see [`Call`]); the CPU has AVX2.
#[target_feature(enable = "avx2")]
unsafe fn avx2<const R: usize>(call: Call) {
    let ones = _mm256_set1_epi16(1);
    one_panel::<R>(call, |acc, a, b| {
        _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(a, b), ones))
    });
}

/// The ymm kernels' loop: for one panel (two ymm of 8 lanes) and `R` rows, `acc = add(acc, a,
/// b)` over every 4-deep k step (`a`: the row's 4 bytes in every lane, `b`: the panel's line),
/// then the sums to the call's tile. Inlined into each kernel, so `add` is its instructions.
///
/// # Safety
/// `call` is valid for `R` rows and one panel (see [`Call`]); the CPU has AVX2 and what `add`
/// uses.
#[inline(always)]
unsafe fn one_panel<const R: usize>(
    call: Call,
    add: impl Fn(__m256i, __m256i, __m256i) -> __m256i,
) {
    let mut acc = [[_mm256_setzero_si256(); 2]; R];
    for s in 0..call.steps {
        let line = call.b.add(s).cast::<__m256i>();
        let (b0, b1) = (_mm256_load_si256(line), _mm256_load_si256(line.add(1)));
        for (r, acc) in acc.iter_mut().enumerate() {
            let a = _mm256_set1_epi32(group(&call, r, s));
            acc[0] = add(acc[0], a, b0);
            acc[1] = add(acc[1], a, b1);
        }
    }
    for (r, acc) in acc.iter().enumerate() {
        let row = call.tile.add(r).cast::<i32>();
        _mm256_storeu_si256(row.cast(), acc[0]);
        _mm256_storeu_si256(row.add(8).cast(), acc[1]);
    }
}
