/* The CUDA kernels of gumbelrs/cuda, compiled as host C++ and run on the CPU.
 *
 * A shared library for tests/test_cuda_emulated.py. Every CUDA thread of a
 * block is an OS thread; __syncthreads is a barrier of the block, and a warp
 * shuffle is a barrier of the warp around an exchange of values. Blocks run
 * one after another, so a `static` variable is the block's shared memory. A
 * shuffle or barrier that not every thread reaches hangs, as it would
 * misbehave on a GPU: after two minutes the process ends with a message.
 *
 * emu_launch(name, grid, block, shared, args) runs kernel `name` with args[i]
 * pointing at the value of its i-th parameter, as cuLaunchKernel takes them.
 * emu_set_ftz(1) models a build with -ftz=true (CuPy's default).
 * emu_fault(tag, kind, pos) is the fault code a kernel records.
 * Build: g++ -std=c++20 -O1 -ffp-contract=off -shared -fPIC -pthread -I<cuda dir>.
 */
#include <atomic>
#include <barrier>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>
#if defined(__SSE2__)
#include <xmmintrin.h>
#endif

struct Dim3 {
  unsigned x = 0, y = 0, z = 0;
};
static thread_local Dim3 threadIdx, blockIdx;
static Dim3 blockDim;

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static

