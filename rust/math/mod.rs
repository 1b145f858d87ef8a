//! The arithmetic every kernel shares, in three parts: the elementary
//! functions ([`elementary`]: `exp`, `ln`, `ln_1p`, noise, sigmoid), the
//! uniform mapping ([`uniform`]: random words to (0, 1), filled by groups)
//! and the lane reductions ([`lanes`]). [`Real`] gathers them for the two
//! float types the kernels support.

#[macro_use]
mod lanes;
mod elementary;
mod uniform;

pub use elementary::{
    exponential_from_uniform, gumbel_from_exponential, gumbel_from_uniform, logistic_from_uniform,
    sigmoid,
};
#[cfg(target_arch = "x86_64")]
pub(crate) use elementary::{F32_EXP_POLY, F32_LN2_HI, F32_LN2_LO, F32_LOG2E, F32_ROUND_MAGIC};
pub use lanes::combine_lanes;
pub use uniform::{uniform_f32, uniform_f64, GroupCache};

use crate::rng::Stream;
use elementary::*;
use lanes::{combine_max, padded, CombineInRegisters};
use std::fmt::Debug;
use std::ops::{Add, Div, Mul, Neg, Sub};
use uniform::{for_groups, group_f32, group_f64};

/// The floating-point element types the kernels support.
pub trait Real:
    Copy
    + Default
    + Send
    + Sync
    + Debug
    + PartialOrd
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + Neg<Output = Self>
    + 'static
{
    const ZERO: Self;
    const ONE: Self;
    const INFINITY: Self;
    const NEG_INFINITY: Self;
    /// The smallest positive normal value: the least temperature whose
    /// inverse is finite.
    const MIN_POSITIVE: Self;
    /// The lowest finite value.
    const MIN: Self;
    /// Number of independent partial sums a reduction keeps: the width of two
    /// AVX2 registers. Reductions add element `k` into lane `k % LANES` and
    /// combine the lanes pairwise, so scalar and vector code agree bitwise.
    const LANES: usize;

    fn from_f64(x: f64) -> Self;
    fn to_f64(self) -> f64;
    fn fma(self, a: Self, b: Self) -> Self;
    fn is_nan(self) -> bool;
    fn abs(self) -> Self;
    /// The largest value below `self`.
    fn next_down(self) -> Self;
    fn exp(self) -> Self;
    fn ln(self) -> Self;
    fn ln_1p(self) -> Self;
    /// `exp(self)` for `self <= 0` (`-inf` included): the value of `exp`,
    /// without the steps only a positive argument needs.
    fn exp_nonpositive(self) -> Self;
    /// `ln(self)` for a positive, normal, finite `self`: the value of `ln`,
    /// without the steps only other arguments need.
    fn ln_normal(self) -> Self;

    /// The uniform `v` in (0, 1) of element `i` of `stream`.
    fn uniform(stream: &Stream, i: u64) -> Self;
    /// Sum of `v`: element `t` goes into lane `t % LANES`, then [`combine_lanes`].
    fn lane_sum(v: &[Self]) -> Self;
    /// Sum of `a[t] * b[t]` accumulated with fused multiply-adds, by lanes as `lane_sum`.
    fn lane_dot(a: &[Self], b: &[Self]) -> Self;
    /// Maximum of `v` (`-inf` when empty; no NaN expected).
    fn lane_max(v: &[Self]) -> Self;
    /// `w[t] = (x[t] - top) + w[t]`, returning the maximum of the new `w`.
    fn add_max(w: &mut [Self], x: &[Self], top: Self) -> Self;
    /// `w[t] = exp((w[t] - m) * inv_tau)`, returning their sum by lanes as
    /// `lane_sum` (one pass). With `m` the maximum of `w`, every exponent is
    /// `<= 0`: no temperature, however small, overflows.
    fn exp_sum(w: &mut [Self], m: Self, inv_tau: Self) -> Self;

    /// `out[t] = uniform(stream, start + t)`, drawing each Philox block once.
    #[inline(always)]
    fn fill_uniform(stream: &Stream, start: u64, out: &mut [Self]) {
        Self::fill_uniform_cached(stream, start, out, &mut GroupCache::new());
    }
    /// `fill_uniform` that keeps the last partial group of uniforms in
    /// `cache` (for one stream), so consecutive short rows share its blocks.
    fn fill_uniform_cached(
        stream: &Stream,
        start: u64,
        out: &mut [Self],
        cache: &mut GroupCache<Self>,
    );

    #[inline(always)]
    fn max(self, other: Self) -> Self {
        if other > self {
            other
        } else {
            self
        }
    }
    #[inline(always)]
    fn min(self, other: Self) -> Self {
        if other < self {
            other
        } else {
            self
        }
    }
}

