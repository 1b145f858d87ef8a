/* Noise kernels: out[i] = noise(uniform(word i of (seed, offset))).
 * One thread per Philox block: four float32 elements, or two float64. */
#include "common.cuh"

extern "C" __global__ void grs_noise_f32(float* out, grs_u64 n, grs_u64 seed, grs_u64 offset,
                                         int kind) {
  grs_u64 b = (grs_u64)blockIdx.x * blockDim.x + threadIdx.x;
  if (4 * b >= n) return;
  grs_u32 w[4];
  grs_block(seed, offset, b, w);
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    grs_u64 i = 4 * b + j;
    if (i >= n) break;
    float v = grs_uniform_f32(w[j]);
    out[i] = kind == 1 ? grs_gumbel_f32(v) : (kind == 2 ? grs_logistic_f32(v) : v);
  }
}

extern "C" __global__ void grs_noise_f64(double* out, grs_u64 n, grs_u64 seed, grs_u64 offset,
                                         int kind) {
  grs_u64 b = (grs_u64)blockIdx.x * blockDim.x + threadIdx.x;
  if (2 * b >= n) return;
  grs_u32 w[4];
  grs_block(seed, offset, b, w);
#pragma unroll
  for (int j = 0; j < 2; ++j) {
    grs_u64 i = 2 * b + j;
    if (i >= n) break;
    double v = grs_uniform_f64((grs_u64)w[2 * j] | ((grs_u64)w[2 * j + 1] << 32));
    out[i] = kind == 1 ? grs_gumbel_f64(v) : (kind == 2 ? grs_logistic_f64(v) : v);
  }
}
