/* Device-only building blocks of the kernels: storage types, the compute
 * type's functions, fault codes, group reductions and the walk over a row.
 *
 * A tensor reduced along one dimension is seen as (outer, k, inner), as in
 * rust/kernels/mod.rs: row r holds the elements base + t * inner, t < k, with
 * base = (r / inner) * k * inner + r % inner. A *group* of G threads (G a
 * power of two, at most the block size) works on one row; G <= 32 groups
 * share warps, G > 32 is the whole block.
 *
 * Besides NVRTC, tests/cuda_emulator.cpp compiles this file as host C++
 * (threads for CUDA threads) to run the kernels on the CPU.
 */
#ifndef GUMBELRS_DEVICE_CUH
#define GUMBELRS_DEVICE_CUH

#include "common.cuh"

#define GRS_DEV __device__ __forceinline__

/* ------------------------------------------------------------ storage */

/* float16 and bfloat16 as bits; they are computed in float32. */
struct grs_half {
  unsigned short b;
};
struct grs_bf16 {
  unsigned short b;
};

GRS_DEV float grs_load(const float* p, long long i) { return p[i]; }
GRS_DEV double grs_load(const double* p, long long i) { return p[i]; }
GRS_DEV float grs_load(const grs_half* p, long long i) {
#if defined(__CUDA_ARCH__)
  float f;
  asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(p[i].b));
  return f;
#else /* the host build of tests/cuda_emulator.cpp */
  _Float16 h;
  memcpy(&h, &p[i].b, 2);
  return (float)h;
#endif
}
GRS_DEV float grs_load(const grs_bf16* p, long long i) {
  return __uint_as_float(((unsigned)p[i].b) << 16);
}

GRS_DEV void grs_store(float* p, long long i, float v) { p[i] = v; }
GRS_DEV void grs_store(double* p, long long i, double v) { p[i] = v; }
GRS_DEV void grs_store(grs_half* p, long long i, float v) {
#if defined(__CUDA_ARCH__)
  unsigned short h;
  asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(v));
  p[i].b = h;
#else
  _Float16 h = (_Float16)v;
  memcpy(&p[i].b, &h, 2);
#endif
}
/* Round to nearest even, as torch's float -> bfloat16 conversion. */
GRS_DEV void grs_store(grs_bf16* p, long long i, float v) {
  unsigned u = __float_as_uint(v);
  unsigned short b = v != v ? (unsigned short)0x7fc0
                            : (unsigned short)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
  p[i].b = b;
}

/* ------------------------------------------------------------ compute type */

enum { GRS_UNIFORM = 0, GRS_GUMBEL = 1, GRS_LOGISTIC = 2 };

template <class C>
struct Math;

template <>
struct Math<float> {
  /* Elements per Philox block: one 32-bit word each. */
  static constexpr int EPB = 4;
  static GRS_DEV float inf() { return GRS_INF_F; }
  /* The smallest normal value: the least temperature whose inverse is finite. */
  static GRS_DEV float min_normal() { return 1.17549435082228750797e-38f; }
  static GRS_DEV float nan() { return GRS_NAN_F; }
  static GRS_DEV float uniform(const grs_u32 w[4], int j) { return grs_uniform_f32(w[j]); }
  static GRS_DEV float uniform_at(grs_u64 seed, grs_u64 offset, grs_u64 i) {
    return grs_uniform_f32(grs_word(seed, offset, i));
  }
  static GRS_DEV float noise(int kind, float v) {
    return kind == GRS_GUMBEL ? grs_gumbel_f32(v) : (kind == GRS_LOGISTIC ? grs_logistic_f32(v) : v);
  }
  static GRS_DEV float exp(float x) { return grs_exp_f32(x); }
  static GRS_DEV float ln(float x) { return grs_ln_f32(x); }
  static GRS_DEV float sigmoid(float x) { return grs_sigmoid_f32(x); }
  static GRS_DEV float below_top(float a, float top) { return grs_below_top_f32(a, top); }
  static GRS_DEV float fma(float a, float b, float c) { return fmaf(a, b, c); }
};

