// Fused binary cross-entropy with logits, forward and backward in one elementwise pass.
//
//   e      = exp(-|z|)                                  (never overflows)
//   loss_i = max(z, 0) - z * t + log1p(e)               (finite and exact at |z| = 1000)
//   grad_i = (sigmoid(z) - t) * g_i * gscale,  sigmoid(z) = z >= 0 ? 1/(1+e) : e/(1+e)
//   g_i    = 1 (fused forward), gy[0] (backward of mean/sum) or gy[i] (backward of "none");
//   gscale = 1/numel for "mean", else 1 (computed by the launcher from the shape: no sync).
//
// Reductions ("mean"/"sum") never materialise the per-element loss: each thread accumulates its
// elements in double, each block writes one partial (fixed shuffle tree), and bce_finalize (one
// block, fixed order) sums the partials. The launcher uses a grid that depends only on numel (never
// on the GPU model) and every thread covers the same 16-byte packs whether the loads are vectorised
// or not, so results are bit-identical across runs.
//
// Memory traffic (n elements of s bytes): forward "mean"/"sum" reads 2*n*s; "none" also writes
// n*s; the gradient adds a write of n*s. Backward reads 2*n*s (+ n*s for a per-element gy) and
// writes n*s.

#include "common.cuh"

template <typename T>
__device__ __forceinline__ void bce_elem(T z, T t, T& loss, T& sig) {
    const T e = exp_(-abs_(z));
    loss = (z > T(0) ? z : T(0)) - z * t + log1p_(e);
    const T r = T(1) / (T(1) + e);
    sig = z >= T(0) ? r : e * r;
}

// Block sum in a fixed tree; blockDim.x is a multiple of 32. Result valid in thread 0.
__device__ __forceinline__ double block_sum(double a, double* red) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    for (int off = 16; off > 0; off >>= 1) a += __shfl_xor_sync(FULL_MASK, a, off);
    if (lane == 0) red[warp] = a;
    __syncthreads();
    a = 0.0;
    if (warp == 0) {
        a = lane < nw ? red[lane] : 0.0;
        for (int off = 16; off > 0; off >>= 1) a += __shfl_xor_sync(FULL_MASK, a, off);
    }
    return a;
}

template <typename T>
__device__ __forceinline__ void bce_impl(const T* __restrict__ z, const T* __restrict__ t, i64 n,
                                         T* __restrict__ loss, T* __restrict__ grad,
                                         const T* __restrict__ gy, int gy_mode, T gscale,
                                         double* __restrict__ partials, int vec) {
    const int V = 16 / sizeof(T);
    __shared__ double red[32];
    const i64 tid = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    const i64 stride = (i64)gridDim.x * blockDim.x;
    const i64 nv = n / V;
    const i64 tail = n - nv * V;
    const T g0 = (gy_mode == 1 ? gy[0] : T(1)) * gscale;
    double acc = 0.0;
    for (i64 p = tid; p < nv; p += stride) {
        const Pack<T, V> zp = load_pack<T, V>(z, p, vec);
        const Pack<T, V> tp = load_pack<T, V>(t, p, vec);
        Pack<T, V> gp;
        if (grad != nullptr && gy_mode == 2) gp = load_pack<T, V>(gy, p, vec);
        Pack<T, V> lp;
#pragma unroll
        for (int k = 0; k < V; ++k) {
            T l, sg;
            bce_elem(zp.v[k], tp.v[k], l, sg);
            lp.v[k] = l;
            if (partials != nullptr) acc += (double)l;
            if (grad != nullptr) {
                const T g = gy_mode == 2 ? gp.v[k] * gscale : g0;
                gp.v[k] = (sg - tp.v[k]) * g;
            }
        }
        if (loss != nullptr) store_pack<T, V>(loss, p, lp, vec);
        if (grad != nullptr) store_pack<T, V>(grad, p, gp, vec);
    }
    if (tid < tail) {
        const i64 i = nv * V + tid;
        T l, sg;
        bce_elem(z[i], t[i], l, sg);
        if (partials != nullptr) acc += (double)l;
        if (loss != nullptr) loss[i] = l;
        if (grad != nullptr) grad[i] = (sg - t[i]) * (gy_mode == 2 ? gy[i] * gscale : g0);
    }
    if (partials != nullptr) {
        acc = block_sum(acc, red);
        if (threadIdx.x == 0) partials[blockIdx.x] = acc;
    }
}

// One block; the launcher uses 1024 threads and at most 1024 partials (one per thread).
template <typename T>
__device__ __forceinline__ void bce_finalize_impl(const double* __restrict__ partials, int P, i64 n,
                                                  int mean, T* __restrict__ out) {
    __shared__ double red[32];
    double a = 0.0;
    for (int i = threadIdx.x; i < P; i += blockDim.x) a += partials[i];
    a = block_sum(a, red);
    if (threadIdx.x == 0) out[0] = (T)(mean ? a / (double)n : a);
}

#define GPUGRAD_BCE_KERNELS(SUFFIX, T)                                                             \
    extern "C" __global__ void __launch_bounds__(256, 4) bce_##SUFFIX(                             \
        const T* __restrict__ z, const T* __restrict__ t, i64 n, T* __restrict__ loss,             \
        T* __restrict__ grad, const T* __restrict__ gy, int gy_mode, T gscale,                     \
        double* __restrict__ partials, int vec) {                                                  \
        bce_impl<T>(z, t, n, loss, grad, gy, gy_mode, gscale, partials, vec);                      \
    }                                                                                              \
    extern "C" __global__ void __launch_bounds__(1024, 1) bce_finalize_##SUFFIX(                   \
        const double* __restrict__ partials, int P, i64 n, int mean, T* __restrict__ out) {        \
        bce_finalize_impl<T>(partials, P, n, mean, out);                                           \
    }

GPUGRAD_BCE_KERNELS(f32, float)
GPUGRAD_BCE_KERNELS(f64, double)