/// `if c { a } else { b }`, written so loops over it stay branch-free.
#[inline(always)]
pub(crate) fn sel<T>(c: bool, a: T, b: T) -> T {
    if c {
        a
    } else {
        b
    }
}

/// `impl Real` for a float type: its constants, the lane reductions, and
/// the elementary functions and uniforms of that type.
macro_rules! impl_real {
    ($t:ident, lanes: $lanes:expr, exp: $exp:ident, exp_nonpositive: $exp_np:ident,
     ln: $ln:ident, ln_split: $ln_split:ident, exponent_bias: $bias:expr, ln_1p: $ln_1p:ident,
     word: $word:ident, uniform: $uniform:ident, group: $group:ident) => {
        impl Real for $t {
            const ZERO: $t = 0.0;
            const ONE: $t = 1.0;
            const INFINITY: $t = $t::INFINITY;
            const NEG_INFINITY: $t = $t::NEG_INFINITY;
            const MIN_POSITIVE: $t = $t::MIN_POSITIVE;
            const MIN: $t = $t::MIN;
            const LANES: usize = $lanes;

            lane_reductions!($t, $lanes);

            #[inline(always)]
            fn from_f64(x: f64) -> $t {
                x as $t
            }
            #[inline(always)]
            fn to_f64(self) -> f64 {
                f64::from(self)
            }
            #[inline(always)]
            fn fma(self, a: $t, b: $t) -> $t {
                self.mul_add(a, b)
            }
            #[inline(always)]
            fn is_nan(self) -> bool {
                $t::is_nan(self)
            }
            #[inline(always)]
            fn abs(self) -> $t {
                $t::abs(self)
            }
            #[inline(always)]
            fn next_down(self) -> $t {
                $t::next_down(self)
            }
            #[inline(always)]
            fn exp(self) -> $t {
                $exp(self)
            }
            #[inline(always)]
            fn ln(self) -> $t {
                $ln(self)
            }
            #[inline(always)]
            fn ln_1p(self) -> $t {
                $ln_1p(self)
            }
            #[inline(always)]
            fn exp_nonpositive(self) -> $t {
                $exp_np(self)
            }
            #[inline(always)]
            fn ln_normal(self) -> $t {
                $ln_split(self, $bias)
            }
            #[inline(always)]
            fn uniform(stream: &Stream, i: u64) -> $t {
                $uniform(stream.$word(i))
            }
            #[inline(always)]
            fn fill_uniform_cached(
                stream: &Stream,
                start: u64,
                out: &mut [$t],
                cache: &mut GroupCache<$t>,
            ) {
                for_groups(stream, start, out, $group, cache);
            }
        }
    };
}

impl_real!(f32, lanes: 16, exp: exp_f32, exp_nonpositive: exp_nonpositive_f32,
           ln: ln_f32, ln_split: ln_split_f32, exponent_bias: 127, ln_1p: ln_1p_f32,
           word: word, uniform: uniform_f32, group: group_f32);
