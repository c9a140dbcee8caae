// Fused sigmoid forward and backward.
//
//   forward:  y  = sigma(x), evaluated as  e = exp(-|x|),  r = 1 / (1 + e),
//                 y = r        for x >= 0
//                 y = e * r    for x <  0
//             exp never sees a positive argument, so nothing overflows at |x| = 1000, and small
//             outputs (x << 0) keep full relative precision (1 - r would cancel).
//   backward: gx = ((1 - y) * y) * gy     (from the saved output; same order as the NumPy path)
//
// Storage dtypes: float32, float64, float16, bfloat16. Half types are converted to float32 for the
// math and rounded back to nearest-even on store (common.cuh: PTX cvt for f16, integer rounding for
// bf16, so no cuda_fp16.h / cuda_bf16.h is needed: NVRTC has no host or toolkit headers).
//
// Memory traffic (n elements of s bytes): forward reads n*s and writes n*s; backward reads 2*n*s
// and writes n*s. Nothing else: one pass, grid-stride over 16-byte packs, loaded and stored as
// vectors when every pointer is 16-byte aligned (the launcher checks), element by element
// otherwise. Elementwise, so results do not depend on the launch configuration: deterministic.

#include "common.cuh"

template <typename A> __device__ __forceinline__ A sigmoid_math(A x) {
    const A e = exp_(-abs_(x));
    const A r = A(1) / (A(1) + e);
    return x >= A(0) ? r : e * r;
}

template <typename A> __device__ __forceinline__ A sigmoid_grad_math(A y, A g) {
    return ((A(1) - y) * y) * g;
}

// Thread tid handles packs tid, tid + stride, ... (16-byte vector accesses when vec, the same
// elements one by one otherwise: common.cuh's load_pack/store_pack), then the < V tail elements.
template <typename T>
__device__ __forceinline__ void sigmoid_fwd_impl(const T* __restrict__ x, T* __restrict__ y, i64 n,
                                                 int vec) {
    typedef typename AccOf<T>::type A;
    const int V = 16 / sizeof(T);
    const i64 tid = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    const i64 stride = (i64)gridDim.x * blockDim.x;
    const i64 nv = n / V;
    for (i64 i = tid; i < nv; i += stride) {
        const Pack<T, V> p = load_pack<T, V>(x, i, vec);
        Pack<T, V> q;
#pragma unroll
        for (int k = 0; k < V; ++k) q.v[k] = Store<T>::from(sigmoid_math<A>(to_acc(p.v[k])));
        store_pack<T, V>(y, i, q, vec);
    }
    for (i64 i = nv * V + tid; i < n; i += stride)
        y[i] = Store<T>::from(sigmoid_math<A>(to_acc(x[i])));
}

template <typename T>
__device__ __forceinline__ void sigmoid_bwd_impl(const T* __restrict__ y, const T* __restrict__ gy,
                                                 T* __restrict__ gx, i64 n, int vec) {
    typedef typename AccOf<T>::type A;
    const int V = 16 / sizeof(T);
    const i64 tid = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    const i64 stride = (i64)gridDim.x * blockDim.x;
    const i64 nv = n / V;
    for (i64 i = tid; i < nv; i += stride) {
        const Pack<T, V> a = load_pack<T, V>(y, i, vec);
        const Pack<T, V> b = load_pack<T, V>(gy, i, vec);
        Pack<T, V> q;
#pragma unroll
        for (int k = 0; k < V; ++k)
            q.v[k] = Store<T>::from(sigmoid_grad_math<A>(to_acc(a.v[k]), to_acc(b.v[k])));
        store_pack<T, V>(gx, i, q, vec);
    }
    for (i64 i = nv * V + tid; i < n; i += stride)
        gx[i] = Store<T>::from(sigmoid_grad_math<A>(to_acc(y[i]), to_acc(gy[i])));
}

// 256 threads per block (the launcher's choice). Asking for 4 resident blocks caps registers at 64:
// half occupancy with 16-byte accesses keeps enough bytes in flight, and without a min-blocks
// hint CUDA 13's ptxas aimed at 32 registers and spilled (tools/check_kernels.py fails on spills).
#define GPUGRAD_SIGMOID_KERNELS(SUFFIX, T)                                                         \
    extern "C" __global__ void __launch_bounds__(256, 4)                                           \
        sigmoid_fwd_##SUFFIX(const T* __restrict__ x, T* __restrict__ y, i64 n, int vec) {         \
        sigmoid_fwd_impl<T>(x, y, n, vec);                                                         \
    }                                                                                              \
    extern "C" __global__ void __launch_bounds__(256, 4) sigmoid_bwd_##SUFFIX(                     \
        const T* __restrict__ y, const T* __restrict__ gy, T* __restrict__ gx, i64 n, int vec) {   \
        sigmoid_bwd_impl<T>(y, gy, gx, n, vec);                                                    \
    }

GPUGRAD_SIGMOID_KERNELS(f32, float)
GPUGRAD_SIGMOID_KERNELS(f64, double)
GPUGRAD_SIGMOID_KERNELS(f16, half_t)
GPUGRAD_SIGMOID_KERNELS(bf16, bf16_t)
