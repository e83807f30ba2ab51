//! Hand-written CPU kernels for the spots where chaining candle ops costs copies and thread
//! barriers (see docs/benchmarks.md, "Model engine").

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
pub mod amx;
pub mod attention;
#[cfg(target_arch = "x86_64")]
pub mod avx512;
pub mod linear;
pub mod math;
pub mod memory;
pub mod norm;

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
