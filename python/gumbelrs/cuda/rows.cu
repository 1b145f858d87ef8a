/* Row kernels: Gumbel-Softmax forward and backward, categorical draws, the
 * keys of Gumbel-top-k and the conditioned Gumbels of Gumbel-Rao.
 *
 * Every kernel is the loop of its Rust twin (rust/kernels/softmax.rs,
 * sampling.rs) spread over a group of threads per row (device.cuh); the
 * noise of element i is bitwise the CPU's, so arg-maxima, one-hot samples and
 * categorical draws are bitwise the CPU's; soft values differ from the CPU's
 * in the order their sums are added (and, on the path without shared memory,
 * by the rescaling of the online sum). T is the storage type, C the
 * compute type (float for float16 and bfloat16). A row with a fault is
 * recorded in `fault` and gets NaN outputs (index -1).
 */
#include "device.cuh"

/* Gumbel-Softmax forward, in output mode `mode` (GrsOutputMode): the one-hot
 * sample is that of the first maximum of w = (x - max x) + g; in
 * GRS_ONE_HOT_WITH_SOFT the soft sample goes to `soft`, in GRS_SOFT to y. A first pass checks the logits and finds their
 * maximum (grs_row_top); the next draws the noise and finds the maximum of w
 * and its first index. With `cache`, w is kept in shared memory (k
 * values per row of the block) and the softmax is the CPU's: e = exp((w -
 * max) / tau) and their sum in a second pass over shared memory, e / sum in a
 * third. Without, the first pass also sums exp((w - max) / tau), rescaled as
 * the maximum grows, and the second pass draws the noise again. */
template <class T, class C>
GRS_DEV void gs_forward(const T* x, T* y, T* soft, const C* tau_rows, C tau, long long outer,
                        long long k, long long inner, grs_u64 seed, grs_u64 offset, int mode, int G,
                        grs_u64* fault, grs_u64 tag, int cache) {
  __shared__ GrsSlot sm[32];
  GRS_DYNAMIC_SHARED(dyn);
  typedef Math<C> M;
  GrsRow w = grs_row(outer, k, inner, G);
  C* kept = reinterpret_cast<C*>(dyn) + (threadIdx.x / G) * (cache ? k : 0);
  C t_row = w.active && tau_rows ? tau_rows[w.r] : tau;
  C inv = (C)1 / t_row;
  /* Checked in every mode, also where the sample does not use it. */
  bool tau_bad = !(t_row >= M::min_normal() && t_row < M::inf());
  bool online = mode != GRS_ONE_HOT && !cache;
  MaxArg<C> best = {-M::inf(), k};
  C sum = 0;
  grs_u64 code;
  C x_top = grs_row_top<T, C>(x, w, tag, sm, &code);
  grs_row_noise<C>(w, seed, offset, 0, GRS_GUMBEL, [&](long long t, C g) {
    C v = (grs_load(x, w.base + t * inner) - x_top) + g;
    if (cache) kept[t] = v;
    if (v > best.v) {
      if (online) sum = (best.v == -M::inf() ? (C)0 : sum * M::exp((best.v - v) * inv)) + (C)1;
      best.v = v;
      best.i = t;
    } else {
      if (v == best.v && t < best.i) best.i = t;
      if (online && v > -M::inf()) sum += M::exp((v - best.v) * inv);
    }
  });
  if (w.active && tau_bad) code = grs_fault(tag, GRS_F_TAU, w.r);
  MaxArg<C> top = grs_reduce(best, MaxArg<C>{-M::inf(), k}, G, GrsBetter(), sm);
  C part = 0;
  if (cache) {
    grs_group_sync(G); /* the writes to `kept` are seen by the whole group */
    grs_row_each(w, [&](long long t) {
      C e = M::exp((kept[t] - top.v) * inv);
      kept[t] = e;
      part += e;
    });
  } else if (best.v > -M::inf()) {
    part = sum * M::exp((best.v - top.v) * inv);
  }
  C total = grs_reduce(part, (C)0, G, GrsSum(), sm);
  grs_report(w, fault, code);
  if (code != GRS_NO_FAULT) {
    grs_row_each(w, [&](long long t) {
      grs_store(y, w.base + t * inner, M::nan());
      if (mode == GRS_ONE_HOT_WITH_SOFT) grs_store(soft, w.base + t * inner, M::nan());
    });
    return;
  }
  if (mode == GRS_ONE_HOT) {
    grs_row_each(w, [&](long long t) { grs_store(y, w.base + t * inner, (C)(t == top.i)); });
    return;
  }
  C inv_sum = (C)1 / total;
  T* s_out = mode == GRS_ONE_HOT_WITH_SOFT ? soft : y;
  auto write = [&](long long t, C e) {
    long long at = w.base + t * inner;
    grs_store(s_out, at, e * inv_sum);
    if (mode == GRS_ONE_HOT_WITH_SOFT) grs_store(y, at, (C)(t == top.i));
  };
  if (cache) {
    grs_row_each(w, [&](long long t) { write(t, kept[t]); });
  } else {
    grs_row_noise<C>(w, seed, offset, 0, GRS_GUMBEL, [&](long long t, C g) {
      write(t, M::exp((((grs_load(x, w.base + t * inner) - x_top) + g) - top.v) * inv));
    });
  }
}

