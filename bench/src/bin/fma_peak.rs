//! The f32 FMA peak of this machine's cores, measured: each thread runs independent chains of
//! fused multiply-adds on the widest vectors the CPU has (AVX-512, else AVX2 + FMA; at most
//! `NLU_KERNEL`'s, like the encoder's kernels), enough chains to hide the FMA latency on every
//! FMA port, for `--seconds`. `bench/side_by_side.py`
//! divides the encoder's FLOP rate by it for "% of fp32 peak", so that figure holds on every
//! CPU kind instead of assuming one machine's peak.
//!
//! `cargo run --release -p nlu-bench --bin fma_peak -- [--threads N] [--seconds S] [--json]`

use std::time::{Duration, Instant};

use anyhow::Result;
use clap::Parser;
use nlu_server::model::kernels::simd::{Level, Simd};
use serde_json::json;

#[derive(Parser)]
#[command(about = "Measures the CPU's f32 FMA peak (GFLOP/s)")]
struct Args {
    /// Threads, one per core to measure (default: RAYON_NUM_THREADS, else every core).
    #[arg(long)]
    threads: Option<usize>,
    /// Seconds of measurement.
    #[arg(long, default_value_t = 2.0)]
    seconds: f64,
    /// Print one JSON object instead of a line of text.
    #[arg(long)]
    json: bool,
}

/// Iterations between clock reads: long enough that reading the clock costs nothing.
const ROUND: u64 = 1 << 20;

/// The vector width used and a round of `ROUND` iterations on it, returning the FLOPs done.
struct Isa {
    name: &'static str,
    round: fn() -> f64,
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::asm;

    use super::ROUND;

    /// A round: `x = x * 0.999999 + 1e-7` (bounded, never denormal) on each `$acc` register,
    /// `ROUND` times; with the number of those chains. AVX-512 runs 16 (two FMA ports x 4 cycles
    /// of latency need 8; more cost nothing), AVX2 12 (16 ymm registers hold them and the two
    /// constants).
    /// Assembly, not intrinsics: from an array of accumulators LLVM kept one chain on the stack
    /// and rotated the others through register moves every step, so the loop measured a
    /// store-to-load chain (half the FMA peak on an AMD EPYC of family 26) instead of the FMAs.
    macro_rules! fma_round {
        ($feature:literal, $a:tt, $b:tt, [$($acc:tt),+]) => {{
            #[target_feature(enable = $feature)]
            unsafe fn round() {
                let (a, b, one) = (0.999_999f32, 1e-7f32, 1.0f32);
                asm!(
                    concat!("vbroadcastss ", $a, ", [{a}]"),
                    concat!("vbroadcastss ", $b, ", [{b}]"),
                    $(concat!("vbroadcastss ", $acc, ", [{one}]"),)+
                    "2:",
                    $(concat!("vfmadd213ps ", $acc, ", ", $a, ", ", $b),)+
                    "dec {n}",
                    "jnz 2b",
                    a = in(reg) &a,
                    b = in(reg) &b,
                    one = in(reg) &one,
                    n = inout(reg) ROUND => _,
                    out($a) _, out($b) _, $(out($acc) _,)+
                    options(nostack, readonly),
                );
            }
            (round as unsafe fn(), [$($acc),+].len())
        }};
    }

    pub fn avx512() -> f64 {
        let (round, chains) = fma_round!(
            "avx512f",
            "zmm16",
            "zmm17",
            [
                "zmm0", "zmm1", "zmm2", "zmm3", "zmm4", "zmm5", "zmm6", "zmm7", "zmm8", "zmm9",
                "zmm10", "zmm11", "zmm12", "zmm13", "zmm14", "zmm15"
            ]
        );
        // SAFETY: chosen only where the CPU has AVX-512F (`super::isa`, by `Simd`'s detection).
        unsafe { round() };
        (ROUND as usize * chains * 16 * 2) as f64
    }

    pub fn avx2() -> f64 {
        let (round, chains) = fma_round!(
            "avx2,fma",
            "ymm12",
            "ymm13",
            [
                "ymm0", "ymm1", "ymm2", "ymm3", "ymm4", "ymm5", "ymm6", "ymm7", "ymm8", "ymm9",
                "ymm10", "ymm11"
            ]
        );
        // SAFETY: chosen only where the CPU has AVX2 and FMA (`super::isa`, by `Simd`'s detection).
        unsafe { round() };
        (ROUND as usize * chains * 8 * 2) as f64
    }
}

/// The FMA of the SIMD level the encoder's kernels run (the widest this CPU has, capped by
/// `NLU_KERNEL` as theirs is), or `None` (no x86 FMA: nothing to measure).
fn isa() -> Option<Isa> {
    match Simd::best().level() {
        #[cfg(target_arch = "x86_64")]
        Level::Avx512 => Some(Isa {
            name: "avx512f",
            round: x86::avx512,
        }),
        #[cfg(target_arch = "x86_64")]
        Level::Avx2 => Some(Isa {
            name: "avx2+fma",
            round: x86::avx2,
        }),
        _ => None,
    }
}

/// FLOP/s of one thread running `round` for `budget` (after one warm-up round).
fn per_thread(round: fn() -> f64, budget: Duration) -> f64 {
    round();
    let started = Instant::now();
    let mut flops = 0.0;
    while started.elapsed() < budget {
        flops += round();
    }
    flops / started.elapsed().as_secs_f64()
}

fn main() -> Result<()> {
    let args = Args::parse();
    nlu_bench::log_warnings();
    let Some(isa) = isa() else {
        anyhow::bail!("this CPU has neither AVX-512F nor AVX2 + FMA: no FMA peak to measure");
    };
    let threads = args.threads.unwrap_or_else(|| {
        std::env::var("RAYON_NUM_THREADS")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
    });
    let budget = Duration::from_secs_f64(args.seconds);
    let flops: f64 = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| s.spawn(|| per_thread(isa.round, budget)))
            .collect();
        workers.into_iter().map(|w| w.join().expect("worker")).sum()
    });
    let gflops = flops / 1e9;
    if args.json {
        println!(
            "{}",
            json!({ "kind": "peak", "isa": isa.name, "threads": threads, "gflops": gflops })
        );
    } else {
        println!(
            "f32 FMA peak: {gflops:.1} GFLOP/s ({threads} threads, {})",
            isa.name
        );
    }
    Ok(())
}
