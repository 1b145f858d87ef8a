/* gumbelrs device functions: Philox4x32-10, uniforms, exp/ln/ln1p, noise,
 * sigmoid and the truncated Gumbel of the conditioned sampler.
 *
 * The same text compiles as CUDA (NVRTC or nvcc) and as host C/C++, and
 * follows rust/rng.rs and rust/math.rs operation by operation: the same
 * correctly rounded operations in the same order, with explicit fused
 * multiply-adds and nothing else fused. Compile with `--fmad=false` (NVRTC)
 * or `-ffp-contract=off` (C) so no other multiply-add is contracted; then the
 * noise is bitwise the Rust core's (tests/test_cuda_sources.py checks the
 * host build over millions of values).
 */
#ifndef GUMBELRS_COMMON_CUH
#define GUMBELRS_COMMON_CUH

#if defined(__CUDACC_RTC__)
typedef unsigned int grs_u32;
typedef unsigned long long grs_u64;
typedef int grs_i32;
typedef long long grs_i64;
#define GRS_FN __device__ __forceinline__
#define GRS_INF_F __int_as_float(0x7f800000)
#define GRS_NAN_F __int_as_float(0x7fc00000)
#define GRS_INF_D __longlong_as_double(0x7ff0000000000000LL)
#define GRS_NAN_D __longlong_as_double(0x7ff8000000000000LL)
#else
#include <math.h>
#include <stdint.h>
#include <string.h>
typedef uint32_t grs_u32;
typedef uint64_t grs_u64;
typedef int32_t grs_i32;
typedef int64_t grs_i64;
#if defined(__CUDACC__)
#define GRS_FN __host__ __device__ __forceinline__
#else
#define GRS_FN static inline
#endif
#define GRS_INF_F ((float)INFINITY)
#define GRS_NAN_F ((float)NAN)
#define GRS_INF_D ((double)INFINITY)
#define GRS_NAN_D ((double)NAN)
#endif

/* ------------------------------------------------------------ bit casts */

GRS_FN grs_u32 grs_f2u(float x) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(x);
#else
  grs_u32 u;
  memcpy(&u, &x, sizeof u);
  return u;
#endif
}

GRS_FN float grs_u2f(grs_u32 u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float x;
  memcpy(&x, &u, sizeof x);
  return x;
#endif
}

GRS_FN grs_u64 grs_d2u(double x) {
#if defined(__CUDA_ARCH__)
  return (grs_u64)__double_as_longlong(x);
#else
  grs_u64 u;
  memcpy(&u, &x, sizeof u);
  return u;
#endif
}

GRS_FN double grs_u2d(grs_u64 u) {
#if defined(__CUDA_ARCH__)
  return __longlong_as_double((grs_i64)u);
#else
  double x;
  memcpy(&x, &u, sizeof x);
  return x;
#endif
}

/* ------------------------------------------------------------ Philox */

/* Philox4x32-10 of counter c under key (k0, k1), in place. */
GRS_FN void grs_philox(grs_u32 c[4], grs_u32 k0, grs_u32 k1) {
  for (int r = 0; r < 10; ++r) {
    if (r > 0) {
      k0 += 0x9E3779B9u;
      k1 += 0xBB67AE85u;
    }
    grs_u64 p0 = (grs_u64)0xD2511F53u * c[0];
    grs_u64 p1 = (grs_u64)0xCD9E8D57u * c[2];
    grs_u32 n0 = (grs_u32)(p1 >> 32) ^ c[1] ^ k0;
    grs_u32 n2 = (grs_u32)(p0 >> 32) ^ c[3] ^ k1;
    c[0] = n0;
    c[1] = (grs_u32)p1;
    c[2] = n2;
    c[3] = (grs_u32)p0;
  }
}

