//! Hand-written CPU kernels for the spots where chaining candle ops costs copies and thread
//! barriers (see docs/benchmarks.md, "Model engine").

pub mod amx;
pub mod attention;
pub mod avx512;
pub mod linear;
pub mod norm;
