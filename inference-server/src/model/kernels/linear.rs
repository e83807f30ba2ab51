//! `x · W + b (+ residual)`, optionally followed by GELU (erf), in one output buffer: the
//! matmul kernels add the bias (plus the residual) as they first write each output block, and
//! GELU runs in place on finished pieces, where candle's `matmul` + `broadcast_add` + `add` /
//! `gelu_erf` makes more passes and more tensors. The matmul is the AVX-512 kernel
//! ([`super::avx512`]), the AVX2 + FMA one ([`super::avx2`]) on CPUs without AVX-512, gemm's on
//! CPUs with neither, for `--dtype bf16` the AMX kernel ([`super::amx`]), for `--dtype int8` an
//! int8 one ([`super::int8`]).

use gemm::{gemm, Parallelism};
use rayon::prelude::*;

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
use super::amx;
use super::math::gelu_erf_in_place;
use super::memory::resize_for_overwrite;
use super::simd::{Level, Simd};
#[cfg(target_arch = "x86_64")]
use super::{avx2, avx512};
use super::{int8, Start};

/// What follows the affine map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    None,
    /// `0.5 x (1 + erf(x / √2))`, as candle's `gelu_erf` and PyTorch's exact GELU.
    GeluErf,
}

impl Activation {
    /// In place, on any piece of the output.
    fn apply(self, out: &mut [f32]) {
        if self == Self::GeluErf {
            gelu_erf_in_place(out);
        }
    }
}

/// The number format weights are stored and multiplied in: shared with the operator, which
/// writes it as `--dtype` from `spec.model.dtype`.
pub use nlu_crds::serve::Dtype;

/// A weight matrix `[k, n]` laid out once, at load time, for its matmul kernel.
pub enum Weights {
    /// f32 on AVX-512 ([`avx512`]), where the CPU has it.
    #[cfg(target_arch = "x86_64")]
    F32(avx512::PackedWeights),
    /// f32 on AVX2 + FMA ([`avx2`]), where the CPU has them and no AVX-512.
    #[cfg(target_arch = "x86_64")]
    F32Avx2(avx2::PackedWeights),
    /// f32 elsewhere: row-major `[k, n]`, which gemm reads without a transposed view.
    F32Portable { w_t: Vec<f32>, n: usize },
    /// bf16 on AMX tiles ([`amx`]), where the CPU has them.
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    Bf16(amx::PackedWeights),
    /// int8, quantised per column, on the int8 kernels ([`int8`]).
    Int8(int8::QuantWeights),
}

/// Whether this CPU runs `--dtype bf16` (AMX-BF16, and the kernel granted the tile permission)
/// within `NLU_KERNEL`'s cap: AMX comes with AVX-512 (which converts `x`), so a cap below it
/// leaves bf16 out, as the CPUs it stands for lack AMX.
pub fn bf16_available() -> bool {
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    return super::simd::cap() == super::simd::Cap::Avx512 && amx::available();
    #[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
    false
}

/// The dtype a model asked to run in `requested` runs in: bf16 only where [`bf16_available`],
/// int8 only where [`int8::available`], else f32 with the reason (for the caller to log), so the
/// server and the bench binaries fall back alike instead of reaching a kernel's panic.
pub fn runnable(requested: Dtype) -> (Dtype, Option<&'static str>) {
    match requested {
        Dtype::Bf16 if !bf16_available() => (
            Dtype::F32,
            Some(
                "--dtype bf16 needs a CPU with AMX-BF16 (and a kernel that grants it, and NLU_KERNEL unset or avx512); running f32",
            ),
        ),
        Dtype::Int8 if !int8::available() => (
            Dtype::F32,
            Some(
                "--dtype int8 needs a CPU with AVX2 and FMA (and NLU_KERNEL not gemm); running f32",
            ),
        ),
        _ => (requested, None),
    }
}

