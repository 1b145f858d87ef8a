/* Host build of the CUDA device functions, for tests/test_cuda_sources.py.
 *
 *   noise32|noise64 KIND SEED OFFSET N   writes N noise values (KIND 0 uniform,
 *                                         1 gumbel, 2 logistic) to stdout;
 *   exp32|ln32|ln1p32|exp64|ln64|ln1p64  reads values from stdin, writes f(x);
 *   concrete32|concrete64 OP SEED OFFSET TAU LO HI
 *                                         reads logits x from stdin, writes the
 *                                         per-element result of elements.cu
 *                                         (OP 0 soft, 1 hard, 2 Hard Concrete);
 *   belowtop32|belowtop64                 reads pairs (a, top), writes the
 *                                         truncated Gumbel of rows.cu.
 * Compile with -ffp-contract=off so no multiply-add is fused implicitly. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.cuh"

static int noise(int f64, int kind, grs_u64 seed, grs_u64 offset, grs_u64 n) {
  for (grs_u64 i = 0; i < n; ++i) {
    if (f64) {
      double v = grs_uniform_f64(grs_word64(seed, offset, i));
      double y = kind == 1 ? grs_gumbel_f64(v) : (kind == 2 ? grs_logistic_f64(v) : v);
      fwrite(&y, sizeof y, 1, stdout);
    } else {
      float v = grs_uniform_f32(grs_word(seed, offset, i));
      float y = kind == 1 ? grs_gumbel_f32(v) : (kind == 2 ? grs_logistic_f32(v) : v);
      fwrite(&y, sizeof y, 1, stdout);
    }
  }
  return 0;
}

static int math(const char* name) {
  if (strcmp(name + strlen(name) - 2, "32") == 0) {
    float x;
    while (fread(&x, sizeof x, 1, stdin) == 1) {
      float y = strncmp(name, "exp", 3) == 0    ? grs_exp_f32(x)
                : strncmp(name, "ln1p", 4) == 0 ? grs_ln1p_f32(x)
                                                : grs_ln_f32(x);
      fwrite(&y, sizeof y, 1, stdout);
    }
  } else {
    double x;
    while (fread(&x, sizeof x, 1, stdin) == 1) {
      double y = strncmp(name, "exp", 3) == 0    ? grs_exp_f64(x)
                 : strncmp(name, "ln1p", 4) == 0 ? grs_ln1p_f64(x)
                                                 : grs_ln_f64(x);
      fwrite(&y, sizeof y, 1, stdout);
    }
  }
  return 0;
}

/* The arithmetic of concrete_forward in elements.cu, element by element. */
static int concrete(int f64, int op, grs_u64 seed, grs_u64 offset, double tau, double lo,
                    double hi) {
  grs_u64 i = 0;
  if (f64) {
    double x, inv = 1.0 / tau;
    while (fread(&x, sizeof x, 1, stdin) == 1) {
      double v = x + grs_logistic_f64(grs_uniform_f64(grs_word64(seed, offset, i++)));
      double s = grs_sigmoid_f64(v * inv), y = s;
      if (op == 1) y = (double)(v > 0.0);
      if (op == 2) {
        double z = s * (hi - lo) + lo;
        z = 0.0 > z ? 0.0 : z;
        y = 1.0 < z ? 1.0 : z;
      }
      fwrite(&y, sizeof y, 1, stdout);
    }
  } else {
    float x, inv = 1.0f / (float)tau, flo = (float)lo, fhi = (float)hi;
    while (fread(&x, sizeof x, 1, stdin) == 1) {
      float v = x + grs_logistic_f32(grs_uniform_f32(grs_word(seed, offset, i++)));
      float s = grs_sigmoid_f32(v * inv), y = s;
      if (op == 1) y = (float)(v > 0.0f);
      if (op == 2) {
        float z = s * (fhi - flo) + flo;
        z = 0.0f > z ? 0.0f : z;
        y = 1.0f < z ? 1.0f : z;
      }
      fwrite(&y, sizeof y, 1, stdout);
    }
  }
  return 0;
}

static int below_top(int f64) {
  if (f64) {
    double p[2];
    while (fread(p, sizeof p[0], 2, stdin) == 2) {
      double z = grs_below_top_f64(p[0], p[1]);
      fwrite(&z, sizeof z, 1, stdout);
    }
  } else {
    float p[2];
    while (fread(p, sizeof p[0], 2, stdin) == 2) {
      float z = grs_below_top_f32(p[0], p[1]);
      fwrite(&z, sizeof z, 1, stdout);
    }
  }
  return 0;
}

int main(int argc, char** argv) {
  if (argc == 8 && strncmp(argv[1], "concrete", 8) == 0) {
    return concrete(strcmp(argv[1], "concrete64") == 0, atoi(argv[2]), strtoull(argv[3], 0, 10),
                    strtoull(argv[4], 0, 10), atof(argv[5]), atof(argv[6]), atof(argv[7]));
  }
  if (argc == 2 && strncmp(argv[1], "belowtop", 8) == 0) {
    return below_top(strcmp(argv[1], "belowtop64") == 0);
  }
  if (argc == 6 && strncmp(argv[1], "noise", 5) == 0) {
    return noise(strcmp(argv[1], "noise64") == 0, atoi(argv[2]), strtoull(argv[3], 0, 10),
                 strtoull(argv[4], 0, 10), strtoull(argv[5], 0, 10));
  }
  if (argc == 2) return math(argv[1]);
  fprintf(stderr, "usage: see the comment at the top of this file\n");
  return 2;
}