impl_real!(f64, lanes: 8, exp: exp_f64, exp_nonpositive: exp_nonpositive_f64,
           ln: ln_f64, ln_split: ln_split_f64, exponent_bias: 1023, ln_1p: ln_1p_f64,
           word: word64, uniform: uniform_f64, group: group_f64);

#[cfg(test)]
mod tests {
    use super::*;

    /// The lane reductions in their documented order: element `i` goes to
    /// lane `i % LANES`, lanes combine pairwise. Written plainly, so the
    /// padding of the last chunk must change no bit.
    #[test]
    fn lane_reductions_follow_the_lane_order_bit_for_bit() {
        fn plain_sum(v: &[f32], dot: Option<&[f32]>) -> f32 {
            let mut acc = [0.0f32; 16];
            for (i, &x) in v.iter().enumerate() {
                acc[i % 16] = match dot {
                    Some(y) => x.mul_add(y[i], acc[i % 16]),
                    None => acc[i % 16] + x,
                };
            }
            combine_lanes(&mut acc)
        }
        fn plain_max(v: &[f32]) -> f32 {
            let mut acc = [f32::NEG_INFINITY; 16];
            for (i, &x) in v.iter().enumerate() {
                acc[i % 16] = sel(x > acc[i % 16], x, acc[i % 16]);
            }
            combine_max(&mut acc)
        }
        let s = crate::rng::Stream::new(3, 4);
        let same = |a: f32, b: f32| assert_eq!(a.to_bits(), b.to_bits(), "{a} vs {b}");
        for n in [0usize, 1, 7, 15, 16, 17, 33, 100, 1023] {
            let mut a = vec![0.0f32; n];
            let mut b = vec![0.0f32; n];
            f32::fill_uniform(&s, 0, &mut a);
            f32::fill_uniform(&s, 5000, &mut b);
            let a: Vec<f32> = a.iter().map(|v| 2.0 * v - 1.0).collect();
            same(f32::lane_sum(&a), plain_sum(&a, None));
            same(f32::lane_dot(&a, &b), plain_sum(&a, Some(&b)));
            same(f32::lane_max(&a), plain_max(&a));
            let mut w = b.clone();
            let top = 0.375;
            let want: Vec<f32> = b.iter().zip(&a).map(|(w, x)| (x - top) + w).collect();
            same(f32::add_max(&mut w, &a, top), plain_max(&want));
            assert_eq!(w, want);
        }
    }

    fn ulp_diff_f32(a: f32, b: f64) -> f64 {
        let b32 = b as f32;
        let ulp = f64::from(f32::from_bits(b32.abs().to_bits() + 1) - b32.abs());
        (f64::from(a) - b).abs() / ulp
    }

    fn ulp_diff_f64(a: f64, b: f64) -> f64 {
        let ulp = f64::from_bits(b.abs().to_bits() + 1) - b.abs();
        (a - b).abs() / ulp
    }

    /// Every 97th float32 in [1e-30, 1e30] (about 20 million values): the
    /// degree-8 fit is within 0.88 ulp (0.861 measured).
    #[test]
    fn ln_f32_within_0_88_ulp() {
        let (lo, hi) = (1e-30f32.to_bits(), 1e30f32.to_bits());
        let mut worst = 0.0f64;
        for bits in (lo..hi).step_by(97) {
            let x = f32::from_bits(bits);
            worst = worst.max(ulp_diff_f32(ln_f32(x), f64::from(x).ln()));
        }
        assert!(worst <= 0.88, "worst ln error {worst} ulp");
    }

    /// 0.93 ulp measured.
    #[test]
    fn exp_f32_within_0_95_ulp() {
        let mut worst = 0.0f64;
        let mut x = -87.0f32;
        while x < 88.0 {
            worst = worst.max(ulp_diff_f32(exp_f32(x), f64::from(x).exp()));
            x += 1.3e-5;
        }
        assert!(worst <= 0.95, "worst exp error {worst} ulp");
    }