template <>
struct Math<double> {
  /* Elements per Philox block: two 64-bit words each. */
  static constexpr int EPB = 2;
  static GRS_DEV double inf() { return GRS_INF_D; }
  static GRS_DEV double min_normal() { return 2.2250738585072013831e-308; }
  static GRS_DEV double nan() { return GRS_NAN_D; }
  static GRS_DEV double uniform(const grs_u32 w[4], int j) {
    return grs_uniform_f64((grs_u64)w[2 * j] | ((grs_u64)w[2 * j + 1] << 32));
  }
  static GRS_DEV double uniform_at(grs_u64 seed, grs_u64 offset, grs_u64 i) {
    return grs_uniform_f64(grs_word64(seed, offset, i));
  }
  static GRS_DEV double noise(int kind, double v) {
    return kind == GRS_GUMBEL ? grs_gumbel_f64(v) : (kind == GRS_LOGISTIC ? grs_logistic_f64(v) : v);
  }
  static GRS_DEV double exp(double x) { return grs_exp_f64(x); }
  static GRS_DEV double ln(double x) { return grs_ln_f64(x); }
  static GRS_DEV double sigmoid(double x) { return grs_sigmoid_f64(x); }
  static GRS_DEV double below_top(double a, double top) { return grs_below_top_f64(a, top); }
  static GRS_DEV double fma(double a, double b, double c) { return ::fma(a, b, c); }
};

/* ------------------------------------------------------------ output modes */

/* What a forward with a straight-through mode (Gumbel-Softmax, relaxed
 * Bernoulli) writes: the soft sample into y; the one-hot sample into y and
 * the soft one into a second output; the one-hot sample alone. Rust's
 * kernels::OutputMode and gumbelrs._protocol.OutputMode, by the same names. */
enum GrsOutputMode { GRS_SOFT = 0, GRS_ONE_HOT_WITH_SOFT = 1, GRS_ONE_HOT = 2 };

/* ------------------------------------------------------------ faults */

/* The kinds of fault: Rust's kernels::FaultKind and
 * gumbelrs._protocol.FaultKind, by the same names and codes. No kernel here
 * records GRS_F_INFEASIBLE: the exact solvers that find it run on the CPU. */
enum GrsFaultKind { GRS_F_NAN = 1, GRS_F_POSINF = 2, GRS_F_ALL_MASKED = 3, GRS_F_INDEX = 4,
                    GRS_F_TAU = 5, GRS_F_TOO_FEW = 6, GRS_F_INFEASIBLE = 7 };

/* A fault is one 64-bit code, and the smallest code of a call wins. Its
 * fields, low bits first (gumbelrs._protocol.FaultCode decodes them):
 *   kind      GRS_FAULT_KIND_BITS bits, a GrsFaultKind;
 *   position  GRS_FAULT_POS_BITS bits from GRS_FAULT_POS_SHIFT: the flat
 *             position (of the logit, of the row's first element, or of the
 *             temperature), at most GRS_FAULT_POS_MAX;
 *   class     the bit GRS_FAULT_CLASS_SHIFT: 0 for a bad temperature
 *             (checked first, as on the CPU), else 1;
 *   sequence  the bits from GRS_FAULT_SEQ_SHIFT up: the call's number, set
 *             by the host in `tag`.
 * The host keeps the buffer at all ones (GRS_NO_FAULT) when there is no fault. */
#define GRS_FAULT_KIND_BITS 3
#define GRS_FAULT_POS_SHIFT 3
#define GRS_FAULT_POS_BITS 36
#define GRS_FAULT_CLASS_SHIFT 39
#define GRS_FAULT_SEQ_SHIFT 40
#define GRS_FAULT_POS_MAX ((1ull << GRS_FAULT_POS_BITS) - 1)
#define GRS_NO_FAULT ((grs_u64)0xffffffffffffffffull)

