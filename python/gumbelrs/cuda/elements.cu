/* Elementwise kernels: relaxed Bernoulli (Binary Concrete) and Hard Concrete,
 * forward and backward; the loops of rust/kernels/bernoulli.rs. One thread
 * per Philox block (four float32 or two float64 elements), so every word is
 * drawn once; element i uses the logistic noise of word i. A NaN logit or a
 * bad temperature is recorded in `fault` and its element gets NaN.
 */
#include "device.cuh"

/* op 0: relaxed Bernoulli, soft sample into y. 1: the hard sample (w > 0)
 * into y and the soft one into second. 2: Hard Concrete into y. */
template <class T, class C>
GRS_DEV void concrete_forward(const T* x, T* y, T* second, const C* tau_elems, C tau, C lo, C hi,
                              long long n, grs_u64 seed, grs_u64 offset, int op, grs_u64* fault,
                              grs_u64 tag) {
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
      if (op == 1) grs_store(second, i, M::nan());
      continue;
    }
    C inv = (C)1 / t;
    C v = xv + M::noise(GRS_LOGISTIC, M::uniform(words, j));
    C s = M::sigmoid(v * inv);
    if (op == 2) {
      C z = s * (hi - lo) + lo;
      z = (C)0 > z ? (C)0 : z;
      grs_store(y, i, (C)1 < z ? (C)1 : z);
    } else if (op == 1) {
      grs_store(y, i, (C)(v > (C)0));
      grs_store(second, i, s);
    } else {
      grs_store(y, i, s);
    }
  }
  if (code != GRS_NO_FAULT) atomicMin(fault, code);
}

/* op 0: relaxed Bernoulli, grad_x = g * y (1 - y) / tau. op 2: Hard Concrete,
 * the same through the stretch, zero where the sample was clamped. */
template <class T, class C>
GRS_DEV void concrete_backward(const T* g, const T* y, T* out, const C* tau_elems, C tau, C lo,
                               C hi, long long n, int op) {
  long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  C inv = (C)1 / (tau_elems ? tau_elems[i] : tau);
  C gi = grs_load(g, i), yi = grs_load(y, i);
  if (op != 2) {
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
      grs_u64 seed, grs_u64 offset, int op, grs_u64* fault, grs_u64 tag) {                         \
    concrete_forward<T, C>(x, y, second, tau_elems, tau, lo, hi, n, seed, offset, op, fault,       \
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
