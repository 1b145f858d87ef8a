//! Lane reductions: sums, dot products and maxima kept in `LANES` partial
//! results (element `t` in lane `t % LANES`) and combined pairwise, so that
//! scalar and vector builds give the same bits.

use super::sel;

/// Sum of `LANES` partial sums, combined pairwise: `(l, l + LANES/2)`, then
/// `(l, l + LANES/4)`, ... — the order a vector horizontal add uses.
#[inline(always)]
pub fn combine_lanes<T: super::Real>(acc: &mut [T]) -> T {
    let mut width = acc.len();
    while width > 1 {
        width /= 2;
        for l in 0..width {
            acc[l] = acc[l] + acc[l + width];
        }
    }
    acc[0]
}

/// [`combine_lanes`] of a whole set of partial sums, in the same order,
/// held in registers: through memory, each reduction of a short row waited
/// on store-to-load forwarding. On x86_64 it uses SSE2 (part of the base
/// instruction set, so every build runs the same adds); elsewhere, and for
/// another number of lanes, it is `combine_lanes`.
pub(crate) trait CombineInRegisters: Sized {
    fn combine_all(acc: &mut [Self]) -> Self;
}

impl CombineInRegisters for f32 {
    #[inline(always)]
    fn combine_all(acc: &mut [f32]) -> f32 {
        #[cfg(target_arch = "x86_64")]
        if let Ok(a) = <&[f32; 16]>::try_from(&*acc) {
            use std::arch::x86_64::*;
            // SAFETY: SSE2 is part of x86_64; no memory is accessed.
            return unsafe {
                let q = |l: usize| _mm_set_ps(a[l + 3], a[l + 2], a[l + 1], a[l]);
                // Lanes (l, l + 8), (l, l + 4), (l, l + 2), (l, l + 1).
                let s4 = _mm_add_ps(_mm_add_ps(q(0), q(8)), _mm_add_ps(q(4), q(12)));
                let s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
                _mm_cvtss_f32(_mm_add_ss(s2, _mm_shuffle_ps::<1>(s2, s2)))
            };
        }
        combine_lanes(acc)
    }
}

impl CombineInRegisters for f64 {
    #[inline(always)]
    fn combine_all(acc: &mut [f64]) -> f64 {
        #[cfg(target_arch = "x86_64")]
        if let Ok(a) = <&[f64; 8]>::try_from(&*acc) {
            use std::arch::x86_64::*;
            // SAFETY: SSE2 is part of x86_64; no memory is accessed.
            return unsafe {
                let q = |l: usize| _mm_set_pd(a[l + 1], a[l]);
                // Lanes (l, l + 4), (l, l + 2), (l, l + 1).
                let s2 = _mm_add_pd(_mm_add_pd(q(0), q(4)), _mm_add_pd(q(2), q(6)));
                _mm_cvtsd_f64(_mm_add_sd(s2, _mm_unpackhi_pd(s2, s2)))
            };
        }
        combine_lanes(acc)
    }
}

/// The first `v.len()` (< `N`) lanes of a chunk, the others `pad`.
#[inline(always)]
pub(crate) fn padded<T: Copy, const N: usize>(v: &[T], pad: T) -> [T; N] {
    let mut c = [pad; N];
    c[..v.len()].copy_from_slice(v);
    c
}