/// The matmul kernel the linear layers of a `dtype` model run on this CPU (what
/// [`Weights::new`] picks): `amx` (bf16), `avx512-vnni`, `avx-vnni` or `avx2` (int8), `avx512`
/// or `avx2` (f32), or `gemm` (f32 on CPUs with neither AVX-512 nor AVX2 + FMA; gemm picks its
/// own SIMD at run time). For a dtype this CPU cannot run, `none` ([`runnable`] says what runs instead).
pub fn kernel_path(dtype: Dtype) -> &'static str {
    match dtype {
        Dtype::Bf16 => "amx",
        Dtype::Int8 => int8::Kernel::best().map_or("none", |k| k.name),
        Dtype::F32 => f32_kernel(Simd::best()),
    }
}

/// The f32 matmul kernel [`Weights::f32_on`] picks for `simd`.
fn f32_kernel(simd: Simd) -> &'static str {
    match simd.level() {
        Level::Avx512 => "avx512",
        Level::Avx2 => "avx2",
        Level::Baseline => "gemm",
    }
}

impl Weights {
    /// `w_t`: `[k, n]` row-major. For bf16 and int8, the caller checks [`runnable`] first: their
    /// kernels panic on CPUs without them.
    pub fn new(w_t: Vec<f32>, k: usize, n: usize, dtype: Dtype) -> Self {
        assert_eq!(w_t.len(), k * n, "weight size");
        match dtype {
            Dtype::F32 => Self::f32_on(Simd::best(), w_t, k, n),
            #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
            Dtype::Bf16 => Self::Bf16(amx::PackedWeights::pack(&w_t, k, n)),
            #[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
            Dtype::Bf16 => panic!("--dtype bf16 needs Linux on an x86-64 CPU with AMX"),
            Dtype::Int8 => Self::Int8(int8::QuantWeights::pack(&w_t, k, n)),
        }
    }

    /// f32 weights for the matmul of SIMD level `simd` ([`Self::new`] picks the best; the
    /// tests each one the CPU runs).
    pub fn f32_on(simd: Simd, w_t: Vec<f32>, k: usize, n: usize) -> Self {
        assert_eq!(w_t.len(), k * n, "weight size");
        match simd.level() {
            #[cfg(target_arch = "x86_64")]
            Level::Avx512 => Self::F32(avx512::PackedWeights::pack(&w_t, k, n)),
            #[cfg(target_arch = "x86_64")]
            Level::Avx2 => Self::F32Avx2(avx2::PackedWeights::pack(&w_t, k, n)),
            _ => Self::F32Portable { w_t, n },
        }
    }

    pub fn k(&self) -> usize {
        match self {
            #[cfg(target_arch = "x86_64")]
            Self::F32(w) => w.k(),
            #[cfg(target_arch = "x86_64")]
            Self::F32Avx2(w) => w.k(),
            Self::F32Portable { w_t, n } => w_t.len() / n,
            #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
            Self::Bf16(w) => w.k(),
            Self::Int8(w) => w.k(),
        }
    }

    pub fn n(&self) -> usize {
        match self {
            #[cfg(target_arch = "x86_64")]
            Self::F32(w) => w.n(),
            #[cfg(target_arch = "x86_64")]
            Self::F32Avx2(w) => w.n(),
            Self::F32Portable { n, .. } => *n,
            #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
            Self::Bf16(w) => w.n(),
            Self::Int8(w) => w.n(),
        }
    }

    /// `out[rows, n] = act(x[rows, k] · W + b + residual)`; `out`'s old contents are not read.
    fn compute(
        &self,
        x: &[f32],
        rows: usize,
        b: &[f32],
        residual: Option<&[f32]>,
        out: &mut [f32],
        act: Activation,
    ) {
        let (k, n) = (self.k(), self.n());
        assert_eq!(x.len(), rows * k, "input size");
        assert_eq!(out.len(), rows * n, "output size");
        let start = Start { bias: b, residual };
        start.check(rows, n);
        match self {
            // The bias and residual enter as the kernels first write each output block, the
            // activation on each finished piece of output while it is in L1.
            #[cfg(target_arch = "x86_64")]
            Self::F32(w) => avx512::KERNEL.matmul_then(x, rows, w, start, out, |o| act.apply(o)),
            #[cfg(target_arch = "x86_64")]
            Self::F32Avx2(w) => avx2::KERNEL.matmul_then(x, rows, w, start, out, |o| act.apply(o)),
            #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
            Self::Bf16(w) => amx::matmul_then(x, rows, w, start, out, |o| act.apply(o)),
            Self::Int8(w) => int8::matmul_then(x, rows, w, start, out, |o| act.apply(o)),
            Self::F32Portable { w_t, .. } => {
                start_from(out, start);
                let threads = candle_core::utils::get_num_threads();
                let parallelism = if threads > 1 {
                    Parallelism::Rayon(threads)
                } else {
                    Parallelism::None
                };
                // SAFETY: the three buffers hold exactly [rows, n], [rows, k] and [k, n]
                // row-major values, as asserted above.
                unsafe {
                    gemm(
                        rows,
                        n,
                        k,
                        out.as_mut_ptr(),
                        1,
                        n as isize,
                        true,
                        x.as_ptr(),
                        1,
                        k as isize,
                        w_t.as_ptr(),
                        1,
                        n as isize,
                        1.0,
                        1.0,
                        false,
                        false,
                        false,
                        parallelism,
                    );
                }
                out.par_chunks_mut(n).for_each(|row| act.apply(row));
            }
        }
    }
}

