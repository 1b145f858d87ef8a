//! Elementary functions and the uniform mapping shared by every kernel.
//!
//! `exp`, `ln` and `ln_1p` are our own polynomial approximations written with
//! explicit fused multiply-adds and IEEE division only, so the same sequence of
//! correctly rounded operations can be reproduced on any device (the GPU path
//! compiles the same formulas with `--fmad=false`). They are accurate to a few
//! units in the last place; the tests measure it.
//!
//! The uniform mapping turns random words into a value `v` in the open
//! interval (0, 1) that is resolved finely near 0: the noise formulas put the
//! winning tail of the Gumbel and logistic distributions at small `v`.

use std::fmt::Debug;
use std::ops::{Add, Div, Mul, Neg, Sub};

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
    fn uniform(stream: &crate::rng::Stream, i: u64) -> Self;
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
    fn fill_uniform(stream: &crate::rng::Stream, start: u64, out: &mut [Self]) {
        Self::fill_uniform_cached(stream, start, out, &mut GroupCache::new());
    }
    /// `fill_uniform` that keeps the last partial group of uniforms in
    /// `cache` (for one stream), so consecutive short rows share its blocks.
    fn fill_uniform_cached(
        stream: &crate::rng::Stream,
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

/// Sum of `LANES` partial sums, combined pairwise: `(l, l + LANES/2)`, then
/// `(l, l + LANES/4)`, ... — the order a vector horizontal add uses.
#[inline(always)]
pub fn combine_lanes<T: Real>(acc: &mut [T]) -> T {
    let mut width = acc.len();
    while width > 1 {
        width /= 2;
        for l in 0..width {
            acc[l] = acc[l] + acc[l + width];
        }
    }
    acc[0]
}

/// The first `v.len()` (< `N`) lanes of a chunk, the others `pad`.
#[inline(always)]
fn padded<T: Copy, const N: usize>(v: &[T], pad: T) -> [T; N] {
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
            combine_lanes(&mut acc)
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
            combine_lanes(&mut acc)
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
            for (l, v) in chunks.into_remainder().iter_mut().enumerate() {
                *v = Real::exp_nonpositive((*v - m) * inv_tau);
                acc[l] += *v;
            }
            combine_lanes(&mut acc)
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
fn for_groups<T: Copy + Default, const N: usize>(
    stream: &crate::rng::Stream,
    start: u64,
    out: &mut [T],
    group: fn(&crate::rng::Stream, u64, &mut [T; N]),
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
fn group_f32(stream: &crate::rng::Stream, g: u64, dst: &mut [f32; 64]) {
    let w = stream.blocks16(16 * g);
    for j in 0..16 {
        for k in 0..4 {
            dst[4 * j + k] = uniform_f32(w[k][j]);
        }
    }
}

/// float64 uniforms `32g .. 32g + 32`: from the 16 blocks `16g .. 16g + 16`.
#[inline(always)]
fn group_f64(stream: &crate::rng::Stream, g: u64, dst: &mut [f64; 32]) {
    let w = stream.blocks16(16 * g);
    for j in 0..16 {
        for k in 0..2 {
            let lo = u64::from(w[2 * k][j]);
            let hi = u64::from(w[2 * k + 1][j]);
            dst[2 * j + k] = uniform_f64(lo | (hi << 32));
        }
    }
}

/// Maximum of the lanes, pairwise like [`combine_lanes`] (max is exact in any order).
#[inline(always)]
fn combine_max<T: PartialOrd + Copy>(acc: &mut [T]) -> T {
    let mut width = acc.len();
    while width > 1 {
        width /= 2;
        for l in 0..width {
            acc[l] = sel(acc[l + width] > acc[l], acc[l + width], acc[l]);
        }
    }
    acc[0]
}

/// Gumbel noise from a uniform `v` of the tail variable: `-ln(-ln(1 - v))`.
///
/// `v` near 0 gives the upper (winning) tail: `E = -ln1p(-v)` keeps full
/// relative precision there, so values up to about 22 (float32) or 36
/// (float64) are reachable, and the result is always finite.
///
/// `v` must lie where the uniform mappings put it ([2^-32, 1 - 2^-24] for
/// float32, [2^-53, 1 - 2^-53] for float64): there `1 - v` and `E` are
/// normal, so the logarithms skip their special cases: the value is that
/// of `-(E.ln())` bit for bit, within 1.5 ulp of `-ln(-ln1p(-v))` in `E`.
#[inline(always)]
pub fn gumbel_from_uniform<T: Real>(v: T) -> T {
    gumbel_from_exponential(exponential_from_uniform(v))
}

/// `-ln E`: the Gumbel value of the exponential variable `E` that
/// [`exponential_from_uniform`] gives.
#[inline(always)]
pub fn gumbel_from_exponential<T: Real>(e: T) -> T {
    -e.ln_normal()
}

/// The exponential variable `E = -ln1p(-v)` that [`gumbel_from_uniform`]
/// takes the logarithm of: positive and normal for `v` where the uniform
/// mappings put it.
///
/// As in `ln_1p`, `u = 1 - v` is rounded and `c = -v - (u - 1)` (exact)
/// corrects `ln(u)` by `c / u`, here without a division: `c` is 0 unless
/// `v < 1/2`, where `u` lies in (1/2, 1] and `d = 1 - u` is exact, so
/// `1 / u = 1 / (1 - d)` is taken as `1 + d + d^2 + d^3` (relative error
/// `d^4`, under 0.07 ulp of `E` over the range).
#[inline(always)]
pub fn exponential_from_uniform<T: Real>(v: T) -> T {
    let x = -v;
    let u = T::ONE + x;
    let d = T::ONE - u;
    let inv_u = (d + T::ONE).fma(d, T::ONE).fma(d, T::ONE);
    -(x - (u - T::ONE)).fma(inv_u, u.ln_normal())
}

/// Logistic noise `ln((1 - v) / v)`: finite, upper tail at small `v`.
///
/// One logarithm of a ratio: `1 - v` is exact for `v >= 1/2` and within half
/// an ulp of 1 below, so the result is within about 2 ulp of 1 in absolute
/// terms near 0 and keeps full relative precision in both tails.
///
/// For `v` where the uniform mappings put it, the ratio is normal (see
/// [`gumbel_from_uniform`]).
#[inline(always)]
pub fn logistic_from_uniform<T: Real>(v: T) -> T {
    ((T::ONE - v) / v).ln_normal()
}

/// `1 / (1 + exp(-z))` evaluated through `exp(-|z|)` so it never overflows.
#[inline(always)]
pub fn sigmoid<T: Real>(z: T) -> T {
    let nonneg = z >= T::ZERO;
    let t = sel(nonneg, -z, z).exp();
    sel(nonneg, T::ONE, t) / (T::ONE + t)
}

// ---------------------------------------------------------------- float32

pub(crate) const F32_LN2_HI: f32 = f32::from_bits(0x3f31_7200); // ln 2 with 9 trailing zero bits
pub(crate) const F32_LN2_LO: f32 = f32::from_bits(0x35bf_be8e); // ln 2 - F32_LN2_HI
pub(crate) const F32_LOG2E: f32 = std::f32::consts::LOG2_E;
pub(crate) const F32_ROUND_MAGIC: f32 = 12_582_912.0; // 1.5 * 2^23
const F32_SQRT_HALF_BITS: u32 = 0x3f35_04f3;

/// The coefficients of `exp_poly_f32`, highest degree first.
pub(crate) const F32_EXP_POLY: [f32; 8] = [
    1.0 / 5040.0,
    1.0 / 720.0,
    1.0 / 120.0,
    1.0 / 24.0,
    1.0 / 6.0,
    0.5,
    1.0,
    1.0,
];

/// exp(r) for |r| <= ln(2)/2: Taylor polynomial of degree 7 (truncation < 2^-27).
#[inline(always)]
fn exp_poly_f32(r: f32) -> f32 {
    let mut p = F32_EXP_POLY[0];
    for &c in &F32_EXP_POLY[1..] {
        p = p.mul_add(r, c);
    }
    p
}

/// `if c { a } else { b }`, written so loops over it stay branch-free.
#[inline(always)]
fn sel<T>(c: bool, a: T, b: T) -> T {
    if c {
        a
    } else {
        b
    }
}

// The elementary functions below have no early returns: special inputs are
// computed along the main path and replaced by selects at the end, so loops
// over them vectorize (and every build computes the same values).

/// Round x*log2(e) to the nearest integer (ties to even) with the magic constant.
#[inline(always)]
fn exp_exponent_f32(x: f32) -> f32 {
    (x * F32_LOG2E + F32_ROUND_MAGIC) - F32_ROUND_MAGIC
}

/// exp(x) = 2^nc * exp(r) for the clamped exponent `nc`: `exp(r)` and the
/// integer `nc`.
#[inline(always)]
fn exp_parts_f32(x: f32, nc: f32) -> (f32, i32) {
    let r = (-nc).mul_add(F32_LN2_HI, x);
    let r = (-nc).mul_add(F32_LN2_LO, r);
    // The integer nc from the bits of nc + 1.5 * 2^23 (a float-to-int `as`
    // cast would not vectorize); a NaN gives garbage, and a NaN result anyway.
    let ni = (nc + F32_ROUND_MAGIC).to_bits() as i32 - F32_ROUND_MAGIC.to_bits() as i32;
    (exp_poly_f32(r), ni)
}

#[inline(always)]
fn exp_f32(x: f32) -> f32 {
    let n = exp_exponent_f32(x);
    let nc = sel(n < -127.0, -127.0, sel(n > 128.0, 128.0, n));
    let (p, ni) = exp_parts_f32(x, nc);
    // 2^n as a float; for n = 128, 2^127 and one exact doubling; n = -127 gives 0.
    let scale = f32::from_bits(((ni.min(127) + 127) as u32) << 23);
    let y = p * scale * sel(ni > 127, 2.0, 1.0);
    // Below the smallest normal (x = -inf included): 0. Above the largest float: inf.
    sel(n < -126.0, 0.0, sel(x > 88.722_84, f32::INFINITY, y))
}

/// `exp_f32` for x <= 0: there n <= 0, so the upper clamps, the doubling
/// (a multiplication by 1.0) and the overflow test change no value.
#[inline(always)]
fn exp_nonpositive_f32(x: f32) -> f32 {
    let n = exp_exponent_f32(x);
    let (p, ni) = exp_parts_f32(x, sel(n < -127.0, -127.0, n));
    sel(
        n < -126.0,
        0.0,
        p * f32::from_bits(((ni + 127) as u32) << 23),
    )
}

/// ln(m) for m in [sqrt(1/2), sqrt(2)) without a division: with f = m - 1
/// (exact), ln(1 + f) = f + f * (-f/2 + f^2 P(f)), where P of degree 8 is a
/// weighted minimax fit of (ln(1 + f) - f + f^2/2) / f^3 on that interval
/// (relative error of the fit below 4e-9; float32 rounding adds the rest).
#[inline(always)]
fn ln_mantissa_f32(m: f32) -> f32 {
    let f = m - 1.0;
    let z = f * f;
    let mut p: f32 = 0.069_281_116;
    for c in [
        -0.116_484_72,
        0.117_906_384,
        -0.124_041_85,
        0.142_329_77,
        -0.166_685_01,
        0.200_014_52,
        -0.249_999_93,
        0.333_333_22,
    ] {
        p = p.mul_add(f, c);
    }
    let h = z.mul_add(p, -0.5 * f);
    f.mul_add(h, f)
}

/// ln(2^k * m) for a positive normal `xs` split as 2^(k + bias - 127) * m
/// with m in [sqrt(1/2), sqrt(2)) (the bias is 127 + 23 for a subnormal
/// scaled by 2^23).
#[inline(always)]
fn ln_split_f32(xs: f32, bias: i32) -> f32 {
    let ix = xs.to_bits().wrapping_add(0x3f80_0000 - F32_SQRT_HALF_BITS);
    let k = (ix >> 23) as i32 - bias;
    let m = f32::from_bits((ix & 0x007f_ffff).wrapping_add(F32_SQRT_HALF_BITS));
    let kf = k as f32;
    kf.mul_add(F32_LN2_HI, kf.mul_add(F32_LN2_LO, ln_mantissa_f32(m)))
}

#[inline(always)]
fn ln_f32(x: f32) -> f32 {
    let subnormal = x < f32::MIN_POSITIVE;
    let xs = sel(subnormal, x * 8_388_608.0, x); // 2^23 scales subnormals to normals
    let y = ln_split_f32(xs, 127 + sel(subnormal, 23, 0));
    let y = sel(x == 0.0, f32::NEG_INFINITY, sel(x == f32::INFINITY, x, y));
    sel(x >= 0.0, y, f32::NAN) // negative or NaN
}

/// ln(1 + x) as ln(u) + (x - (u - 1)) / u with u = 1 + x rounded: the
/// second term corrects for the rounding of u (`x - (u - 1)` is exact).
#[inline(always)]
fn ln_1p_f32(x: f32) -> f32 {
    let u = 1.0 + x;
    let y = ln_f32(u) + (x - (u - 1.0)) / u;
    sel(u == f32::INFINITY, u, y)
}

/// float32 uniform from one 32-bit word: `v = (w >> 1) * 2^-31` rounded to
/// float32 (fine near 0), clamped into [2^-32, 1 - 2^-24].
#[inline(always)]
pub fn uniform_f32(w: u32) -> f32 {
    let v = ((w >> 1) as i32 as f32) * (1.0 / 2_147_483_648.0);
    let v = sel(v < 2.328_306_4e-10, 2.328_306_4e-10, v); // 2^-32
    sel(v > 0.999_999_94, 0.999_999_94, v) // 1 - 2^-24
}

impl Real for f32 {
    const ZERO: f32 = 0.0;
    const ONE: f32 = 1.0;
    const INFINITY: f32 = f32::INFINITY;
    const NEG_INFINITY: f32 = f32::NEG_INFINITY;
    const MIN_POSITIVE: f32 = f32::MIN_POSITIVE;
    const MIN: f32 = f32::MIN;
    const LANES: usize = 16;

    lane_reductions!(f32, 16);

    #[inline(always)]
    fn from_f64(x: f64) -> f32 {
        x as f32
    }
    #[inline(always)]
    fn to_f64(self) -> f64 {
        f64::from(self)
    }
    #[inline(always)]
    fn fma(self, a: f32, b: f32) -> f32 {
        self.mul_add(a, b)
    }
    #[inline(always)]
    fn is_nan(self) -> bool {
        f32::is_nan(self)
    }
    #[inline(always)]
    fn abs(self) -> f32 {
        f32::abs(self)
    }
    #[inline(always)]
    fn next_down(self) -> f32 {
        f32::next_down(self)
    }
    #[inline(always)]
    fn exp(self) -> f32 {
        exp_f32(self)
    }
    #[inline(always)]
    fn ln(self) -> f32 {
        ln_f32(self)
    }
    #[inline(always)]
    fn ln_1p(self) -> f32 {
        ln_1p_f32(self)
    }
    #[inline(always)]
    fn exp_nonpositive(self) -> f32 {
        exp_nonpositive_f32(self)
    }
    #[inline(always)]
    fn ln_normal(self) -> f32 {
        ln_split_f32(self, 127)
    }
    #[inline(always)]
    fn uniform(stream: &crate::rng::Stream, i: u64) -> f32 {
        uniform_f32(stream.word(i))
    }
    #[inline(always)]
    fn fill_uniform_cached(
        stream: &crate::rng::Stream,
        start: u64,
        out: &mut [f32],
        cache: &mut GroupCache<f32>,
    ) {
        for_groups(stream, start, out, group_f32, cache);
    }
}

// ---------------------------------------------------------------- float64

const F64_LN2_HI: f64 = f64::from_bits(0x3fe6_2e42_fee0_0000); // ln 2 with 21 trailing zero bits
const F64_LN2_LO: f64 = f64::from_bits(0x3dea_39ef_3579_3c76); // ln 2 - F64_LN2_HI
const F64_LOG2E: f64 = std::f64::consts::LOG2_E;
const F64_ROUND_MAGIC: f64 = 6_755_399_441_055_744.0; // 1.5 * 2^52
const F64_SQRT_HALF_HI: u64 = 0x3fe6_a09e; // upper word of sqrt(1/2)

/// exp(r) for |r| <= ln(2)/2: Taylor polynomial of degree 13 (truncation < 2^-57).
#[inline(always)]
fn exp_poly_f64(r: f64) -> f64 {
    const C: [f64; 14] = [
        1.0 / 6_227_020_800.0,
        1.0 / 479_001_600.0,
        1.0 / 39_916_800.0,
        1.0 / 3_628_800.0,
        1.0 / 362_880.0,
        1.0 / 40_320.0,
        1.0 / 5_040.0,
        1.0 / 720.0,
        1.0 / 120.0,
        1.0 / 24.0,
        1.0 / 6.0,
        0.5,
        1.0,
        1.0,
    ];
    let mut p = C[0];
    for &c in &C[1..] {
        p = p.mul_add(r, c);
    }
    p
}

#[inline(always)]
fn exp_exponent_f64(x: f64) -> f64 {
    (x * F64_LOG2E + F64_ROUND_MAGIC) - F64_ROUND_MAGIC
}

/// As `exp_parts_f32`.
#[inline(always)]
fn exp_parts_f64(x: f64, nc: f64) -> (f64, i64) {
    let r = (-nc).mul_add(F64_LN2_HI, x);
    let r = (-nc).mul_add(F64_LN2_LO, r);
    // The integer nc from the bits of nc + 1.5 * 2^52, as for float32.
    let ni = (nc + F64_ROUND_MAGIC).to_bits() as i64 - F64_ROUND_MAGIC.to_bits() as i64;
    (exp_poly_f64(r), ni)
}

#[inline(always)]
fn exp_f64(x: f64) -> f64 {
    let n = exp_exponent_f64(x);
    let nc = sel(n < -1023.0, -1023.0, sel(n > 1024.0, 1024.0, n));
    let (p, ni) = exp_parts_f64(x, nc);
    let scale = f64::from_bits(((ni.min(1023) + 1023) as u64) << 52);
    let y = p * scale * sel(ni > 1023, 2.0, 1.0);
    sel(
        n < -1022.0,
        0.0,
        sel(x > 709.782_712_893_384, f64::INFINITY, y),
    )
}

/// `exp_f64` for x <= 0, as `exp_nonpositive_f32`.
#[inline(always)]
fn exp_nonpositive_f64(x: f64) -> f64 {
    let n = exp_exponent_f64(x);
    let (p, ni) = exp_parts_f64(x, sel(n < -1023.0, -1023.0, n));
    sel(
        n < -1022.0,
        0.0,
        p * f64::from_bits(((ni + 1023) as u64) << 52),
    )
}

/// ln(m) for m in [sqrt(1/2), sqrt(2)) as for float32, with terms up to 2/21 z^9.
#[inline(always)]
fn ln_mantissa_f64(m: f64) -> f64 {
    let f = m - 1.0;
    let s = f / (2.0 + f);
    let z = s * s;
    let mut p: f64 = 2.0 / 21.0;
    for c in [
        2.0 / 19.0,
        2.0 / 17.0,
        2.0 / 15.0,
        2.0 / 13.0,
        2.0 / 11.0,
        2.0 / 9.0,
        2.0 / 7.0,
        2.0 / 5.0,
        2.0 / 3.0,
    ] {
        p = p.mul_add(z, c);
    }
    let sz = s * z;
    sz.mul_add(p, s + s)
}

/// As `ln_split_f32`.
#[inline(always)]
fn ln_split_f64(xs: f64, bias: i32) -> f64 {
    let bits = xs.to_bits();
    let hx = (bits >> 32).wrapping_add(0x3ff0_0000 - F64_SQRT_HALF_HI);
    let k = (hx >> 20) as i32 - bias;
    let m_hi = (hx & 0x000f_ffff).wrapping_add(F64_SQRT_HALF_HI);
    let m = f64::from_bits((m_hi << 32) | (bits & 0xffff_ffff));
    let kf = k as f64;
    kf.mul_add(F64_LN2_HI, kf.mul_add(F64_LN2_LO, ln_mantissa_f64(m)))
}

#[inline(always)]
fn ln_f64(x: f64) -> f64 {
    let subnormal = x < f64::MIN_POSITIVE;
    let xs = sel(subnormal, x * 4_503_599_627_370_496.0, x); // 2^52 scales subnormals
    let y = ln_split_f64(xs, 1023 + sel(subnormal, 52, 0));
    let y = sel(x == 0.0, f64::NEG_INFINITY, sel(x == f64::INFINITY, x, y));
    sel(x >= 0.0, y, f64::NAN)
}

/// ln(1 + x), as for float32.
#[inline(always)]
fn ln_1p_f64(x: f64) -> f64 {
    let u = 1.0 + x;
    let y = ln_f64(u) + (x - (u - 1.0)) / u;
    sel(u == f64::INFINITY, u, y)
}

/// float64 uniform from one 64-bit word: `v = (w >> 12 + 1/2) * 2^-52`, exact,
/// in [2^-53, 1 - 2^-53].
#[inline(always)]
pub fn uniform_f64(w: u64) -> f64 {
    ((w >> 12) as f64 + 0.5) * (1.0 / 4_503_599_627_370_496.0)
}

impl Real for f64 {
    const ZERO: f64 = 0.0;
    const ONE: f64 = 1.0;
    const INFINITY: f64 = f64::INFINITY;
    const NEG_INFINITY: f64 = f64::NEG_INFINITY;
    const MIN_POSITIVE: f64 = f64::MIN_POSITIVE;
    const MIN: f64 = f64::MIN;
    const LANES: usize = 8;

    lane_reductions!(f64, 8);

    #[inline(always)]
    fn from_f64(x: f64) -> f64 {
        x
    }
    #[inline(always)]
    fn to_f64(self) -> f64 {
        self
    }
    #[inline(always)]
    fn fma(self, a: f64, b: f64) -> f64 {
        self.mul_add(a, b)
    }
    #[inline(always)]
    fn is_nan(self) -> bool {
        f64::is_nan(self)
    }
    #[inline(always)]
    fn abs(self) -> f64 {
        f64::abs(self)
    }
    #[inline(always)]
    fn next_down(self) -> f64 {
        f64::next_down(self)
    }
    #[inline(always)]
    fn exp(self) -> f64 {
        exp_f64(self)
    }
    #[inline(always)]
    fn ln(self) -> f64 {
        ln_f64(self)
    }
    #[inline(always)]
    fn ln_1p(self) -> f64 {
        ln_1p_f64(self)
    }
    #[inline(always)]
    fn exp_nonpositive(self) -> f64 {
        exp_nonpositive_f64(self)
    }
    #[inline(always)]
    fn ln_normal(self) -> f64 {
        ln_split_f64(self, 1023)
    }
    #[inline(always)]
    fn uniform(stream: &crate::rng::Stream, i: u64) -> f64 {
        uniform_f64(stream.word64(i))
    }
    #[inline(always)]
    fn fill_uniform_cached(
        stream: &crate::rng::Stream,
        start: u64,
        out: &mut [f64],
        cache: &mut GroupCache<f64>,
    ) {
        for_groups(stream, start, out, group_f64, cache);
    }
}

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
    }
}