    /// 1.44 ulp measured.
    #[test]
    fn ln_1p_f32_within_1_5_ulp_on_the_noise_range() {
        let mut worst = 0.0f64;
        for bits in (2.3e-10f32.to_bits()..1.0f32.to_bits()).step_by(13) {
            let v = f32::from_bits(bits);
            worst = worst.max(ulp_diff_f32(ln_1p_f32(-v), (-f64::from(v)).ln_1p()));
        }
        assert!(worst <= 1.5, "worst ln1p error {worst} ulp");
    }

    /// float64 against the platform libm (itself within 1 ulp).
    #[test]
    fn f64_functions_within_3_ulp_of_libm() {
        let s = crate::rng::Stream::new(11, 0);
        let mut worst = [0.0f64; 3];
        for i in 0..2_000_000u64 {
            let w = s.word64(i);
            let x = f64::from_bits((w & 0x800f_ffff_ffff_ffff) | ((0x3c0 + (w >> 52) % 128) << 52));
            let a = x.abs();
            worst[0] = worst[0].max(ulp_diff_f64(ln_f64(a), a.ln()));
            let e = x.clamp(-700.0, 700.0) * 1e-3 * ((w >> 40) % 1000) as f64;
            worst[1] = worst[1].max(ulp_diff_f64(exp_f64(e), e.exp()));
            let v = uniform_f64(w);
            worst[2] = worst[2].max(ulp_diff_f64(ln_1p_f64(-v), (-v).ln_1p()));
        }
        assert!(
            worst.iter().all(|&w| w <= 3.0),
            "worst errors {worst:?} ulp"
        );
    }

    /// The domain-specialized functions give the general ones' bits.
    #[test]
    fn specialized_functions_match_the_general_ones_bitwise() {
        let same32 = |a: f32, b: f32| a.to_bits() == b.to_bits();
        // Every 61st float32 pattern: exp on x <= 0 (-0 and -inf included), ln on normals.
        for bits in (0x8000_0000u32..=0xff80_0000)
            .step_by(61)
            .chain([0x8000_0000, 0xff80_0000])
        {
            let x = f32::from_bits(bits);
            assert!(same32(exp_nonpositive_f32(x), exp_f32(x)), "exp {x:e}");
        }
        for bits in (0x0080_0000u32..0x7f80_0000)
            .step_by(61)
            .chain([0x0080_0000, 0x7f7f_ffff])
        {
            let x = f32::from_bits(bits);
            assert!(same32(x.ln_normal(), ln_f32(x)), "ln {x:e}");
        }
        // Written with the crate's functions (`f32::ln` would be the platform's).
        for w in (0..=u32::MAX).step_by(251).chain([0, 1, 2, u32::MAX]) {
            let v = uniform_f32(w);
            let e = exponential_from_uniform(v);
            assert!(
                same32(gumbel_from_uniform(v), -ln_f32(e)),
                "gumbel w = {w:#x}"
            );
            assert!(same32(logistic_from_uniform(v), ln_f32((1.0 - v) / v)));
        }
        let s = crate::rng::Stream::new(5, 0);
        for i in 0..1_000_000u64 {
            let w = s.word64(i);
            // x <= 0 spread over the exponents; -inf now and then.
            let x = -f64::from_bits((w >> 1) & 0x7fef_ffff_ffff_ffff);
            let x = if i % 1000 == 0 { f64::NEG_INFINITY } else { x };
            assert_eq!(
                exp_nonpositive_f64(x).to_bits(),
                exp_f64(x).to_bits(),
                "{x:e}"
            );
            let y = f64::from_bits((w & 0x000f_ffff_ffff_ffff) | ((1 + (w >> 52) % 2046) << 52));
            assert_eq!(y.ln_normal().to_bits(), ln_f64(y).to_bits(), "{y:e}");
            let v = uniform_f64(w);
            let g = -ln_f64(exponential_from_uniform(v));
            assert_eq!(gumbel_from_uniform(v).to_bits(), g.to_bits(), "{v:e}");
            assert_eq!(logistic_from_uniform(v), ln_f64((1.0 - v) / v));
        }
    }