/* The four words of block `block` of the stream (seed, offset). */
GRS_FN void grs_block(grs_u64 seed, grs_u64 offset, grs_u64 block, grs_u32 w[4]) {
  w[0] = (grs_u32)block;
  w[1] = (grs_u32)(block >> 32);
  w[2] = (grs_u32)offset;
  w[3] = (grs_u32)(offset >> 32);
  grs_philox(w, (grs_u32)seed, (grs_u32)(seed >> 32));
}

/* 32-bit word i: word i % 4 of block i / 4. */
GRS_FN grs_u32 grs_word(grs_u64 seed, grs_u64 offset, grs_u64 i) {
  grs_u32 w[4];
  grs_block(seed, offset, i / 4, w);
  grs_u32 j = (grs_u32)(i % 4); /* selected, not indexed: w stays in registers */
  return j == 0 ? w[0] : (j == 1 ? w[1] : (j == 2 ? w[2] : w[3]));
}

/* 64-bit word i: words 2(i % 2) (low) and 2(i % 2) + 1 of block i / 2. */
GRS_FN grs_u64 grs_word64(grs_u64 seed, grs_u64 offset, grs_u64 i) {
  grs_u32 w[4];
  grs_block(seed, offset, i / 2, w);
  return i % 2 == 0 ? ((grs_u64)w[0] | ((grs_u64)w[1] << 32))
                    : ((grs_u64)w[2] | ((grs_u64)w[3] << 32));
}

/* ------------------------------------------------------------ uniforms */

/* float32 v = round(w >> 1) * 2^-31, clamped into [2^-32, 1 - 2^-24]. */
GRS_FN float grs_uniform_f32(grs_u32 w) {
  float v = (float)(grs_i32)(w >> 1) * (1.0f / 2147483648.0f);
  v = v < 2.3283064e-10f ? 2.3283064e-10f : v;
  return v > 0.99999994f ? 0.99999994f : v;
}

/* float64 v = ((w >> 12) + 1/2) * 2^-52, exact. */
GRS_FN double grs_uniform_f64(grs_u64 w) {
  return ((double)(w >> 12) + 0.5) * (1.0 / 4503599627370496.0);
}

/* ------------------------------------------------------------ float32 */

GRS_FN float grs_exp_f32(float x) {
  const float magic = 12582912.0f; /* 1.5 * 2^23 */
  float n = (x * 1.44269504088896340736f + magic) - magic;
  float nc = n < -127.0f ? -127.0f : (n > 128.0f ? 128.0f : n);
  float r = fmaf(-nc, grs_u2f(0x3f317200u), x);
  r = fmaf(-nc, grs_u2f(0x35bfbe8eu), r);
  grs_i32 ni = (grs_i32)grs_f2u(nc + magic) - (grs_i32)grs_f2u(magic);
  float scale = grs_u2f((grs_u32)((ni < 127 ? ni : 127) + 127) << 23);
  float p = 1.0f / 5040.0f;
  p = fmaf(p, r, 1.0f / 720.0f);
  p = fmaf(p, r, 1.0f / 120.0f);
  p = fmaf(p, r, 1.0f / 24.0f);
  p = fmaf(p, r, 1.0f / 6.0f);
  p = fmaf(p, r, 0.5f);
  p = fmaf(p, r, 1.0f);
  p = fmaf(p, r, 1.0f);
  float y = p * scale * (ni > 127 ? 2.0f : 1.0f);
  return n < -126.0f ? 0.0f : (x > 88.72284f ? GRS_INF_F : y);
}