GRS_DEV grs_u64 grs_fault(grs_u64 tag, int kind, long long pos) {
  grs_u64 p = pos < 0 ? 0 : ((grs_u64)pos > GRS_FAULT_POS_MAX ? GRS_FAULT_POS_MAX : (grs_u64)pos);
  grs_u64 cls = kind == GRS_F_TAU ? 0ull : 1ull;
  return tag | (cls << GRS_FAULT_CLASS_SHIFT) | (p << GRS_FAULT_POS_SHIFT) | (grs_u64)kind;
}

GRS_DEV grs_u64 grs_min_u64(grs_u64 a, grs_u64 b) { return a < b ? a : b; }

/* ------------------------------------------------------------ reductions */

/* A maximum and the first index where it occurs. */
template <class C>
struct MaxArg {
  C v;
  long long i;
};

template <class C>
GRS_DEV MaxArg<C> grs_better(MaxArg<C> a, MaxArg<C> b) {
  return (b.v > a.v || (b.v == a.v && b.i < a.i)) ? b : a;
}

template <class V>
GRS_DEV V grs_shfl(V v, int o, int width) {
  return __shfl_xor_sync(0xffffffffu, v, o, width);
}
template <class C>
GRS_DEV MaxArg<C> grs_shfl(MaxArg<C> v, int o, int width) {
  MaxArg<C> r;
  r.v = __shfl_xor_sync(0xffffffffu, v.v, o, width);
  r.i = __shfl_xor_sync(0xffffffffu, v.i, o, width);
  return r;
}

/* Scratch for block-wide reductions: one value per warp. */
struct alignas(16) GrsSlot {
  unsigned char bytes[16];
};

/* Reduces `v` over the group of G threads; every thread of the group gets
 * the result. Every thread of the block must call it (rows beyond the end
 * pass `identity`), because warps shuffle and blocks synchronise. */
template <class V, class Op>
GRS_DEV V grs_reduce(V v, V identity, int G, Op op, GrsSlot* sm) {
  int width = G < 32 ? G : 32;
  for (int o = width >> 1; o > 0; o >>= 1) v = op(v, grs_shfl(v, o, width));
  if (G <= 32) return v;
  V* slots = reinterpret_cast<V*>(sm);
  int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  __syncthreads();
  if (lane == 0) slots[warp] = v;
  __syncthreads();
  v = lane < (G >> 5) ? slots[lane] : identity;
  for (int o = 16; o > 0; o >>= 1) v = op(v, grs_shfl(v, o, 32));
  return v;
}

struct GrsMax {
  template <class V>
  GRS_DEV V operator()(V a, V b) const { return b > a ? b : a; }
};
struct GrsMin {
  template <class V>
  GRS_DEV V operator()(V a, V b) const { return b < a ? b : a; }
};
struct GrsSum {
  template <class V>
  GRS_DEV V operator()(V a, V b) const { return a + b; }
};
struct GrsBetter {
  template <class C>
  GRS_DEV MaxArg<C> operator()(MaxArg<C> a, MaxArg<C> b) const { return grs_better(a, b); }
};

/* Dynamic shared memory (the emulator defines its own) and the barrier of a
 * group's threads: the warp for G <= 32, else the block. */
#ifndef GRS_DYNAMIC_SHARED
#define GRS_DYNAMIC_SHARED(name) extern __shared__ __align__(16) unsigned char name[]
#endif

GRS_DEV void grs_group_sync(int G) {
  if (G > 32) __syncthreads();
  else __syncwarp();
}

/* ------------------------------------------------------------ rows */

/* Where a thread stands: its row, its lane in the row's group, the row's first element. */
struct GrsRow {
  long long r, base, k, inner;
  int lane, G;
  bool active;
};

GRS_DEV GrsRow grs_row(long long outer, long long k, long long inner, int G) {
  GrsRow w;
  w.G = G;
  w.lane = threadIdx.x & (G - 1);
  w.r = (long long)blockIdx.x * (blockDim.x / G) + threadIdx.x / G;
  w.k = k;
  w.inner = inner;
  w.active = w.r < outer * inner;
  w.base = w.active ? (w.r / inner) * k * inner + w.r % inner : 0;
  return w;
}