/// `out = bias + residual`, row by row, for gemm, which accumulates into its output.
fn start_from(out: &mut [f32], Start { bias, residual }: Start) {
    let n = bias.len();
    // Written by all threads: a pass over a buffer this size is memory-bound.
    out.par_chunks_mut(n)
        .enumerate()
        .for_each(|(r, row)| match residual {
            Some(res) => {
                for ((o, b), r) in row.iter_mut().zip(bias).zip(&res[r * n..(r + 1) * n]) {
                    *o = b + r;
                }
            }
            None => row.copy_from_slice(bias),
        });
}

/// `x`: `[rows, k]`, `b`: `[n]`, `residual`: `[rows, n]`, all row-major; returns
/// `act(x · W + b + residual)`, `[rows, n]`.
pub fn linear(
    x: &[f32],
    w: &Weights,
    b: &[f32],
    residual: Option<&[f32]>,
    rows: usize,
    act: Activation,
) -> Vec<f32> {
    let mut out = Vec::new();
    linear_into(x, w, b, residual, rows, act, &mut out);
    out
}

/// [`linear`] into `out` (its old contents are never read): reusing one buffer across layers
/// spares the page faults of a fresh allocation per layer.
pub fn linear_into(
    x: &[f32],
    w: &Weights,
    b: &[f32],
    residual: Option<&[f32]>,
    rows: usize,
    act: Activation,
    out: &mut Vec<f32>,
) {
    resize_for_overwrite(out, rows * w.n());
    w.compute(x, rows, b, residual, out, act);
}

#[cfg(test)]
mod tests {
    use super::super::{max_abs_diff, test_values};
    use super::*;

    fn naive(
        x: &[f32],
        w_t: &[f32],
        b: &[f32],
        residual: Option<&[f32]>,
        rows: usize,
        act: Activation,
    ) -> Vec<f32> {
        let (k, n) = (x.len() / rows, b.len());
        let mut out = Vec::with_capacity(rows * n);
        for r in 0..rows {
            for c in 0..n {
                let v = b[c] as f64
                    + residual.map_or(0.0, |res| res[r * n + c] as f64)
                    + (0..k)
                        .map(|i| x[r * k + i] as f64 * w_t[i * n + c] as f64)
                        .sum::<f64>();
                out.push(match act {
                    Activation::None => v,
                    Activation::GeluErf => 0.5 * v * (1.0 + libm_erf(v / std::f64::consts::SQRT_2)),
                } as f32);
            }
        }
        out
    }