GRS_FN float grs_ln_f32(float x) {
  const grs_u32 sqrt_half = 0x3f3504f3u;
  int subnormal = x < 1.17549435e-38f;
  float xs = subnormal ? x * 8388608.0f : x;
  grs_u32 ix = grs_f2u(xs) + (0x3f800000u - sqrt_half);
  grs_i32 k = (grs_i32)(ix >> 23) - 127 - (subnormal ? 23 : 0);
  float m = grs_u2f((ix & 0x007fffffu) + sqrt_half);
  float f = m - 1.0f;
  float z = f * f;
  float p = 0.069281116f;
  p = fmaf(p, f, -0.11648472f);
  p = fmaf(p, f, 0.117906384f);
  p = fmaf(p, f, -0.12404185f);
  p = fmaf(p, f, 0.14232977f);
  p = fmaf(p, f, -0.16668501f);
  p = fmaf(p, f, 0.20001452f);
  p = fmaf(p, f, -0.24999993f);
  p = fmaf(p, f, 0.33333322f);
  float lm = fmaf(f, fmaf(z, p, -0.5f * f), f);
  float kf = (float)k;
  float y = fmaf(kf, grs_u2f(0x3f317200u), fmaf(kf, grs_u2f(0x35bfbe8eu), lm));
  y = x == 0.0f ? -GRS_INF_F : (x == GRS_INF_F ? x : y);
  return x >= 0.0f ? y : GRS_NAN_F;
}

GRS_FN float grs_ln1p_f32(float x) {
  float u = 1.0f + x;
  float y = grs_ln_f32(u) + (x - (u - 1.0f)) / u;
  return u == GRS_INF_F ? u : y;
}

/* E = -ln(1 - v) for a uniform v, as ln1p without its division: the
 * correction c / u is 0 unless v < 1/2, where d = 1 - u is exact and
 * 1 / u = 1 + d + d^2 + d^3 closely enough (rust/math.rs exponential_from_uniform). */
GRS_FN float grs_exponential_f32(float v) {
  float x = -v;
  float u = 1.0f + x;
  float d = 1.0f - u;
  float inv_u = fmaf(fmaf(d + 1.0f, d, 1.0f), d, 1.0f);
  return -fmaf(x - (u - 1.0f), inv_u, grs_ln_f32(u));
}

/* Gumbel noise -ln(-ln(1 - v)) and logistic noise ln((1 - v) / v). */
GRS_FN float grs_gumbel_f32(float v) { return -grs_ln_f32(grs_exponential_f32(v)); }
GRS_FN float grs_logistic_f32(float v) { return grs_ln_f32((1.0f - v) / v); }

/* 1 / (1 + exp(-z)) through exp(-|z|), so it never overflows (rust/math.rs sigmoid). */
GRS_FN float grs_sigmoid_f32(float z) {
  int nonneg = z >= 0.0f;
  float t = grs_exp_f32(nonneg ? -z : z);
  return (nonneg ? 1.0f : t) / (1.0f + t);
}

/* The largest float below a finite x. */
GRS_FN float grs_next_down_f32(float x) {
  grs_u32 u = grs_f2u(x);
  if (x == 0.0f) return grs_u2f(0x80000001u);
  return grs_u2f(x > 0.0f ? u - 1u : u + 1u);
}

/* The upper-truncated Gumbel of the conditioned sampler (rust/kernels/sampling.rs):
 * a = logit + g given the maximum top; strictly below top, unless top is the
 * lowest finite value (then z rounds to it: nothing finite lies below). */
GRS_FN float grs_below_top_f32(float a, float top) {
  float lo = top < a ? top : a;
  float d = a - top;
  float z = lo - grs_ln1p_f32(grs_exp_f32(-fabsf(d)));
  return z < top || top == -3.40282346638528859812e+38f ? z : grs_next_down_f32(top);
}

/* ------------------------------------------------------------ float64 */

GRS_FN double grs_exp_f64(double x) {
  const double magic = 6755399441055744.0; /* 1.5 * 2^52 */
  double n = (x * 1.4426950408889634074 + magic) - magic;
  double nc = n < -1023.0 ? -1023.0 : (n > 1024.0 ? 1024.0 : n);
  double r = fma(-nc, grs_u2d(0x3fe62e42fee00000ull), x);
  r = fma(-nc, grs_u2d(0x3dea39ef35793c76ull), r);
  grs_i64 ni = (grs_i64)grs_d2u(nc + magic) - (grs_i64)grs_d2u(magic);
  double scale = grs_u2d((grs_u64)((ni < 1023 ? ni : 1023) + 1023) << 52);
  const double c[14] = {1.0 / 6227020800.0, 1.0 / 479001600.0, 1.0 / 39916800.0,
                        1.0 / 3628800.0,    1.0 / 362880.0,    1.0 / 40320.0,
                        1.0 / 5040.0,       1.0 / 720.0,       1.0 / 120.0,
                        1.0 / 24.0,         1.0 / 6.0,         0.5,
                        1.0,                1.0};
  double p = c[0];
  for (int i = 1; i < 14; ++i) p = fma(p, r, c[i]);
  double y = p * scale * (ni > 1023 ? 2.0 : 1.0);
  return n < -1022.0 ? 0.0 : (x > 709.782712893384 ? GRS_INF_D : y);
}

