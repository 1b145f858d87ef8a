//! Run-time choice of instruction set for the kernels.
//!
//! Every kernel is one generic source compiled three times: portable, with
//! AVX2+FMA, and with AVX-512 (F, BW, DQ, VL). The source uses only
//! operations that round the same way in every build (`mul_add` is a fused
//! multiply-add everywhere; nothing is reassociated), so the three builds
//! give bitwise-identical results; `tests/isa_parity.rs` checks it.

use std::sync::atomic::{AtomicU8, Ordering};

/// An instruction-set level the kernels are compiled for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Portable = 1,
    Avx2 = 2,
    Avx512 = 3,
}

static CHOICE: AtomicU8 = AtomicU8::new(0);
static CAP: AtomicU8 = AtomicU8::new(Level::Avx512 as u8);

fn from_u8(v: u8) -> Level {
    match v {
        3 => Level::Avx512,
        2 => Level::Avx2,
        _ => Level::Portable,
    }
}

#[cfg(target_arch = "x86_64")]
fn detect() -> Level {
    if std::is_x86_feature_detected!("avx512f")
        && std::is_x86_feature_detected!("avx512bw")
        && std::is_x86_feature_detected!("avx512dq")
        && std::is_x86_feature_detected!("avx512vl")
        && std::is_x86_feature_detected!("fma")
    {
        Level::Avx512
    } else if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
        Level::Avx2
    } else {
        Level::Portable
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn detect() -> Level {
    Level::Portable
}

/// The level kernels run at: the best the CPU supports, up to the cap.
#[inline]
pub fn level() -> Level {
    match CHOICE.load(Ordering::Relaxed) {
        0 => {
            let l = detect().min(from_u8(CAP.load(Ordering::Relaxed)));
            CHOICE.store(l as u8, Ordering::Relaxed);
            l
        }
        v => from_u8(v),
    }
}

/// The best level this CPU supports.
pub fn detected() -> Level {
    detect()
}

/// Caps the level kernels use (e.g. `Level::Portable` to compare builds, or
/// to measure what SIMD brings). The results are the same at every level.
pub fn set_max_level(cap: Level) {
    CAP.store(cap as u8, Ordering::Relaxed);
    CHOICE.store(detect().min(cap) as u8, Ordering::Relaxed);
}
