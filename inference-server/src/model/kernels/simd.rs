//! Which build of the kernels runs: the widest SIMD level the CPU has, AVX-512 > AVX2 + FMA >
//! the x86-64 baseline (SSE2; the only level on other architectures), chosen at run time since
//! the crate is compiled for the baseline. A [`Simd`] value only comes from that detection, so
//! holding one is the proof a kernel needs before it calls its `#[target_feature]` build.
//!
//! `NLU_KERNEL` (`avx512`, `avx-vnni`, `avx2` or `gemm`: [`Cap`]) caps the level the engine
//! picks, read once: to measure the AVX2 path, or the baseline one (gemm for the matmuls), on a
//! CPU that has more.

use std::sync::OnceLock;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Baseline,
    Avx2,
    Avx512,
}

impl Level {
    pub fn name(self) -> &'static str {
        match self {
            Self::Avx512 => "avx512",
            Self::Avx2 => "avx2",
            Self::Baseline => "baseline",
        }
    }

    /// Whether this CPU runs the builds of this level.
    pub fn runs(self) -> bool {
        match self {
            #[cfg(target_arch = "x86_64")]
            Level::Avx512 => is_x86_feature_detected!("avx512f"),
            #[cfg(target_arch = "x86_64")]
            Level::Avx2 => is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"),
            #[cfg(not(target_arch = "x86_64"))]
            Level::Avx512 | Level::Avx2 => false,
            Level::Baseline => true,
        }
    }
}

/// A SIMD level this CPU runs (the field is private: only detection makes one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Simd(Level);

impl Simd {
    /// Every level this CPU runs, widest first; the last is the baseline. The kernels' tests run
    /// each of them.
    pub fn supported() -> impl Iterator<Item = Self> {
        [Level::Avx512, Level::Avx2, Level::Baseline]
            .into_iter()
            .filter(|level| level.runs())
            .map(Self)
    }

    /// The level the engine runs: the widest supported, at most `NLU_KERNEL`'s.
    pub fn best() -> Self {
        static BEST: OnceLock<Simd> = OnceLock::new();
        *BEST.get_or_init(|| {
            let cap = cap().level();
            Self::supported()
                .find(|s| s.0 <= cap)
                .unwrap_or(Self(Level::Baseline))
        })
    }

    pub fn level(self) -> Level {
        self.0
    }
}

/// Defines `$name(simd, args…)`: the `#[inline(always)]` function `$generic(args…)` compiled
/// for each SIMD level (the compiler vectorises the same code at that width), run at `simd`'s.
macro_rules! simd_builds {
    ($(#[$doc:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),*) => $generic:ident) => {
        $(#[$doc])*
        $vis fn $name(simd: $crate::model::kernels::simd::Simd, $($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx512f")]
            unsafe fn avx512($($arg: $ty),*) {
                $generic($($arg),*)
            }
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma")]
            unsafe fn avx2($($arg: $ty),*) {
                $generic($($arg),*)
            }
            use $crate::model::kernels::simd::Level;
            match simd.level() {
                // SAFETY: a `Simd` of this level only exists where the CPU has AVX-512F.
                #[cfg(target_arch = "x86_64")]
                Level::Avx512 => unsafe { avx512($($arg),*) },
                // SAFETY: a `Simd` of this level only exists where the CPU has AVX2 and FMA.
                #[cfg(target_arch = "x86_64")]
                Level::Avx2 => unsafe { avx2($($arg),*) },
                _ => $generic($($arg),*),
            }
        }
    };
}
pub(crate) use simd_builds;

/// What `NLU_KERNEL` lets run, lowest first: each value stands for a kind of CPU, so that one
/// with more can measure the paths of the others.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Cap {
    /// `gemm`: no x86 SIMD kernel of ours (gemm's matmul, the baseline builds).
    Gemm,
    /// `avx2`: AVX2 + FMA only, as on AMD EPYC before Zen 4.
    Avx2,
    /// `avx-vnni`: AVX2 + FMA and AVX-VNNI's int8 kernel, as on Intel Alder Lake or Sierra
    /// Forest.
    AvxVnni,
    /// `avx512`, or unset: everything the CPU has.
    Avx512,
}

impl Cap {
    /// The widest SIMD level (element-wise builds, f32 matmul) this cap allows.
    pub fn level(self) -> Level {
        match self {
            Self::Gemm => Level::Baseline,
            Self::Avx2 | Self::AvxVnni => Level::Avx2,
            Self::Avx512 => Level::Avx512,
        }
    }
}

/// `NLU_KERNEL`'s cap, read once: kernels above it do not run, whatever the CPU has.
pub fn cap() -> Cap {
    static CAP: OnceLock<Cap> = OnceLock::new();
    *CAP.get_or_init(cap_from_env)
}

/// `NLU_KERNEL`'s cap; none when unset, and a warning (not a failure: it is a benchmarking aid)
/// when it names none.
fn cap_from_env() -> Cap {
    match std::env::var("NLU_KERNEL").as_deref() {
        Err(_) | Ok("") | Ok("avx512") => Cap::Avx512,
        Ok("avx-vnni") => Cap::AvxVnni,
        Ok("avx2") => Cap::Avx2,
        Ok("gemm") => Cap::Gemm,
        Ok(other) => {
            tracing::warn!("NLU_KERNEL={other:?} is none of avx512, avx-vnni, avx2, gemm: ignored");
            Cap::Avx512
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    /// Lists the paths the kernels' tests ran and skipped on this CPU (they run every level of
    /// [`Simd::supported`]). Written to stderr directly, past the test harness's capture, so
    /// that a plain `cargo test` log (CI's) shows it.
    #[test]
    fn report_which_paths_the_kernel_tests_ran() {
        let ran: Vec<Level> = Simd::supported().map(Simd::level).collect();
        let names = |pick: &dyn Fn(&Level) -> bool| {
            let names: Vec<&str> = [Level::Avx512, Level::Avx2, Level::Baseline]
                .iter()
                .filter(|l| pick(l))
                .map(|l| l.name())
                .collect();
            match names.is_empty() {
                true => "none".to_string(),
                false => names.join(" "),
            }
        };
        let amx = match super::super::linear::bf16_available() {
            true => "amx (bf16) ran",
            false => "amx (bf16) skipped",
        };
        let int8: Vec<&str> = super::super::int8::Kernel::supported()
            .map(|k| k.name)
            .collect();
        let line = format!(
            "kernel paths tested: {}; skipped: {}; {amx}; int8 ran: {}\n",
            names(&|l| ran.contains(l)),
            names(&|l| !ran.contains(l)),
            if int8.is_empty() {
                "none".to_string()
            } else {
                int8.join(" ")
            },
        );
        std::io::stderr().write_all(line.as_bytes()).unwrap();
        assert_eq!(ran.last(), Some(&Level::Baseline));
    }
}