/* grad_x = y * (g - sum(g * y)) / tau along the row. */
template <class T, class C>
GRS_DEV void gs_backward(const T* g, const T* y, T* out, const C* tau_rows, C tau, long long outer,
                         long long k, long long inner, int G) {
  __shared__ GrsSlot sm[32];
  GrsRow w = grs_row(outer, k, inner, G);
  C inv = (C)1 / (w.active && tau_rows ? tau_rows[w.r] : tau);
  C dot = 0;
  grs_row_each(w, [&](long long t) {
    long long at = w.base + t * inner;
    dot = Math<C>::fma(grs_load(g, at), grs_load(y, at), dot);
  });
  dot = grs_reduce(dot, (C)0, G, GrsSum(), sm);
  grs_row_each(w, [&](long long t) {
    long long at = w.base + t * inner;
    C yt = grs_load(y, at);
    grs_store(out, at, (yt * (grs_load(g, at) - dot)) * inv);
  });
}

/* num_samples draws per row: draw s is the first maximum of (x - max x) + g
 * with the noise of elements s * n + i (n = outer * k * inner). out is (rows,
 * num_samples). */
template <class T, class C>
GRS_DEV void categorical(const T* x, long long* out, long long outer, long long k, long long inner,
                         long long num_samples, grs_u64 seed, grs_u64 offset, int G,
                         grs_u64* fault, grs_u64 tag) {
  __shared__ GrsSlot sm[32];
  typedef Math<C> M;
  GrsRow w = grs_row(outer, k, inner, G);
  grs_u64 n = (grs_u64)(outer * k * inner);
  grs_u64 code;
  C x_top = grs_row_top<T, C>(x, w, tag, sm, &code);
  grs_report(w, fault, code);
  /* A faulty row draws nothing but still joins the group's reductions. */
  GrsRow draw = w;
  draw.active = w.active && code == GRS_NO_FAULT;
  for (long long s = 0; s < num_samples; ++s) {
    MaxArg<C> best = {-M::inf(), k};
    grs_row_noise<C>(draw, seed, offset, (grs_u64)s * n, GRS_GUMBEL, [&](long long t, C g) {
      C v = (grs_load(x, w.base + t * inner) - x_top) + g;
      best = grs_better(best, MaxArg<C>{v, t});
    });
    MaxArg<C> top = grs_reduce(best, MaxArg<C>{-M::inf(), k}, G, GrsBetter(), sm);
    if (w.active && w.lane == 0) out[w.r * num_samples + s] = draw.active ? top.i : -1;
  }
}

/* The sort keys of Gumbel-top-k, one per element, whose descending order is
 * the CPU's: larger w = (x - max x) + g first, then the smaller index. float32
 * (and the half types): the order-preserving bits of w (-0 as +0) above the
 * complement of the index, as an int64, unique; float64: w itself, for a
 * stable sort. avail[r] is the row's number of logits that are not -inf, or
 * -1 when the row has a fault; the host sets the indices of rows with fewer
 * than top_k to -1. */
GRS_DEV long long grs_key(float v, long long t) {
  unsigned u = __float_as_uint(v + 0.0f);
  unsigned ordered = (u & 0x80000000u) ? ~u : (u | 0x80000000u);
  grs_u64 key = ((grs_u64)(ordered ^ 0x80000000u) << 32) | (grs_u64)(0xffffffffu - (unsigned)t);
  return (long long)key;
}
GRS_DEV double grs_key(double v, long long) { return v; }

template <class T, class C, class K>
GRS_DEV void topk_keys(const T* x, K* keys, long long* avail, long long outer, long long k,
                       long long inner, long long top_k, grs_u64 seed, grs_u64 offset, int G,
                       grs_u64* fault, grs_u64 tag) {
  __shared__ GrsSlot sm[32];
  GrsRow w = grs_row(outer, k, inner, G);
  grs_u64 code;
  C x_top = grs_row_top<T, C>(x, w, tag, sm, &code);
  long long available = 0;
  grs_row_noise<C>(w, seed, offset, 0, GRS_GUMBEL, [&](long long t, C g) {
    long long at = w.base + t * inner;
    C xv = grs_load(x, at);
    available += xv > -Math<C>::inf();
    keys[at] = grs_key((xv - x_top) + g, t);
  });
  available = grs_reduce(available, 0ll, G, GrsSum(), sm);
  if (w.active && code == GRS_NO_FAULT && available < top_k) code = grs_fault(tag, GRS_F_TOO_FEW, w.base);
  grs_report(w, fault, code);
  if (w.active && w.lane == 0) avail[w.r] = code != GRS_NO_FAULT && available >= top_k ? -1 : available;
}

/* Gumbel-perturbed logits conditioned on their argmax being index[r]: the
 * top is logsumexp(x) + g[index]; the others are x + g truncated below it.
 * out is (num_samples, outer, k, inner); sample s uses noise s * n + i. */