    /// `E = -ln1p(-v)` without a division stays within 1.5 ulp over the
    /// float32 the uniform mapping can give (every 7th pattern of
    /// [2^-32, 1 - 2^-24], and its ends), and the Gumbel value `-ln E`
    /// within 1 ulp of the exact logarithm of that `E` (near `E = 1` its
    /// relative error is `E`'s, magnified); float64, over 2 million draws,
    /// within 2.5 ulp of libm (itself within 1 ulp).
    #[test]
    fn exponential_and_gumbel_noise_within_a_few_ulp() {
        let (lo, hi) = (uniform_f32(0), uniform_f32(u32::MAX));
        let mut worst = [0.0f64; 2];
        for bits in (lo.to_bits()..=hi.to_bits())
            .step_by(7)
            .chain([hi.to_bits()])
        {
            let v = f32::from_bits(bits);
            let e = -(-f64::from(v)).ln_1p();
            let e32 = exponential_from_uniform(v);
            worst[0] = worst[0].max(ulp_diff_f32(e32, e));
            worst[1] = worst[1].max(ulp_diff_f32(gumbel_from_uniform(v), -f64::from(e32).ln()));
        }
        assert!(
            worst[0] <= 1.5 && worst[1] <= 1.0,
            "float32 worst {worst:?} ulp"
        );
        let s = crate::rng::Stream::new(13, 0);
        let mut worst = [0.0f64; 2];
        for i in 0..2_000_000u64 {
            // Small v (the upper tail) as often as the rest.
            let v = uniform_f64(s.word64(i) >> (i % 2 * (s.word64(i) % 52)));
            let e = -(-v).ln_1p();
            let e64 = exponential_from_uniform(v);
            worst[0] = worst[0].max(ulp_diff_f64(e64, e));
            worst[1] = worst[1].max(ulp_diff_f64(gumbel_from_uniform(v), -e64.ln()));
        }
        assert!(
            worst[0] <= 2.5 && worst[1] <= 2.5,
            "float64 worst {worst:?} ulp"
        );
    }