/* Calls f(t, noise) for this thread's share of the row's elements t, where
 * noise is that of element `start + base + t * inner` of the stream. For
 * contiguous rows the threads take Philox blocks in turn and use every word
 * of a block; for strided rows each element draws its own word. */
template <class C, class F>
GRS_DEV void grs_row_noise(const GrsRow& w, grs_u64 seed, grs_u64 offset, grs_u64 start, int kind,
                           F f) {
  if (!w.active || w.k == 0) return;
  grs_u64 first = start + (grs_u64)w.base;
  if (w.inner == 1) {
    const int epb = Math<C>::EPB;
    grs_u64 b0 = first / epb, b1 = (first + (grs_u64)w.k - 1) / epb;
    for (grs_u64 b = b0 + (grs_u64)w.lane; b <= b1; b += (grs_u64)w.G) {
      grs_u32 words[4];
      grs_block(seed, offset, b, words);
#pragma unroll
      for (int j = 0; j < epb; ++j) {
        grs_u64 i = b * epb + j;
        if (i < first || i >= first + (grs_u64)w.k) continue;
        f((long long)(i - first), Math<C>::noise(kind, Math<C>::uniform(words, j)));
      }
    }
  } else {
    for (long long t = w.lane; t < w.k; t += w.G) {
      grs_u64 i = first + (grs_u64)(t * w.inner);
      f(t, Math<C>::noise(kind, Math<C>::uniform_at(seed, offset, i)));
    }
  }
}

/* Calls f(t) for this thread's share of the row's elements. */
template <class F>
GRS_DEV void grs_row_each(const GrsRow& w, F f) {
  if (!w.active) return;
  for (long long t = w.lane; t < w.k; t += w.G) f(t);
}

/* The first fault of a row's logits (NaN, then +inf, by position; then a
 * row with nothing but -inf), reduced over the group; GRS_NO_FAULT if none. */
template <class C>
struct GrsCheck {
  grs_u64 bad = GRS_NO_FAULT;
  int any = 0;
  GRS_DEV void see(C x, long long at, grs_u64 tag) {
    if (x != x) bad = grs_min_u64(bad, grs_fault(tag, GRS_F_NAN, at));
    else if (x == Math<C>::inf()) bad = grs_min_u64(bad, grs_fault(tag, GRS_F_POSINF, at));
    any |= x > -Math<C>::inf();
  }
  GRS_DEV grs_u64 finish(const GrsRow& w, grs_u64 tag, GrsSlot* sm) {
    bad = grs_reduce(bad, GRS_NO_FAULT, w.G, GrsMin(), sm);
    any = grs_reduce(any, 0, w.G, GrsMax(), sm);
    if (!w.active) return GRS_NO_FAULT;
    if (bad != GRS_NO_FAULT) return bad;
    return any ? GRS_NO_FAULT : grs_fault(tag, GRS_F_ALL_MASKED, w.base);
  }
};

/* Checks a row's logits (GrsCheck) and returns their maximum, which the
 * kernels subtract before adding the noise (rust/kernels/softmax.rs
 * `add_logits`): the noise keeps its resolution however large the logits. */
template <class T, class C>
GRS_DEV C grs_row_top(const T* x, const GrsRow& w, grs_u64 tag, GrsSlot* sm, grs_u64* code) {
  GrsCheck<C> check;
  C top = -Math<C>::inf();
  grs_row_each(w, [&](long long t) {
    long long at = w.base + t * w.inner;
    C xv = grs_load(x, at);
    check.see(xv, at, tag);
    top = xv > top ? xv : top;
  });
  *code = check.finish(w, tag, sm);
  return grs_reduce(top, -Math<C>::inf(), w.G, GrsMax(), sm);
}

/* Records a row's fault (one thread per row). */
GRS_DEV void grs_report(const GrsRow& w, grs_u64* fault, grs_u64 code) {
  if (w.lane == 0 && code != GRS_NO_FAULT) atomicMin(fault, code);
}

#endif /* GUMBELRS_DEVICE_CUH */
