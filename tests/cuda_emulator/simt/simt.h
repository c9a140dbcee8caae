// CUDA C on a CPU: the shim every kernels/*.cu is compiled with by g++ in the emulator tier.
//
// Each CUDA thread is a fiber (runtime.cpp); blocks run one after another. threadIdx & co. read
// the running fiber's record. Every warp collective (__shfl_*_sync, __ballot_sync, __any_sync,
// __all_sync, __syncwarp) and __syncthreads is a meeting point the runtime checks: which lanes
// must meet there, that they meet at the same call site with the same mask, and that none has
// exited. Static __shared__ variables are poisoned (0xFF bytes: NaN in every float type) when the
// first thread of each block reaches their declaration (simt_build.py adds that call after each
// declaration); dynamic shared memory is the array the generated wrapper defines, poisoned and
// guarded the same way.
#pragma once

#include <math.h>
#include <stdint.h>
#include <string.h>

#include <type_traits>

// ---------------------------------------------------------------------------------------------
// Qualifiers. __shared__ becomes a function-scope static: one copy per block, since blocks run in
// turn. `extern __shared__` is rewritten to plain `extern` by simt_build.py and defined by the
// wrapper.
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline __attribute__((always_inline))
#define __noinline__ __attribute__((noinline))
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
#define __shared__ static
#define __constant__ static

struct uint3 { unsigned int x, y, z; };
struct dim3 { unsigned int x, y, z; };

// The runtime's interface (libsimt.so; modules are built with -fvisibility=hidden).
#pragma GCC visibility push(default)
namespace simt {

enum Kind { SHFL = 1, SHFL_XOR, SHFL_UP, SHFL_DOWN, BALLOT, ANY, ALL, SYNCWARP };

struct Fiber;
struct Grid {
    uint3 block_idx;
    dim3 block_dim, grid_dim;
};
extern Grid g_grid;
extern Fiber* g_cur;
const uint3& current_thread_idx();

// A call site is named by __COUNTER__ (one number per textual use of a collective) for the
// meeting checks and by file and line for messages.
uint64_t collective(int site, const char* file, int line, int kind, unsigned mask, uint64_t value,
                    int arg, int width);
void syncthreads(int site, const char* file, int line);
// Poisons a static __shared__ variable the first time a thread of the current block reaches it.
void fresh_shared(void* p, size_t n);
void fail(const char* fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));

template <typename T> inline uint64_t to_bits(T v) {
    static_assert(sizeof(T) <= 8 && std::is_trivially_copyable<T>::value, "shuffle <= 8 bytes");
    uint64_t u = 0;
    memcpy(&u, &v, sizeof(T));
    return u;
}
template <typename T> inline T from_bits(uint64_t u) {
    T v;
    memcpy(&v, &u, sizeof(T));
    return v;
}
template <typename T>
inline T shfl(int site, const char* file, int line, int kind, unsigned mask, T v, int arg,
              int width = 32) {
    return from_bits<T>(collective(site, file, line, kind, mask, to_bits(v), arg, width));
}
inline unsigned vote(int site, const char* file, int line, int kind, unsigned mask, int pred) {
    return (unsigned)collective(site, file, line, kind, mask, pred != 0, 0, 32);
}
inline void syncwarp(int site, const char* file, int line, unsigned mask = 0xffffffffu) {
    collective(site, file, line, SYNCWARP, mask, 0, 0, 32);
}

// Half conversions (half.cpp): the kernels' inline PTX cvt is rewritten to these by simt_build.py.
unsigned short cvt_rn_f16_f32(float f);
float cvt_f32_f16(unsigned short h);

}  // namespace simt
#pragma GCC visibility pop

#define threadIdx (::simt::current_thread_idx())
#define blockIdx (::simt::g_grid.block_idx)
#define blockDim (::simt::g_grid.block_dim)
#define gridDim (::simt::g_grid.grid_dim)
#define warpSize 32

#define SIMT_SITE __COUNTER__, __FILE__, __LINE__
#define __syncthreads() ::simt::syncthreads(SIMT_SITE)
#define __syncwarp(...) ::simt::syncwarp(SIMT_SITE, ##__VA_ARGS__)
#define __shfl_sync(...) ::simt::shfl(SIMT_SITE, ::simt::SHFL, __VA_ARGS__)
#define __shfl_xor_sync(...) ::simt::shfl(SIMT_SITE, ::simt::SHFL_XOR, __VA_ARGS__)
#define __shfl_up_sync(...) ::simt::shfl(SIMT_SITE, ::simt::SHFL_UP, __VA_ARGS__)
#define __shfl_down_sync(...) ::simt::shfl(SIMT_SITE, ::simt::SHFL_DOWN, __VA_ARGS__)
#define __ballot_sync(m, p) ::simt::vote(SIMT_SITE, ::simt::BALLOT, m, p)
#define __any_sync(m, p) ((int)::simt::vote(SIMT_SITE, ::simt::ANY, m, p))
#define __all_sync(m, p) ((int)::simt::vote(SIMT_SITE, ::simt::ALL, m, p))

// ---------------------------------------------------------------------------------------------
// Intrinsics. Fibers never run concurrently, so plain read-modify-write is atomic here.
inline float __uint_as_float(unsigned int u) { return simt::from_bits<float>(u); }
inline unsigned int __float_as_uint(float f) { return (unsigned int)simt::to_bits(f); }
inline float __int_as_float(int i) { return simt::from_bits<float>((uint32_t)i); }
inline int __float_as_int(float f) { return (int)(uint32_t)simt::to_bits(f); }
inline double __longlong_as_double(long long i) { return simt::from_bits<double>((uint64_t)i); }
inline long long __double_as_longlong(double d) { return (long long)simt::to_bits(d); }
inline float __expf(float x) { return expf(x); }
inline float __logf(float x) { return logf(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline double rsqrt(double x) { return 1.0 / sqrt(x); }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __frcp_rn(float a) { return 1.0f / a; }
inline double __dmul_rn(double a, double b) { return a * b; }
inline double __dadd_rn(double a, double b) { return a + b; }
inline double __dsub_rn(double a, double b) { return a - b; }
inline float __saturatef(float x) { return x < 0.f ? 0.f : (x > 1.f ? 1.f : x); }
template <typename T> inline T __ldg(const T* p) { return *p; }
inline int __popc(unsigned int x) { return __builtin_popcount(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
inline int __ffs(int x) { return __builtin_ffs(x); }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz((unsigned)x); }
inline void __threadfence() {}
inline void __threadfence_block() {}

template <typename T> inline T atomicAdd(T* p, T v) { T o = *p; *p = o + v; return o; }
template <typename T> inline T atomicSub(T* p, T v) { T o = *p; *p = o - v; return o; }
template <typename T> inline T atomicExch(T* p, T v) { T o = *p; *p = v; return o; }
template <typename T> inline T atomicMin(T* p, T v) { T o = *p; *p = v < o ? v : o; return o; }
template <typename T> inline T atomicMax(T* p, T v) { T o = *p; *p = v > o ? v : o; return o; }
template <typename T> inline T atomicOr(T* p, T v) { T o = *p; *p = o | v; return o; }
template <typename T> inline T atomicAnd(T* p, T v) { T o = *p; *p = o & v; return o; }
template <typename T> inline T atomicCAS(T* p, T cmp, T v) {
    T o = *p;
    if (o == cmp) *p = v;
    return o;
}
