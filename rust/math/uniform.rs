//! The uniform mapping: random words to a value `v` in the open interval
//! (0, 1), resolved finely near 0 (the noise formulas put the winning tail
//! of the Gumbel and logistic distributions at small `v`), and the filling
//! of ranges of a stream in groups of uniforms that share their Philox blocks.

use super::sel;
use crate::rng::Stream;

/// float32 uniform from one 32-bit word: `v = (w >> 1) * 2^-31` rounded to
/// float32 (fine near 0), clamped into [2^-32, 1 - 2^-24].
#[inline(always)]
pub fn uniform_f32(w: u32) -> f32 {
    let v = ((w >> 1) as i32 as f32) * (1.0 / 2_147_483_648.0);
    let v = sel(v < 2.328_306_4e-10, 2.328_306_4e-10, v); // 2^-32
    sel(v > 0.999_999_94, 0.999_999_94, v) // 1 - 2^-24
}

/// float64 uniform from one 64-bit word: `v = (w >> 12 + 1/2) * 2^-52`, exact,
/// in [2^-53, 1 - 2^-53].
#[inline(always)]
pub fn uniform_f64(w: u64) -> f64 {
    ((w >> 12) as f64 + 0.5) * (1.0 / 4_503_599_627_370_496.0)
}

/// The last group of uniforms computed for a partial range (64 float32 or
/// 32 float64 values), valid for one stream.
#[derive(Clone, Debug)]
pub struct GroupCache<T> {
    group: u64,
    values: [T; 64],
}

impl<T: Default + Copy> GroupCache<T> {
    pub fn new() -> Self {
        GroupCache {
            group: u64::MAX,
            values: [T::default(); 64],
        }
    }
}

impl<T: Default + Copy> Default for GroupCache<T> {
    fn default() -> Self {
        Self::new()
    }
}

/// Fills `out` with elements `start ..` of a stream whose elements come in
/// groups of `N` computed together by `group(g, dst)`: full groups are
/// written in place, partial ones (at the ends) through a buffer.
///
/// `group` is a function item marked `#[inline(always)]` (not a closure), so
/// it is compiled into the caller's instruction set.
#[inline(always)]
pub(crate) fn for_groups<T: Copy + Default, const N: usize>(
    stream: &Stream,
    start: u64,
    out: &mut [T],
    group: fn(&Stream, u64, &mut [T; N]),
    cache: &mut GroupCache<T>,
) {
    let n = N as u64;
    let mut t = 0;
    let mut i = start;
    while t < out.len() {
        let g = i / n;
        let lo = (i % n) as usize;
        let len = (N - lo).min(out.len() - t);
        if len == N {
            let dst: &mut [T; N] = (&mut out[t..t + N]).try_into().expect("N elements");
            group(stream, g, dst);
        } else {
            let buf: &mut [T; N] = (&mut cache.values[..N]).try_into().expect("N <= 64");
            if cache.group != g {
                group(stream, g, buf);
                cache.group = g;
            }
            out[t..t + len].copy_from_slice(&buf[lo..lo + len]);
        }
        t += len;
        i += len as u64;
    }
}

/// float32 uniforms `64g .. 64g + 64`: from the 16 blocks `16g .. 16g + 16`.
#[inline(always)]
pub(crate) fn group_f32(stream: &Stream, g: u64, dst: &mut [f32; 64]) {
    let w = stream.blocks16(16 * g);
    for j in 0..16 {
        for k in 0..4 {
            dst[4 * j + k] = uniform_f32(w[k][j]);
        }
    }
}

/// float64 uniforms `32g .. 32g + 32`: from the 16 blocks `16g .. 16g + 16`.
#[inline(always)]
pub(crate) fn group_f64(stream: &Stream, g: u64, dst: &mut [f64; 32]) {
    let w = stream.blocks16(16 * g);
    for j in 0..16 {
        for k in 0..2 {
            let lo = u64::from(w[2 * k][j]);
            let hi = u64::from(w[2 * k + 1][j]);
            dst[2 * j + k] = uniform_f64(lo | (hi << 32));
        }
    }
}
