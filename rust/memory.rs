//! A hint to the operating system about large output buffers.

/// The transparent huge page size of x86_64 and most aarch64 Linux kernels.
#[cfg(target_os = "linux")]
const HUGE_PAGE: usize = 2 << 20;

/// Asks Linux to back the whole 2 MB pages inside `out` with transparent
/// huge pages. An output tensor is often memory the process has not written
/// yet (a fresh mapping, or heap the allocator just grew), which the
/// kernel's first writes fault in 4 KB at a time; with the hint it takes
/// 2 MB at a time, a fraction of the faults. When the memory is already
/// backed, the hint costs one system call. Changes no value; on other
/// systems, for buffers smaller than a huge page, or when the kernel
/// refuses, nothing happens.
pub fn prefer_huge_pages<T>(out: &mut [T]) {
    #[cfg(target_os = "linux")]
    {
        use std::ffi::{c_int, c_void};
        extern "C" {
            fn madvise(addr: *mut c_void, len: usize, advice: c_int) -> c_int;
        }
        const MADV_HUGEPAGE: c_int = 14;
        let bytes = std::mem::size_of_val(out);
        if bytes < HUGE_PAGE {
            return;
        }
        let start = out.as_mut_ptr() as usize;
        let lo = start.next_multiple_of(HUGE_PAGE);
        let hi = (start + bytes) / HUGE_PAGE * HUGE_PAGE;
        if hi > lo {
            // SAFETY: `lo .. hi` lies inside `out`, memory this process owns
            // and may write; MADV_HUGEPAGE changes only how the kernel backs
            // those pages (their contents are kept), and an error leaves
            // them as they were, so the result is ignored.
            unsafe { madvise(lo as *mut c_void, hi - lo, MADV_HUGEPAGE) };
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = out;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hint keeps what the buffer holds (a wrong advice such as
    /// MADV_DONTNEED would zero it), whatever its alignment.
    #[test]
    fn the_hint_keeps_the_contents() {
        let mut v: Vec<u32> = (0..(40u32 << 18) + 7)
            .map(|i| i.wrapping_mul(2_654_435_761))
            .collect();
        let want = v.clone();
        prefer_huge_pages(&mut v[3..]);
        prefer_huge_pages(&mut v);
        assert!(v == want);
        let mut small = vec![1u8; 4096];
        prefer_huge_pages(&mut small);
        assert!(small.iter().all(|&b| b == 1));
    }
}
