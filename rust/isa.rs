//! Run-time choice of instruction set for the kernels.

use std::sync::atomic::{AtomicU8, Ordering};

const UNKNOWN: u8 = 0;
const PORTABLE: u8 = 1;
const FMA: u8 = 2;

static CHOICE: AtomicU8 = AtomicU8::new(UNKNOWN);

/// Whether kernels run their AVX2+FMA build.
#[inline]
pub fn fma() -> bool {
    match CHOICE.load(Ordering::Relaxed) {
        UNKNOWN => {
            let c = if detect() { FMA } else { PORTABLE };
            CHOICE.store(c, Ordering::Relaxed);
            c == FMA
        }
        c => c == FMA,
    }
}

#[cfg(target_arch = "x86_64")]
fn detect() -> bool {
    std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
}

#[cfg(not(target_arch = "x86_64"))]
fn detect() -> bool {
    false
}

/// Forces the portable build (`false`) or restores detection (`true`); the
/// results are bitwise the same either way, which tests check with this.
pub fn set_fma_allowed(allowed: bool) {
    let c = if allowed && detect() { FMA } else { PORTABLE };
    CHOICE.store(c, Ordering::Relaxed);
}