static float __uint_as_float(unsigned u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
static unsigned __float_as_uint(float f) {
  unsigned u;
  std::memcpy(&u, &f, 4);
  return u;
}

struct Block {
  std::unique_ptr<std::barrier<>> all;
  std::vector<std::unique_ptr<std::barrier<>>> warps;
  std::vector<uint64_t> slots;
};
static Block block_state;

static void __syncthreads() { block_state.all->arrive_and_wait(); }
static void __syncwarp() { block_state.warps[threadIdx.x >> 5]->arrive_and_wait(); }

/* Dynamic shared memory: one buffer, reused by the blocks in turn. */
static std::vector<unsigned char> dynamic_shared;
#define GRS_DYNAMIC_SHARED(name) unsigned char* name = dynamic_shared.data()

template <class V>
static V __shfl_xor_sync(unsigned, V v, int lane_mask, int width = 32) {
  static_assert(sizeof(V) <= 8, "shuffled values are at most 8 bytes");
  unsigned lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  std::barrier<>& bar = *block_state.warps[warp];
  uint64_t* slots = &block_state.slots[warp * 32];
  bar.arrive_and_wait();
  uint64_t bits = 0;
  std::memcpy(&bits, &v, sizeof(V));
  slots[lane] = bits;
  bar.arrive_and_wait();
  unsigned src = lane ^ (unsigned)lane_mask;
  if (src / (unsigned)width != lane / (unsigned)width) src = lane;
  V out;
  std::memcpy(&out, &slots[src], sizeof(V));
  return out;
}

static std::mutex atomic_lock;
static unsigned long long atomicMin(unsigned long long* p, unsigned long long v) {
  std::lock_guard<std::mutex> g(atomic_lock);
  unsigned long long old = *p;
  if (v < old) *p = v;
  return old;
}
static unsigned long long atomicMin(unsigned long* p, unsigned long v) {
  return atomicMin(reinterpret_cast<unsigned long long*>(p), (unsigned long long)v);
}

#include "noise.cu"
#include "rows.cu"
#include "elements.cu"

/* ------------------------------------------------------------ launching */

template <class... A, size_t... I>
static void call_with(void (*f)(A...), void** args, std::index_sequence<I...>) {
  f(*static_cast<std::remove_cv_t<std::remove_reference_t<A>>*>(args[I])...);
}
template <class... A>
static void call(void (*f)(A...), void** args) {
  call_with(f, args, std::index_sequence_for<A...>{});
}

typedef void (*Entry)(void**);
#define GRS_ENTRY(NAME) {#NAME, [](void** a) { call(NAME, a); }}
#define GRS_ENTRIES(SFX)                                                                           \
  GRS_ENTRY(grs_gs_forward_##SFX), GRS_ENTRY(grs_gs_backward_##SFX),                               \
      GRS_ENTRY(grs_categorical_##SFX), GRS_ENTRY(grs_topk_keys_##SFX),                            \
      GRS_ENTRY(grs_given_argmax_##SFX), GRS_ENTRY(grs_concrete_forward_##SFX),                    \
      GRS_ENTRY(grs_concrete_backward_##SFX)

static const std::map<std::string, Entry> kernels = {
    GRS_ENTRIES(f16), GRS_ENTRIES(bf16), GRS_ENTRIES(f32), GRS_ENTRIES(f64),
    GRS_ENTRY(grs_noise_f32), GRS_ENTRY(grs_noise_f64)};

/* The fault code grs_fault records (device.cuh), for the round trip through
 * gumbelrs._protocol.FaultCode. */
extern "C" unsigned long long emu_fault(unsigned long long tag, int kind, long long pos) {
  return grs_fault(tag, kind, pos);
}

/* -ftz=true makes every single-precision operation flush subnormal inputs and
 * results to zero, and leaves double precision alone. Modelled by the SSE
 * flags FTZ and DAZ in the threads of the kernels that compute in float: all
 * but the _f64 ones (the flags would flush doubles too). */
static bool flush_subnormals = false;

/* Sets the model of -ftz=true on (1) or off (0); returns 0, or -1 where this
 * processor has no such flags. */
extern "C" int emu_set_ftz(int on) {
#if defined(__SSE2__)
  flush_subnormals = on != 0;
  return 0;
#else
  return on ? -1 : 0;
#endif
}

static void flush_subnormals_here() {
#if defined(__SSE2__)
  _mm_setcsr(_mm_getcsr() | 0x8040); /* FTZ (bit 15) and DAZ (bit 6) */
#endif
}

/* Runs kernel `name` on grid x block threads with `shared` bytes of dynamic
 * shared memory; returns 0, or -1 for an unknown name. */
extern "C" int emu_launch(const char* name, unsigned grid, unsigned block, unsigned shared,
                          void** args) {
  auto it = kernels.find(name);
  if (it == kernels.end()) return -1;
  blockDim.x = block;
  dynamic_shared.assign(shared + 16, 0xff);
  std::string kernel = name;
  bool ftz = flush_subnormals && kernel.substr(kernel.size() - 4) != "_f64";
  for (unsigned b = 0; b < grid; ++b) {
    unsigned warps = (block + 31) / 32;
    block_state.all = std::make_unique<std::barrier<>>(block);
    block_state.warps.clear();
    for (unsigned w = 0; w < warps; ++w) {
      unsigned n = std::min(32u, block - 32 * w);
      block_state.warps.push_back(std::make_unique<std::barrier<>>(n));
    }
    block_state.slots.assign(32 * warps, 0);
    std::vector<std::thread> threads;
    threads.reserve(block);
    std::mutex m;
    std::condition_variable cv;
    unsigned finished = 0;
    for (unsigned t = 0; t < block; ++t) {
      threads.emplace_back([&, t, b] {
        if (ftz) flush_subnormals_here();
        threadIdx.x = t;
        blockIdx.x = b;
        it->second(args);
        std::lock_guard<std::mutex> g(m);
        if (++finished == block) cv.notify_one();
      });
    }
    {
      /* A barrier or shuffle that some thread never reaches would hang the
       * tests: end the process with a message instead. */
      std::unique_lock<std::mutex> g(m);
      if (!cv.wait_for(g, std::chrono::seconds(120), [&] { return finished == block; })) {
        std::fprintf(stderr, "emulated kernel %s hung in block %u\n", name, b);
        std::fflush(stderr);
        std::_Exit(3);
      }
    }
    for (auto& th : threads) th.join();
  }
  return 0;
}