    #[test]
    fn special_values() {
        assert_eq!(exp_f32(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp_f64(f64::NEG_INFINITY), 0.0);
        assert_eq!(exp_f32(0.0), 1.0);
        assert_eq!(exp_f64(0.0), 1.0);
        assert_eq!(exp_f32(100.0), f32::INFINITY);
        assert_eq!(ln_f32(1.0), 0.0);
        assert_eq!(ln_f64(1.0), 0.0);
        assert_eq!(ln_f32(0.0), f32::NEG_INFINITY);
        assert!(ln_f32(-1.0).is_nan());
        let sub = f32::from_bits(1);
        assert!(ulp_diff_f32(ln_f32(sub), f64::from(sub).ln()) <= 2.0);
        assert_eq!(sigmoid(f32::INFINITY), 1.0);
        assert_eq!(sigmoid(f32::NEG_INFINITY), 0.0);
        assert_eq!(sigmoid(0.0f64), 0.5);
    }

    #[test]
    fn uniforms_stay_inside_the_open_interval() {
        for w in [0u32, 1, 2, 3, u32::MAX, u32::MAX - 1, 1 << 31, 0x7fff_ffff] {
            let v = uniform_f32(w);
            assert!(v > 0.0 && v < 1.0, "w={w:#x} v={v}");
        }
        assert_eq!(uniform_f32(0), 2.328_306_4e-10);
        assert_eq!(uniform_f32(u32::MAX), 1.0 - 2f32.powi(-24));
        for w in [0u64, u64::MAX, 1 << 63] {
            let v = uniform_f64(w);
            assert!(v > 0.0 && v < 1.0);
        }
        assert_eq!(uniform_f64(0), 2f64.powi(-53));
        assert_eq!(uniform_f64(u64::MAX), 1.0 - 2f64.powi(-53));
    }

    #[test]
    fn gumbel_tail_reaches_twenty_and_stays_finite() {
        let top32 = gumbel_from_uniform(uniform_f32(0));
        let bottom32 = gumbel_from_uniform(uniform_f32(u32::MAX));
        assert!(top32 >= 20.0 && top32.is_finite(), "{top32}");
        assert!(bottom32.is_finite() && bottom32 < -2.0, "{bottom32}");
        let top64 = gumbel_from_uniform(uniform_f64(0));
        assert!(top64 >= 36.0 && top64.is_finite(), "{top64}");
        assert!(gumbel_from_uniform(uniform_f64(u64::MAX)).is_finite());
        assert!(logistic_from_uniform(uniform_f32(0)) >= 20.0);
        assert!(logistic_from_uniform(uniform_f32(u32::MAX)).is_finite());
    }

    #[test]
    fn fill_uniform_matches_elementwise_draws() {
        let s = crate::rng::Stream::new(5, 9);
        for start in 0..6u64 {
            let mut a = vec![0f32; 11];
            f32::fill_uniform(&s, start, &mut a);
            let mut b = vec![0f64; 7];
            f64::fill_uniform(&s, start, &mut b);
            for (t, &v) in a.iter().enumerate() {
                assert_eq!(v, f32::uniform(&s, start + t as u64));
            }
            for (t, &v) in b.iter().enumerate() {
                assert_eq!(v, f64::uniform(&s, start + t as u64));
            }
        }
    }

    /// Lanes combine pairwise, `(l, l + 8)`, then `(l, l + 4)`, ... (the
    /// order of a vector horizontal add), written out here as a tree. The
    /// values round differently in every other order: a sum from the left
    /// or a combination of neighbours gives other bits, which the last
    /// assertions check, so the test sees any change of order.
    #[test]
    fn lane_combination_order() {
        // Pairs of large values of both signs beside small ones.
        let a: [f32; 16] = std::array::from_fn(|l| {
            let sign = if l % 2 == 0 { 1.0 } else { -1.0 };
            let v = if l % 4 < 2 {
                sign * 16_777_216.0 * (1.0 + l as f64 / 16.0)
            } else {
                1.0 + l as f64 * 0.3
            };
            v as f32
        });
        let pair = |l: usize| a[l] + a[l + 8];
        let quad = |l: usize| pair(l) + pair(l + 4);
        let oct = |l: usize| quad(l) + quad(l + 2);
        let want = oct(0) + oct(1);
        let mut acc = a;
        assert_eq!(combine_lanes(&mut acc).to_bits(), want.to_bits());
        let from_left = a.iter().fold(0.0f32, |s, &v| s + v);
        let neighbours = |v: &[f32]| -> Vec<f32> { v.chunks(2).map(|p| p[0] + p[1]).collect() };
        let by_neighbours = neighbours(&neighbours(&neighbours(&neighbours(&a))))[0];
        assert_ne!(from_left.to_bits(), want.to_bits());
        assert_ne!(by_neighbours.to_bits(), want.to_bits());
        // The reductions combine in registers, in the same order.
        assert_eq!(f32::combine_all(&mut a.clone()).to_bits(), want.to_bits());
        assert_eq!(f32::lane_sum(&a).to_bits(), want.to_bits());
        let d: [f64; 8] = std::array::from_fn(|l| f64::from(a[l]) * 1e9 + f64::from(a[l + 8]));
        let pair = |l: usize| d[l] + d[l + 4];
        let want = (pair(0) + pair(2)) + (pair(1) + pair(3));
        assert_eq!(f64::combine_all(&mut d.clone()).to_bits(), want.to_bits());
        assert_eq!(combine_lanes(&mut d.clone()).to_bits(), want.to_bits());
    }
}