/// The lane reductions of `Real`, for a type with `$lanes` lanes.
///
/// A row's last partial chunk is copied into a full chunk padded with a
/// value that changes no lane (`-0.0` for sums: `a + -0.0 == a` for every
/// `a`, signed zeros included; `-inf` for maxima) and reduced like the
/// others. Updating `acc[l]` from a loop of variable length instead kept
/// LLVM from vectorizing the main loop: AVX2 and AVX-512 builds ran it in
/// scalar and two-lane pieces (four to eight times the instructions).
macro_rules! lane_reductions {
    ($t:ty, $lanes:expr) => {
        #[inline(always)]
        fn lane_sum(v: &[$t]) -> $t {
            let mut acc = [0.0 as $t; $lanes];
            let mut chunks = v.chunks_exact($lanes);
            for c in &mut chunks {
                for l in 0..$lanes {
                    acc[l] += c[l];
                }
            }
            let last = padded::<$t, $lanes>(chunks.remainder(), -0.0);
            for l in 0..$lanes {
                acc[l] += last[l];
            }
            <$t as CombineInRegisters>::combine_all(&mut acc)
        }

        #[inline(always)]
        fn lane_dot(a: &[$t], b: &[$t]) -> $t {
            let mut acc = [0.0 as $t; $lanes];
            let n = a.len().min(b.len());
            let (a, b) = (&a[..n], &b[..n]);
            let mut ca = a.chunks_exact($lanes);
            let mut cb = b.chunks_exact($lanes);
            for (x, y) in (&mut ca).zip(&mut cb) {
                for l in 0..$lanes {
                    acc[l] = x[l].mul_add(y[l], acc[l]);
                }
            }
            // -0.0 * 0.0 = -0.0: the padded lanes add -0.0.
            let x = padded::<$t, $lanes>(ca.remainder(), -0.0);
            let y = padded::<$t, $lanes>(cb.remainder(), 0.0);
            for l in 0..$lanes {
                acc[l] = x[l].mul_add(y[l], acc[l]);
            }
            <$t as CombineInRegisters>::combine_all(&mut acc)
        }

        #[inline(always)]
        fn add_max(w: &mut [$t], x: &[$t], top: $t) -> $t {
            // Two passes over the row (in L1): fused into one loop, LLVM
            // split the lanes into two-wide pieces.
            let n = w.len().min(x.len());
            for (a, &b) in w[..n].iter_mut().zip(&x[..n]) {
                *a += b - top;
            }
            Self::lane_max(&w[..n])
        }

        #[inline(always)]
        fn exp_sum(w: &mut [$t], m: $t, inv_tau: $t) -> $t {
            let mut acc = [0.0 as $t; $lanes];
            let mut chunks = w.chunks_exact_mut($lanes);
            for c in &mut chunks {
                for l in 0..$lanes {
                    c[l] = Real::exp_nonpositive((c[l] - m) * inv_tau);
                    acc[l] += c[l];
                }
            }
            // The last partial chunk's terms go through `tail` (-0.0 in the
            // lanes past the row, which add nothing): indexing `acc` by a
            // variable kept it in memory, not in registers.
            let rest = chunks.into_remainder();
            if !rest.is_empty() {
                let mut tail = [-0.0 as $t; $lanes];
                for (t, v) in tail.iter_mut().zip(rest.iter_mut()) {
                    *v = Real::exp_nonpositive((*v - m) * inv_tau);
                    *t = *v;
                }
                for l in 0..$lanes {
                    acc[l] += tail[l];
                }
            }
            <$t as CombineInRegisters>::combine_all(&mut acc)
        }

        #[inline(always)]
        fn lane_max(v: &[$t]) -> $t {
            let mut acc = [<$t>::NEG_INFINITY; $lanes];
            let mut chunks = v.chunks_exact($lanes);
            for c in &mut chunks {
                for l in 0..$lanes {
                    acc[l] = sel(c[l] > acc[l], c[l], acc[l]);
                }
            }
            let last = padded::<$t, $lanes>(chunks.remainder(), <$t>::NEG_INFINITY);
            for l in 0..$lanes {
                acc[l] = sel(last[l] > acc[l], last[l], acc[l]);
            }
            combine_max(&mut acc)
        }
    };
}

/// Maximum of the lanes, pairwise like [`combine_lanes`] (max is exact in any order).
#[inline(always)]
pub(crate) fn combine_max<T: PartialOrd + Copy>(acc: &mut [T]) -> T {
    let mut width = acc.len();
    while width > 1 {
        width /= 2;
        for l in 0..width {
            acc[l] = sel(acc[l + width] > acc[l], acc[l + width], acc[l]);
        }
    }
    acc[0]
}
