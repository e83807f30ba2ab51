//! The element-wise functions of the encoder (softmax, exact GELU) in a branch-free form the
//! compiler vectorises: libm's `expf`/`erff` are scalar calls, which made these loops a tenth of
//! the encoder's time. Each public function runs the build of the same code for the CPU's SIMD
//! level (AVX-512, AVX2 + FMA, or the baseline; [`super::simd`]).
//!
//! `exp`: range reduction to `r` in [-ln2/2, ln2/2] and a degree-6 Taylor polynomial (relative
//! error below 4e-7, a few ulp). `erf`: Abramowitz & Stegun 7.1.26 (absolute error below 1.5e-7).

use std::f32::consts::{FRAC_1_SQRT_2, LOG2_E};

use super::simd::{simd_builds, Simd};

/// `ln 2` split so that `n * LN2_HI` is exact for the `n` that occur.
const LN2_HI: f32 = 0.693_145_75;
const LN2_LO: f32 = 1.428_606_8e-6;

/// 1.5 * 2^23: adding it rounds to an integer (ties to even) and leaves that integer in the low
/// mantissa bits, with no float-to-int conversion (Rust's saturating `as i32` does not
/// vectorise).
const ROUND: f32 = 12_582_912.0;

#[inline(always)]
fn exp(x: f32) -> f32 {
    // Outside this range e^x over- or underflows f32 anyway.
    let x = x.clamp(-87.0, 88.0);
    let t = x * LOG2_E + ROUND;
    let n = t - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (1.0 / 2.0
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    // t's bits are 0x4B40_0000 + n: adding the bias and shifting leaves 2^n's exponent field.
    p * f32::from_bits(t.to_bits().wrapping_add(127) << 23)
}

#[inline(always)]
fn erf(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly = t
        * (0.254_829_6
            + t * (-0.284_496_74 + t * (1.421_413_7 + t * (-1.453_152 + t * 1.061_405_4))));
    (1.0 - poly * exp(-a * a)).copysign(x)
}

#[inline(always)]
fn gelu_generic(xs: &mut [f32]) {
    for v in xs {
        *v = 0.5 * *v * (1.0 + erf(*v * FRAC_1_SQRT_2));
    }
}

/// Sum and max over 16 lanes, so the loops vectorise (an in-order fold cannot).
#[inline(always)]
fn softmax_generic(r: &mut [f32]) {
    let mut lanes = [f32::NEG_INFINITY; 16];
    let mut chunks = r.chunks_exact(16);
    for c in &mut chunks {
        for (l, v) in lanes.iter_mut().zip(c) {
            *l = l.max(*v);
        }
    }
    let max = chunks
        .remainder()
        .iter()
        .chain(&lanes)
        .fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    for v in r.iter_mut() {
        *v = exp(*v - max);
    }
    let mut lanes = [0f32; 16];
    let mut chunks = r.chunks_exact(16);
    for c in &mut chunks {
        for (l, v) in lanes.iter_mut().zip(c) {
            *l += v;
        }
    }
    let sum: f32 = chunks.remainder().iter().chain(&lanes).sum();
    let inv = 1.0 / sum;
    for v in r.iter_mut() {
        *v *= inv;
    }
}

simd_builds! {
    /// [`gelu_erf_in_place`] at a given SIMD level.
    pub fn gelu_erf_on(xs: &mut [f32]) => gelu_generic
}

simd_builds! {
    /// [`softmax_in_place`] at a given SIMD level.
    pub fn softmax_on(r: &mut [f32]) => softmax_generic
}

/// In place: `0.5 x (1 + erf(x / √2))`, PyTorch's exact GELU.
pub fn gelu_erf_in_place(xs: &mut [f32]) {
    gelu_erf_on(Simd::best(), xs)
}

/// In place, max-subtracted like PyTorch's.
pub fn softmax_in_place(r: &mut [f32]) {
    softmax_on(Simd::best(), r)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// erf in f64 by its Taylor series (accurate to ~1e-11 for |x| <= 3.6).
    fn erf64(x: f64) -> f64 {
        let (mut term, mut sum) = (x, x);
        for n in 1..120 {
            term *= -x * x / n as f64;
            sum += term / (2 * n + 1) as f64;
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    }

    fn grid() -> impl Iterator<Item = f32> {
        (-5000..=5000).map(|i| i as f32 / 1000.0)
    }

    #[test]
    fn gelu_matches_the_exact_definition() {
        let want: Vec<f64> = grid()
            .map(|x| 0.5 * x as f64 * (1.0 + erf64(x as f64 / std::f64::consts::SQRT_2)))
            .collect();
        for simd in Simd::supported() {
            let level = simd.level().name();
            let mut xs: Vec<f32> = grid().collect();
            gelu_erf_on(simd, &mut xs);
            let worst = xs
                .iter()
                .zip(&want)
                .map(|(&g, w)| (g as f64 - w).abs())
                .fold(0.0, f64::max);
            assert!(worst < 1e-6, "{level}: max abs diff {worst}");
            // Far tails: x and 0.
            let mut tails = [30.0f32, -30.0, 1e4, -1e4];
            gelu_erf_on(simd, &mut tails);
            assert_eq!(tails, [30.0, -0.0, 1e4, -0.0], "{level}");
        }
    }

    #[test]
    fn exp_is_within_a_few_ulp() {
        for x in grid().map(|x| x * 17.0) {
            let (got, want) = (exp(x) as f64, (x as f64).exp());
            assert!(
                ((got - want) / want).abs() < 4e-7,
                "exp({x}) = {got}, want {want}"
            );
        }
    }

    #[test]
    fn softmax_matches_the_definition_for_odd_lengths() {
        for (simd, n) in
            Simd::supported().flat_map(|s| [1, 2, 15, 16, 17, 100, 513].map(|n| (s, n)))
        {
            let mut r: Vec<f32> = (0..n).map(|i| ((i * 37) % 23) as f32 / 3.0 - 4.0).collect();
            let max = r.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
            let e: Vec<f64> = r.iter().map(|&v| (v as f64 - max).exp()).collect();
            let z: f64 = e.iter().sum();
            softmax_on(simd, &mut r);
            for (got, e) in r.iter().zip(&e) {
                let level = simd.level().name();
                assert!((*got as f64 - e / z).abs() < 1e-6, "{level}: n = {n}");
            }
        }
    }
}
