// Deterministic scatter-add for the gradients of integer-array indexing (Embedding lookups,
// x[idx], repeat with per-element counts): target[p, k, q] += sum of values[p, i, q] over every
// position i whose index is k, summed in increasing i, the order NumPy's add.at uses.
//
// The launcher sorts the composite keys index * M + i (unique, so any sort gives the same
// permutation) and passes keys[j] = the index and order[j] = i of the j-th smallest. Thread
// (p, j, q) with j the first of a run of equal keys sums that run sequentially and adds the sum to
// its target element, which no other thread touches: no atomics, so every run gives the same
// bits, unlike cupyx.scatter_add's atomicAdd whose order (and so rounding) varies between runs.
// Half types accumulate in float32 and round once.
//
// Layout: values (P, M, Q) and target (P, N, Q), both C-contiguous; keys and order (M,) int64.
// Memory traffic: every value read once, every touched target element read and written once,
// keys read about twice. A run of length L costs its thread L sequential reads (a heavily
// repeated index, e.g. a padding token, serialises on one thread per (p, q)).

#include "common.cuh"

template <typename T>
__device__ __forceinline__ void segment_sum_impl(const i64* __restrict__ keys,
                                                 const i64* __restrict__ order, i64 M,
                                                 const T* __restrict__ values,
                                                 T* __restrict__ target, i64 N, i64 P, i64 Q) {
    typedef typename AccOf<T>::type A;
    const i64 total = P * M * Q;
    const i64 stride = (i64)gridDim.x * blockDim.x;
    for (i64 t = (i64)blockIdx.x * blockDim.x + threadIdx.x; t < total; t += stride) {
        const i64 q = t % Q;  // adjacent threads: adjacent q, so the loads coalesce
        const i64 j = (t / Q) % M;
        const i64 p = t / (Q * M);
        const i64 key = keys[j];
        if ((j > 0 && keys[j - 1] == key) || key < 0 || key >= N) continue;
        A acc = A(0);
        for (i64 k = j; k < M && keys[k] == key; ++k)
            acc += to_acc(values[(p * M + order[k]) * Q + q]);
        T* dst = target + (p * N + key) * Q + q;
        *dst = Store<T>::from(to_acc(*dst) + acc);
    }
}

#define GPUGRAD_SCATTER_KERNELS(SUFFIX, T)                                                         \
    extern "C" __global__ void __launch_bounds__(256, 4) segment_sum_##SUFFIX(                     \
        const i64* __restrict__ keys, const i64* __restrict__ order, i64 M,                        \
        const T* __restrict__ values, T* __restrict__ target, i64 N, i64 P, i64 Q) {               \
        segment_sum_impl<T>(keys, order, M, values, target, N, P, Q);                              \
    }

GPUGRAD_SCATTER_KERNELS(f32, float)
GPUGRAD_SCATTER_KERNELS(f64, double)
GPUGRAD_SCATTER_KERNELS(f16, half_t)
GPUGRAD_SCATTER_KERNELS(bf16, bf16_t)