    /// erf in f64 by its Taylor series (|x| is small in these tests).
    fn libm_erf(x: f64) -> f64 {
        let (mut term, mut sum) = (x, x);
        for n in 1..80 {
            term *= -x * x / n as f64;
            sum += term / (2 * n + 1) as f64;
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    }

    #[test]
    fn matches_the_definition_on_odd_shapes() {
        for (rows, k, n) in [
            (1, 1, 1),
            (1, 7, 3),
            (5, 13, 17),
            (6, 9, 16),
            (33, 70, 65),
            (3, 384, 1536),
        ] {
            let res = test_values(rows * n, 4, 0.5);
            for (act, residual) in [
                (Activation::None, None),
                (Activation::GeluErf, None),
                (Activation::None, Some(res.as_slice())),
            ] {
                let (x, w, b) = (
                    test_values(rows * k, 1, 0.5),
                    test_values(k * n, 2, 0.5),
                    test_values(n, 3, 0.5),
                );
                let want = naive(&x, &w, &b, residual, rows, act);
                // Every kernel this CPU runs, not only the one `Weights::new` picks.
                for simd in Simd::supported() {
                    let weights = Weights::f32_on(simd, w.clone(), k, n);
                    let got = linear(&x, &weights, &b, residual, rows, act);
                    let worst =
                        max_abs_diff(got.iter().zip(&want).map(|(&g, &w)| (g.into(), w.into())));
                    assert!(
                        worst < 1e-4,
                        "{} {rows}x{k}x{n} {act:?} residual {}: max abs diff {worst}",
                        f32_kernel(simd),
                        residual.is_some()
                    );
                }
            }
        }
    }

    /// CPU time this process has used, all its threads, in seconds.
    fn cpu_seconds() -> f64 {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a timespec this call may write.
        unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
        ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
    }

    /// GFLOP/s (int8: GOP/s) of every f32 and int8 matmul kernel this CPU runs on encoder shapes (BERT-base at 8 x 128
    /// tokens, one 16-token query): the fastest run, and GFLOP per second of CPU time over all
    /// runs (per core, what the kernel does while it runs, whatever the neighbours on a shared
    /// machine take; rayon's idle spinning lowers it a little with several threads).
    /// `cargo test --release -p nlu-server --lib kernels::linear::tests::throughput -- --ignored --nocapture`
    #[test]
    #[ignore = "timing, run on demand"]
    fn throughput() {
        for (rows, k, n) in [
            (1024, 768, 2304),
            (1024, 768, 3072),
            (1024, 3072, 768),
            (16, 768, 2304),
            (16, 3072, 768),
        ] {
            let (x, w, b) = (
                test_values(rows * k, 1, 0.5),
                test_values(k * n, 2, 0.5),
                test_values(n, 3, 0.5),
            );
            let mut line = format!("{rows}x{k}x{n} GFLOP/s:");
            // Every f32 kernel, then every int8 one (its time includes quantising `x`).
            let mut kernels: Vec<(String, Box<dyn Fn()>)> = Vec::new();
            for simd in Simd::supported() {
                let weights = Weights::f32_on(simd, w.clone(), k, n);
                let (x, b) = (x.clone(), b.clone());
                kernels.push((
                    f32_kernel(simd).to_string(),
                    Box::new(move || {
                        std::hint::black_box(linear(
                            &x,
                            &weights,
                            &b,
                            None,
                            rows,
                            Activation::None,
                        ));
                    }),
                ));
            }
            for kernel in int8::Kernel::supported() {
                let weights = int8::QuantWeights::pack(&w, k, n);
                let (x, b) = (x.clone(), b.clone());
                kernels.push((
                    format!("int8-{}", kernel.name),
                    Box::new(move || {
                        let mut q = int8::QuantRows::default();
                        q.quantize(&x, rows, k);
                        let mut out = vec![0.0; rows * n];
                        let start = Start {
                            bias: &b,
                            residual: None,
                        };
                        kernel.matmul_then(&q, rows, &weights, start, &mut out, |_| {});
                        std::hint::black_box(out);
                    }),
                ));
            }
            for (name, run) in kernels {
                let flop = (2 * rows * k * n) as f64;
                let runs = ((2e10 / flop).ceil() as usize).max(8);
                let cpu_started = cpu_seconds();
                let times: Vec<f64> = (0..runs)
                    .map(|_| {
                        let started = std::time::Instant::now();
                        run();
                        started.elapsed().as_secs_f64()
                    })
                    .collect();
                let cpu = cpu_seconds() - cpu_started;
                let fastest = times.iter().copied().fold(f64::INFINITY, f64::min);
                line += &format!(
                    " {name} {:.0} ({:.0} per CPU-s)",
                    flop / fastest / 1e9,
                    flop * runs as f64 / cpu / 1e9
                );
            }
            eprintln!("{line}");
        }
    }
}
