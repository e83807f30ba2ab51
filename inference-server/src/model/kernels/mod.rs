//! Hand-written CPU kernels for the spots where chaining candle ops costs copies and thread
//! barriers (see docs/benchmarks.md, "Model engine").

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
pub mod amx;
pub mod attention;
#[cfg(target_arch = "x86_64")]
pub mod avx512;
pub mod linear;
pub mod math;
pub mod norm;
