//! The elementary functions every device shares: `exp`, `ln` and `ln_1p`
//! of float32 and float64, our own polynomial approximations written with
//! explicit fused multiply-adds and IEEE division only, so the same
//! sequence of correctly rounded operations can be reproduced on any device
//! (the GPU path compiles the same formulas with `--fmad=false`); and the
//! noise and sigmoid built from them.

use super::{sel, Real};

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
pub(crate) const F32_SQRT_HALF_BITS: u32 = 0x3f35_04f3;

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
pub(crate) fn exp_poly_f32(r: f32) -> f32 {
    let mut p = F32_EXP_POLY[0];
    for &c in &F32_EXP_POLY[1..] {
        p = p.mul_add(r, c);
    }
    p
}

// The elementary functions below have no early returns: special inputs are
// computed along the main path and replaced by selects at the end, so loops
// over them vectorize (and every build computes the same values).

/// Round x*log2(e) to the nearest integer (ties to even) with the magic constant.
#[inline(always)]
pub(crate) fn exp_exponent_f32(x: f32) -> f32 {
    (x * F32_LOG2E + F32_ROUND_MAGIC) - F32_ROUND_MAGIC
}

/// exp(x) = 2^nc * exp(r) for the clamped exponent `nc`: `exp(r)` and the
/// integer `nc`.
#[inline(always)]
pub(crate) fn exp_parts_f32(x: f32, nc: f32) -> (f32, i32) {
    let r = (-nc).mul_add(F32_LN2_HI, x);
    let r = (-nc).mul_add(F32_LN2_LO, r);
    // The integer nc from the bits of nc + 1.5 * 2^23 (a float-to-int `as`
    // cast would not vectorize); a NaN gives garbage, and a NaN result anyway.
    let ni = (nc + F32_ROUND_MAGIC).to_bits() as i32 - F32_ROUND_MAGIC.to_bits() as i32;
    (exp_poly_f32(r), ni)
}

#[inline(always)]
pub(crate) fn exp_f32(x: f32) -> f32 {
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
pub(crate) fn exp_nonpositive_f32(x: f32) -> f32 {
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
pub(crate) fn ln_mantissa_f32(m: f32) -> f32 {
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
pub(crate) fn ln_split_f32(xs: f32, bias: i32) -> f32 {
    let ix = xs.to_bits().wrapping_add(0x3f80_0000 - F32_SQRT_HALF_BITS);
    let k = (ix >> 23) as i32 - bias;
    let m = f32::from_bits((ix & 0x007f_ffff).wrapping_add(F32_SQRT_HALF_BITS));
    let kf = k as f32;
    kf.mul_add(F32_LN2_HI, kf.mul_add(F32_LN2_LO, ln_mantissa_f32(m)))
}

#[inline(always)]
pub(crate) fn ln_f32(x: f32) -> f32 {
    let subnormal = x < f32::MIN_POSITIVE;
    let xs = sel(subnormal, x * 8_388_608.0, x); // 2^23 scales subnormals to normals
    let y = ln_split_f32(xs, 127 + sel(subnormal, 23, 0));
    let y = sel(x == 0.0, f32::NEG_INFINITY, sel(x == f32::INFINITY, x, y));
    sel(x >= 0.0, y, f32::NAN) // negative or NaN
}

/// ln(1 + x) as ln(u) + (x - (u - 1)) / u with u = 1 + x rounded: the
/// second term corrects for the rounding of u (`x - (u - 1)` is exact).
#[inline(always)]
pub(crate) fn ln_1p_f32(x: f32) -> f32 {
    let u = 1.0 + x;
    let y = ln_f32(u) + (x - (u - 1.0)) / u;
    sel(u == f32::INFINITY, u, y)
}

// ---------------------------------------------------------------- float64

pub(crate) const F64_LN2_HI: f64 = f64::from_bits(0x3fe6_2e42_fee0_0000); // ln 2 with 21 trailing zero bits
pub(crate) const F64_LN2_LO: f64 = f64::from_bits(0x3dea_39ef_3579_3c76); // ln 2 - F64_LN2_HI
pub(crate) const F64_LOG2E: f64 = std::f64::consts::LOG2_E;
pub(crate) const F64_ROUND_MAGIC: f64 = 6_755_399_441_055_744.0; // 1.5 * 2^52
pub(crate) const F64_SQRT_HALF_HI: u64 = 0x3fe6_a09e; // upper word of sqrt(1/2)

/// exp(r) for |r| <= ln(2)/2: Taylor polynomial of degree 13 (truncation < 2^-57).
#[inline(always)]
pub(crate) fn exp_poly_f64(r: f64) -> f64 {
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
pub(crate) fn exp_exponent_f64(x: f64) -> f64 {
    (x * F64_LOG2E + F64_ROUND_MAGIC) - F64_ROUND_MAGIC
}

/// As `exp_parts_f32`.
#[inline(always)]
pub(crate) fn exp_parts_f64(x: f64, nc: f64) -> (f64, i64) {
    let r = (-nc).mul_add(F64_LN2_HI, x);
    let r = (-nc).mul_add(F64_LN2_LO, r);
    // The integer nc from the bits of nc + 1.5 * 2^52, as for float32.
    let ni = (nc + F64_ROUND_MAGIC).to_bits() as i64 - F64_ROUND_MAGIC.to_bits() as i64;
    (exp_poly_f64(r), ni)
}

#[inline(always)]
pub(crate) fn exp_f64(x: f64) -> f64 {
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
pub(crate) fn exp_nonpositive_f64(x: f64) -> f64 {
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
pub(crate) fn ln_mantissa_f64(m: f64) -> f64 {
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
pub(crate) fn ln_split_f64(xs: f64, bias: i32) -> f64 {
    let bits = xs.to_bits();
    let hx = (bits >> 32).wrapping_add(0x3ff0_0000 - F64_SQRT_HALF_HI);
    let k = (hx >> 20) as i32 - bias;
    let m_hi = (hx & 0x000f_ffff).wrapping_add(F64_SQRT_HALF_HI);
    let m = f64::from_bits((m_hi << 32) | (bits & 0xffff_ffff));
    let kf = k as f64;
    kf.mul_add(F64_LN2_HI, kf.mul_add(F64_LN2_LO, ln_mantissa_f64(m)))
}

#[inline(always)]
pub(crate) fn ln_f64(x: f64) -> f64 {
    let subnormal = x < f64::MIN_POSITIVE;
    let xs = sel(subnormal, x * 4_503_599_627_370_496.0, x); // 2^52 scales subnormals
    let y = ln_split_f64(xs, 1023 + sel(subnormal, 52, 0));
    let y = sel(x == 0.0, f64::NEG_INFINITY, sel(x == f64::INFINITY, x, y));
    sel(x >= 0.0, y, f64::NAN)
}

/// ln(1 + x), as for float32.
#[inline(always)]
pub(crate) fn ln_1p_f64(x: f64) -> f64 {
    let u = 1.0 + x;
    let y = ln_f64(u) + (x - (u - 1.0)) / u;
    sel(u == f64::INFINITY, u, y)
}