GRS_FN double grs_ln_f64(double x) {
  const grs_u64 sqrt_half_hi = 0x3fe6a09eull;
  int subnormal = x < 2.2250738585072014e-308;
  double xs = subnormal ? x * 4503599627370496.0 : x;
  grs_u64 bits = grs_d2u(xs);
  grs_u64 hx = (bits >> 32) + (0x3ff00000ull - sqrt_half_hi);
  grs_i32 k = (grs_i32)(hx >> 20) - 1023 - (subnormal ? 52 : 0);
  grs_u64 m_hi = (hx & 0x000fffffull) + sqrt_half_hi;
  double m = grs_u2d((m_hi << 32) | (bits & 0xffffffffull));
  double f = m - 1.0;
  double s = f / (2.0 + f);
  double z = s * s;
  const double c[9] = {2.0 / 19.0, 2.0 / 17.0, 2.0 / 15.0, 2.0 / 13.0, 2.0 / 11.0,
                       2.0 / 9.0,  2.0 / 7.0,  2.0 / 5.0,  2.0 / 3.0};
  double p = 2.0 / 21.0;
  for (int i = 0; i < 9; ++i) p = fma(p, z, c[i]);
  double sz = s * z;
  double lm = fma(sz, p, s + s);
  double kf = (double)k;
  double y = fma(kf, grs_u2d(0x3fe62e42fee00000ull), fma(kf, grs_u2d(0x3dea39ef35793c76ull), lm));
  y = x == 0.0 ? -GRS_INF_D : (x == GRS_INF_D ? x : y);
  return x >= 0.0 ? y : GRS_NAN_D;
}

GRS_FN double grs_ln1p_f64(double x) {
  double u = 1.0 + x;
  double y = grs_ln_f64(u) + (x - (u - 1.0)) / u;
  return u == GRS_INF_D ? u : y;
}

GRS_FN double grs_exponential_f64(double v) {
  double x = -v;
  double u = 1.0 + x;
  double d = 1.0 - u;
  double inv_u = fma(fma(d + 1.0, d, 1.0), d, 1.0);
  return -fma(x - (u - 1.0), inv_u, grs_ln_f64(u));
}

GRS_FN double grs_gumbel_f64(double v) { return -grs_ln_f64(grs_exponential_f64(v)); }
GRS_FN double grs_logistic_f64(double v) { return grs_ln_f64((1.0 - v) / v); }

GRS_FN double grs_sigmoid_f64(double z) {
  int nonneg = z >= 0.0;
  double t = grs_exp_f64(nonneg ? -z : z);
  return (nonneg ? 1.0 : t) / (1.0 + t);
}

GRS_FN double grs_next_down_f64(double x) {
  grs_u64 u = grs_d2u(x);
  if (x == 0.0) return grs_u2d(0x8000000000000001ull);
  return grs_u2d(x > 0.0 ? u - 1u : u + 1u);
}

GRS_FN double grs_below_top_f64(double a, double top) {
  double lo = top < a ? top : a;
  double d = a - top;
  double z = lo - grs_ln1p_f64(grs_exp_f64(-fabs(d)));
  return z < top || top == -1.7976931348623157e308 ? z : grs_next_down_f64(top);
}

#endif /* GUMBELRS_COMMON_CUH */
