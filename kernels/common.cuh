// Helpers shared by the kernel files in this folder: the i64 typedef and FULL_MASK, the half
// storage types (half_t, bf16_t) with their float32 accumulate type and round-to-nearest-even
// stores, float/double overloads of the math functions, and 16-byte vector packs.
//
// Every kernels/*.cu starts with `#include "common.cuh"`. The loader (gpugrad/backend/kernels.py,
// read_source / expand_source) pastes this file's text in place of that line, so NVRTC, and CuPy's
// kernel cache (keyed on the source text), see one self-contained source: editing this header
// changes every kernel's source and recompiles it. Nothing else may be included. No toolkit headers
// either (cuda_fp16.h, cuda_bf16.h, math headers): NVRTC has no host headers and the CUDA include
// folder need not exist where gpugrad runs, so the half types are plain 16-bit structs converted
// with PTX cvt (f16) and integer rounding (bf16), and the math comes from NVRTC's built-in device
// functions (expf, log1p, ...).

#ifndef GPUGRAD_COMMON_CUH
#define GPUGRAD_COMMON_CUH

typedef long long i64;

#define FULL_MASK 0xffffffffu

// ---------------------------------------------------------------------------------------------
// Storage types. Half types do their math in float32 (AccOf), float64 in double.

struct half_t { unsigned short bits; };
struct bf16_t { unsigned short bits; };

template <typename T> struct AccOf { typedef float type; };
template <> struct AccOf<double> { typedef double type; };

__device__ __forceinline__ float to_acc(float x) { return x; }
__device__ __forceinline__ double to_acc(double x) { return x; }
__device__ __forceinline__ float to_acc(half_t h) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h.bits));
    return f;
}
__device__ __forceinline__ float to_acc(bf16_t h) {
    return __uint_as_float(((unsigned int)h.bits) << 16);
}

// Store<T>::from(a): the accumulator value a rounded to the storage type T.
template <typename T> struct Store;
template <> struct Store<float> {
    static __device__ __forceinline__ float from(float a) { return a; }
};
template <> struct Store<double> {
    static __device__ __forceinline__ double from(double a) { return a; }
};
template <> struct Store<half_t> {
    static __device__ __forceinline__ half_t from(float a) {
        half_t h;
        asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h.bits) : "f"(a));
        return h;
    }
};
template <> struct Store<bf16_t> {
    // Round to nearest even on the upper 16 bits; NaN stays a quiet NaN instead of rounding to inf.
    static __device__ __forceinline__ bf16_t from(float a) {
        unsigned int u = __float_as_uint(a);
        bf16_t h;
        if ((u & 0x7fffffffu) > 0x7f800000u) {
            h.bits = (unsigned short)((u >> 16) | 0x0040u);
        } else {
            u += 0x7fffu + ((u >> 16) & 1u);
            h.bits = (unsigned short)(u >> 16);
        }
        return h;
    }
};

// ---------------------------------------------------------------------------------------------
// Math overloads, so templates over float/double call the matching single/double function.

__device__ __forceinline__ float exp_(float x) { return expf(x); }
__device__ __forceinline__ double exp_(double x) { return exp(x); }
__device__ __forceinline__ float log_(float x) { return logf(x); }
__device__ __forceinline__ double log_(double x) { return log(x); }
__device__ __forceinline__ float log1p_(float x) { return log1pf(x); }
__device__ __forceinline__ double log1p_(double x) { return log1p(x); }
__device__ __forceinline__ float sqrt_(float x) { return sqrtf(x); }
__device__ __forceinline__ double sqrt_(double x) { return sqrt(x); }
__device__ __forceinline__ float abs_(float x) { return fabsf(x); }
__device__ __forceinline__ double abs_(double x) { return fabs(x); }

// ---------------------------------------------------------------------------------------------
// 16-byte packs: V = 16 / sizeof(T) elements moved as one vector access.

template <typename T, int V> struct alignas(sizeof(T) * V) Pack { T v[V]; };

// Pack i of p: one vector load when vec (p 16-byte aligned), else V scalar loads of the same
// elements, so a thread covers the same elements either way.
template <typename T, int V>
__device__ __forceinline__ Pack<T, V> load_pack(const T* p, i64 i, int vec) {
    if (vec) return reinterpret_cast<const Pack<T, V>*>(p)[i];
    Pack<T, V> r;
#pragma unroll
    for (int k = 0; k < V; ++k) r.v[k] = p[i * V + k];
    return r;
}

template <typename T, int V>
__device__ __forceinline__ void store_pack(T* p, i64 i, const Pack<T, V>& r, int vec) {
    if (vec) {
        reinterpret_cast<Pack<T, V>*>(p)[i] = r;
        return;
    }
#pragma unroll
    for (int k = 0; k < V; ++k) p[i * V + k] = r.v[k];
}

#endif  // GPUGRAD_COMMON_CUH
