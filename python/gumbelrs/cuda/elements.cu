/* Elementwise kernels: relaxed Bernoulli (Binary Concrete) and Hard Concrete,
 * forward and backward; the loops of rust/kernels/bernoulli.rs. One thread
 * per Philox block (four float32 or two float64 elements), so every word is
 * drawn once; element i uses the logistic noise of word i. A NaN logit or a
 * bad temperature is recorded in `fault` and its element gets NaN.
 */
#include "device.cuh"

/* Which op an elementwise kernel computes. */
enum GrsConcreteOp { GRS_RELAXED_BERNOULLI = 0, GRS_HARD_CONCRETE = 1 };

/* GRS_RELAXED_BERNOULLI in output mode `mode` (GrsOutputMode): the soft
 * sample, and/or the one-hot (hard) sample w > 0, whose soft sample goes to
 * `second` in GRS_ONE_HOT_WITH_SOFT. GRS_HARD_CONCRETE (mode GRS_SOFT): Hard
 * Concrete into y. */
template <class T, class C>
GRS_DEV void concrete_forward(const T* x, T* y, T* second, const C* tau_elems, C tau, C lo, C hi,
                              long long n, grs_u64 seed, grs_u64 offset, int op, int mode,
                              grs_u64* fault, grs_u64 tag) {
  typedef Math<C> M;
  const int epb = M::EPB;
  grs_u64 b = (grs_u64)blockIdx.x * blockDim.x + threadIdx.x;
  if ((long long)(b * epb) >= n) return;
  grs_u32 words[4];
  grs_block(seed, offset, b, words);
  grs_u64 code = GRS_NO_FAULT;
#pragma unroll
  for (int j = 0; j < epb; ++j) {
    long long i = (long long)(b * epb) + j;
    if (i >= n) break;
    C t = tau_elems ? tau_elems[i] : tau;
    C xv = grs_load(x, i);
    bool tau_bad = !(t >= M::min_normal() && t < M::inf());
    if (tau_bad || xv != xv) {
      code = grs_min_u64(code, grs_fault(tag, tau_bad ? GRS_F_TAU : GRS_F_NAN, i));
      grs_store(y, i, M::nan());
      if (mode == GRS_ONE_HOT_WITH_SOFT) grs_store(second, i, M::nan());
      continue;
    }
    C inv = (C)1 / t;
    C v = xv + M::noise(GRS_LOGISTIC, M::uniform(words, j));
    C s = M::sigmoid(v * inv);
    if (op == GRS_HARD_CONCRETE) {
      C z = s * (hi - lo) + lo;
      z = (C)0 > z ? (C)0 : z;
      grs_store(y, i, (C)1 < z ? (C)1 : z);
    } else if (mode == GRS_SOFT) {
      grs_store(y, i, s);
    } else {
      grs_store(y, i, (C)(v > (C)0));
      if (mode == GRS_ONE_HOT_WITH_SOFT) grs_store(second, i, s);
    }
  }
  if (code != GRS_NO_FAULT) atomicMin(fault, code);
}

/* GRS_RELAXED_BERNOULLI: grad_x = g * y (1 - y) / tau. GRS_HARD_CONCRETE:
 * the same through the stretch, zero where the sample was clamped. */
template <class T, class C>
GRS_DEV void concrete_backward(const T* g, const T* y, T* out, const C* tau_elems, C tau, C lo,
                               C hi, long long n, int op) {
  long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  C inv = (C)1 / (tau_elems ? tau_elems[i] : tau);
  C gi = grs_load(g, i), yi = grs_load(y, i);
  if (op != GRS_HARD_CONCRETE) {
    grs_store(out, i, (gi * (yi * ((C)1 - yi))) * inv);
    return;
  }
  C width = hi - lo;
  C s = (yi - lo) / width;
  grs_store(out, i, yi > (C)0 && yi < (C)1 ? ((gi * width) * (s * ((C)1 - s))) * inv : (C)0);
}

#define GRS_ELEMENT_KERNELS(SFX, T, C)                                                             \
  extern "C" __global__ void __launch_bounds__(256) grs_concrete_forward_##SFX(                    \
      const T* x, T* y, T* second, const C* tau_elems, C tau, C lo, C hi, long long n,             \
      grs_u64 seed, grs_u64 offset, int op, int mode, grs_u64* fault, grs_u64 tag) {               \
    concrete_forward<T, C>(x, y, second, tau_elems, tau, lo, hi, n, seed, offset, op, mode, fault, \
                           tag);                                                                   \
  }                                                                                                \
  extern "C" __global__ void __launch_bounds__(256) grs_concrete_backward_##SFX(const T* g, const T* y, T* out, \
                                                         const C* tau_elems, C tau, C lo, C hi,    \
                                                         long long n, int op) {                    \
    concrete_backward<T, C>(g, y, out, tau_elems, tau, lo, hi, n, op);                             \
  }

GRS_ELEMENT_KERNELS(f16, grs_half, float)
GRS_ELEMENT_KERNELS(bf16, grs_bf16, float)
GRS_ELEMENT_KERNELS(f32, float, float)
GRS_ELEMENT_KERNELS(f64, double, double)
