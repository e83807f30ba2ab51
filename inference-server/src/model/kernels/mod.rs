//! Hand-written CPU kernels for the spots where chaining candle ops costs copies and thread
//! barriers (see docs/benchmarks.md, "Model engine").

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
pub mod amx;
pub mod attention;
#[cfg(target_arch = "x86_64")]
pub mod avx2;
#[cfg(target_arch = "x86_64")]
pub mod avx512;
pub mod int8;
#[cfg(target_arch = "x86_64")]
mod int8_x86;
pub mod linear;
pub mod math;
pub mod memory;
pub mod norm;
#[cfg(target_arch = "x86_64")]
mod panels;
pub mod simd;

/// What a matmul's output starts from before `x · W` is added: `bias` (`[n]`) plus, when
/// given, `residual` (`[rows, n]`, row-major). The kernels add it as they write each output
/// block, so the output is written once and its old contents are never read.
#[derive(Clone, Copy)]
pub struct Start<'a> {
    pub bias: &'a [f32],
    pub residual: Option<&'a [f32]>,
}

impl Start<'_> {
    /// Panics unless the bias holds `n` values and the residual, when given, `rows * n`.
    pub fn check(&self, rows: usize, n: usize) {
        assert_eq!(self.bias.len(), n, "bias size");
        if let Some(res) = self.residual {
            assert_eq!(res.len(), rows * n, "residual size");
        }
    }
}

/// An output buffer shared by parallel tasks that each write their own disjoint part of it.
#[derive(Clone, Copy)]
pub(crate) struct SharedOut(*mut f32);
// SAFETY: only a pointer; the kernels give every task a disjoint part of the buffer.
unsafe impl Send for SharedOut {}
unsafe impl Sync for SharedOut {}

impl SharedOut {
    pub(crate) fn new(buf: &mut [f32]) -> Self {
        Self(buf.as_mut_ptr())
    }

    /// Through a method, so that closures capture the whole (`Sync`) value, not its pointer.
    pub(crate) fn at(self, offset: usize) -> *mut f32 {
        self.0.wrapping_add(offset)
    }
}

/// Deterministic pseudo-random inputs in `[-amplitude, amplitude)` for the kernels' tests.
#[cfg(test)]
pub(crate) fn test_values(n: usize, seed: u64, amplitude: f32) -> Vec<f32> {
    let step = |s: u64| {
        s.wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407)
    };
    let mut s = step(seed);
    (0..n)
        .map(|_| {
            s = step(s);
            ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * amplitude
        })
        .collect()
}

/// The largest `|got - want|`, infinite where either is NaN (`f64::max` would drop it, and a
/// NaN is what an element the kernel never wrote shows).
#[cfg(test)]
pub(crate) fn max_abs_diff(pairs: impl Iterator<Item = (f64, f64)>) -> f64 {
    pairs
        .map(|(got, want)| (got - want).abs())
        .fold(0.0, |worst, d| {
            if d.is_nan() {
                f64::INFINITY
            } else {
                worst.max(d)
            }
        })
}