template <class T, class C>
GRS_DEV void given_argmax(const T* x, const long long* index, T* out, long long outer, long long k,
                          long long inner, long long num_samples, grs_u64 seed, grs_u64 offset,
                          int G, grs_u64* fault, grs_u64 tag) {
  __shared__ GrsSlot sm[32];
  typedef Math<C> M;
  GrsRow w = grs_row(outer, k, inner, G);
  grs_u64 code;
  C m = grs_row_top<T, C>(x, w, tag, sm, &code);
  long long d = w.active ? index[w.r] : 0;
  if (w.active && code == GRS_NO_FAULT && (d < 0 || d >= k || grs_load(x, w.base + d * inner) == -M::inf()))
    code = grs_fault(tag, GRS_F_INDEX, w.base);
  C z = 0;
  grs_row_each(w, [&](long long t) {
    C e = M::exp(grs_load(x, w.base + t * inner) - m);
    z += e;
  });
  z = grs_reduce(z, (C)0, G, GrsSum(), sm);
  grs_report(w, fault, code);
  grs_u64 n = (grs_u64)(outer * k * inner);
  if (code != GRS_NO_FAULT) {
    for (long long s = 0; s < num_samples; ++s)
      grs_row_each(w, [&](long long t) { grs_store(out, (long long)(s * n) + w.base + t * inner, M::nan()); });
    return;
  }
  if (!w.active) return;
  C log_z = m + M::ln(z);
  for (long long s = 0; s < num_samples; ++s) {
    grs_u64 first = (grs_u64)s * n + (grs_u64)w.base;
    C top = log_z + M::noise(GRS_GUMBEL, M::uniform_at(seed, offset, first + (grs_u64)(d * inner)));
    grs_row_noise<C>(w, seed, offset, (grs_u64)s * n, GRS_GUMBEL, [&](long long t, C g) {
      long long at = w.base + t * inner;
      C v = t == d ? top : M::below_top(grs_load(x, at) + g, top);
      grs_store(out, (long long)(s * n) + at, v);
    });
  }
}

/* ------------------------------------------------------------ entry points */

/* Groups have at most 512 threads (the launcher's limit); at most 64
 * registers a thread, so that two such blocks share a multiprocessor. */
#define GRS_ROW_BOUNDS __launch_bounds__(512, 2)

#define GRS_ROW_KERNELS(SFX, T, C, K)                                                              \
  extern "C" __global__ void GRS_ROW_BOUNDS grs_gs_forward_##SFX(                                  \
      const T* x, T* y, T* soft, const C* tau_rows, C tau, long long outer, long long k,           \
      long long inner, grs_u64 seed, grs_u64 offset, int mode, int G, grs_u64* fault,              \
      grs_u64 tag, int cache) {                                                                    \
    gs_forward<T, C>(x, y, soft, tau_rows, tau, outer, k, inner, seed, offset, mode, G, fault,     \
                     tag, cache);                                                                  \
  }                                                                                                \
  extern "C" __global__ void GRS_ROW_BOUNDS grs_gs_backward_##SFX(const T* g, const T* y, T* out,  \
                                                   const C* tau_rows, C tau, long long outer,      \
                                                   long long k, long long inner, int G) {          \
    gs_backward<T, C>(g, y, out, tau_rows, tau, outer, k, inner, G);                               \
  }                                                                                                \
  extern "C" __global__ void GRS_ROW_BOUNDS grs_categorical_##SFX(                                 \
      const T* x, long long* out, long long outer, long long k, long long inner,                   \
      long long num_samples, grs_u64 seed, grs_u64 offset, int G, grs_u64* fault, grs_u64 tag) {   \
    categorical<T, C>(x, out, outer, k, inner, num_samples, seed, offset, G, fault, tag);          \
  }                                                                                                \
  extern "C" __global__ void GRS_ROW_BOUNDS grs_topk_keys_##SFX(                                   \
      const T* x, K* keys, long long* avail, long long outer, long long k, long long inner,      \
      long long top_k, grs_u64 seed, grs_u64 offset, int G, grs_u64* fault, grs_u64 tag) {            \
    topk_keys<T, C, K>(x, keys, avail, outer, k, inner, top_k, seed, offset, G, fault, tag);            \
  }                                                                                                \
  extern "C" __global__ void GRS_ROW_BOUNDS grs_given_argmax_##SFX(                                \
      const T* x, const long long* index, T* out, long long outer, long long k, long long inner,   \
      long long num_samples, grs_u64 seed, grs_u64 offset, int G, grs_u64* fault, grs_u64 tag) {   \
    given_argmax<T, C>(x, index, out, outer, k, inner, num_samples, seed, offset, G, fault, tag);  \
  }

GRS_ROW_KERNELS(f16, grs_half, float, long long)
GRS_ROW_KERNELS(bf16, grs_bf16, float, long long)
GRS_ROW_KERNELS(f32, float, float, long long)
GRS_ROW_KERNELS(f64, double, double, double)
