//! Large buffers (weights, activations) on transparent huge pages where the OS offers them for
//! the asking (Linux with THP in `madvise` mode, the common default): with 4 KiB pages a
//! BERT-base batch's activations and weights span tens of thousands of pages, more than the
//! TLB holds, and the page walks halved the matmul's speed (4096 x 768 x 3072: 150 -> 290
//! GFLOP/s on two cores).

/// Size of an x86-64 huge page; smaller buffers gain nothing.
const HUGE_PAGE: usize = 2 << 20;

/// An empty vector with room for `capacity` values, whose memory is advised to use huge pages
/// when it is large. Fill it with `extend` / `resize`: the pages are only allocated then.
pub fn buffer<T>(capacity: usize) -> Vec<T> {
    let mut v = Vec::with_capacity(capacity);
    let bytes = capacity * size_of::<T>();
    if bytes >= 2 * HUGE_PAGE {
        advise_huge_pages(v.as_mut_ptr() as usize, bytes);
    }
    v
}

/// Makes `v` hold `len` values of unspecified contents (its old values where it held some,
/// defaults past them), for a caller that overwrites them all: a buffer reused from layer to
/// layer is then neither reallocated (page faults) nor cleared (a pass over memory).
pub fn resize_for_overwrite<T: Clone + Default>(v: &mut Vec<T>, len: usize) {
    if v.capacity() < len {
        *v = buffer(len);
    }
    v.resize(len, T::default());
}

/// `buffer` filled with `value`.
pub fn filled<T: Clone>(len: usize, value: T) -> Vec<T> {
    let mut v = buffer(len);
    v.resize(len, value);
    v
}

#[cfg(target_os = "linux")]
fn advise_huge_pages(addr: usize, bytes: usize) {
    // Only whole huge pages inside the allocation can be advised.
    let start = addr.next_multiple_of(HUGE_PAGE);
    let end = (addr + bytes) / HUGE_PAGE * HUGE_PAGE;
    if end > start {
        // SAFETY: the range lies inside memory this process owns (the vector's allocation);
        // MADV_HUGEPAGE changes how it is backed, never its contents. Failure (no THP) is fine.
        unsafe {
            libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE);
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn advise_huge_pages(_addr: usize, _bytes: usize) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_hold_what_is_put_in_them() {
        for len in [0, 1, 1000, 3 << 20] {
            let mut v: Vec<f32> = buffer(len);
            assert!(v.is_empty() && v.capacity() >= len);
            v.extend((0..len).map(|i| i as f32));
            assert!(v.iter().enumerate().all(|(i, &x)| x == i as f32));
            assert_eq!(filled(len, 7u16), vec![7u16; len]);
        }
    }
}
