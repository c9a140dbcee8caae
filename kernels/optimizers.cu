// Fused optimizer updates for ALL parameters in ONE launch (PyTorch torch.optim formulas).
//
// SGD (torch.optim.SGD, maximize=False):
//   d = g + wd * p                               (if wd != 0)
//   b = d                                        (first step)
//   b = momentum * b + (1 - dampening) * d       (later steps; only if momentum != 0)
//   d = nesterov ? d + momentum * b : b          (only if momentum != 0)
//   p = p - lr * d
// Adam / AdamW (torch.optim.Adam / AdamW, amsgrad=False; `decoupled` selects AdamW):
//   AdamW: p = p * (1 - lr * wd)                 Adam: d = g + wd * p (if wd != 0)
//   m = lerp(m, d, 1 - beta1)                    (torch's lerp, both of its branches)
//   v = beta2 * v + (1 - beta2) * d * d
//   p = p - step_size * (m / (sqrt(v) / bc2_sqrt + eps)),
//   step_size = lr / (1 - beta1^step), bc2_sqrt = sqrt(1 - beta2^step)  (host, in double)
//
// Pointer table: tab (K x S int64) holds each tensor's parameter and state addresses (S = 2 for
// SGD: p, buf; S = 3 for Adam: p, m, v), gtab (K) the gradient addresses, sizes (K) the lengths,
// blocks (B x 2) maps block b to (tensor k, first element). Every tensor is cut into chunks of
// `chunk` elements, one block each, so the launch covers the concatenated index space without a
// search. The host caches the tables while the arrays stay the same (it compares data pointers).
// Half parameters (f16/bf16) do their math in float32; float64 in double.
//
// Memory traffic per element of s bytes: SGD reads p, g (+ b) and writes p (+ b): 3-5 s;
// Adam reads p, g, m, v and writes p, m, v: 7 s. Elementwise: deterministic.

#include "common.cuh"

template <typename A>
__device__ __forceinline__ A lerp_(A self, A end, A w) {
    return w < A(0.5) ? self + w * (end - self) : end - (end - self) * (A(1) - w);
}

template <typename A>
__device__ __forceinline__ void sgd_elem(A& p, A g, A& b, A lr, A momentum, A one_minus_damp,
                                         int nesterov, A wd, int first_step) {
    A d = g;
    if (wd != A(0)) d = d + wd * p;
    if (momentum != A(0)) {
        b = first_step ? d : momentum * b + one_minus_damp * d;
        d = nesterov ? d + momentum * b : b;
    }
    p = p - lr * d;
}

template <typename A>
__device__ __forceinline__ void adam_elem(A& p, A g, A& m, A& v, A wd, A decay, A w1, A beta2,
                                          A w2, A eps, A step_size, A bc2_sqrt, int decoupled) {
    A d = g;
    if (decoupled) {
        p = p * decay;
    } else if (wd != A(0)) {
        d = d + wd * p;
    }
    m = lerp_(m, d, w1);
    v = beta2 * v + w2 * d * d;
    const A denom = sqrt_(v) / bc2_sqrt + eps;
    p = p - step_size * (m / denom);
}

// Resolve this block's slice: tensor k, elements [start, start + len).
__device__ __forceinline__ void block_slice(const i64* __restrict__ sizes,
                                            const i64* __restrict__ blocks, int chunk, i64& k,
                                            i64& start, i64& len) {
    k = blocks[2 * (i64)blockIdx.x];
    start = blocks[2 * (i64)blockIdx.x + 1];
    const i64 rest = sizes[k] - start;
    len = rest < chunk ? rest : chunk;
}

template <typename T>
__device__ __forceinline__ void sgd_impl(const i64* __restrict__ tab, const i64* __restrict__ gtab,
                                         const i64* __restrict__ sizes,
                                         const i64* __restrict__ blocks, int chunk,
                                         typename AccOf<T>::type lr,
                                         typename AccOf<T>::type momentum,
                                         typename AccOf<T>::type one_minus_damp, int nesterov,
                                         typename AccOf<T>::type wd, int first_step) {
    typedef typename AccOf<T>::type A;
    const int V = 16 / sizeof(T);
    i64 k, start, len;
    block_slice(sizes, blocks, chunk, k, start, len);
    T* p = reinterpret_cast<T*>(tab[2 * k]) + start;
    const bool use_buf = momentum != A(0);
    T* b = use_buf ? reinterpret_cast<T*>(tab[2 * k + 1]) + start : p;  // p: harmless dummy
    const T* g = reinterpret_cast<const T*>(gtab[k]) + start;
    const unsigned long long align =
        reinterpret_cast<unsigned long long>(p) | reinterpret_cast<unsigned long long>(b) |
        reinterpret_cast<unsigned long long>(g);
    i64 done = 0;
    if ((align & 15ull) == 0) {
        const i64 nv = len / V;
        for (i64 i = threadIdx.x; i < nv; i += blockDim.x) {
            Pack<T, V> pp = reinterpret_cast<Pack<T, V>*>(p)[i];
            const Pack<T, V> gp = reinterpret_cast<const Pack<T, V>*>(g)[i];
            Pack<T, V> bp = pp;
            if (use_buf) bp = reinterpret_cast<Pack<T, V>*>(b)[i];
#pragma unroll
            for (int j = 0; j < V; ++j) {
                A pa = to_acc(pp.v[j]), ba = to_acc(bp.v[j]);
                sgd_elem<A>(pa, to_acc(gp.v[j]), ba, lr, momentum, one_minus_damp, nesterov, wd,
                            first_step);
                pp.v[j] = Store<T>::from(pa);
                bp.v[j] = Store<T>::from(ba);
            }
            reinterpret_cast<Pack<T, V>*>(p)[i] = pp;
            if (use_buf) reinterpret_cast<Pack<T, V>*>(b)[i] = bp;
        }
        done = nv * V;
    }
    for (i64 i = done + threadIdx.x; i < len; i += blockDim.x) {
        A pa = to_acc(p[i]);
        A ba = use_buf ? to_acc(b[i]) : A(0);
        sgd_elem<A>(pa, to_acc(g[i]), ba, lr, momentum, one_minus_damp, nesterov, wd, first_step);
        p[i] = Store<T>::from(pa);
        if (use_buf) b[i] = Store<T>::from(ba);
    }
}

template <typename T>
__device__ __forceinline__ void adam_impl(const i64* __restrict__ tab, const i64* __restrict__ gtab,
                                          const i64* __restrict__ sizes,
                                          const i64* __restrict__ blocks, int chunk,
                                          typename AccOf<T>::type wd, typename AccOf<T>::type decay,
                                          typename AccOf<T>::type w1, typename AccOf<T>::type beta2,
                                          typename AccOf<T>::type w2, typename AccOf<T>::type eps,
                                          typename AccOf<T>::type step_size,
                                          typename AccOf<T>::type bc2_sqrt, int decoupled) {
    typedef typename AccOf<T>::type A;
    const int V = 16 / sizeof(T);
    i64 k, start, len;
    block_slice(sizes, blocks, chunk, k, start, len);
    T* p = reinterpret_cast<T*>(tab[3 * k]) + start;
    T* m = reinterpret_cast<T*>(tab[3 * k + 1]) + start;
    T* v = reinterpret_cast<T*>(tab[3 * k + 2]) + start;
    const T* g = reinterpret_cast<const T*>(gtab[k]) + start;
    const unsigned long long align =
        reinterpret_cast<unsigned long long>(p) | reinterpret_cast<unsigned long long>(m) |
        reinterpret_cast<unsigned long long>(v) | reinterpret_cast<unsigned long long>(g);
    i64 done = 0;
    if ((align & 15ull) == 0) {
        const i64 nv = len / V;
        for (i64 i = threadIdx.x; i < nv; i += blockDim.x) {
            Pack<T, V> pp = reinterpret_cast<Pack<T, V>*>(p)[i];
            Pack<T, V> mp = reinterpret_cast<Pack<T, V>*>(m)[i];
            Pack<T, V> vp = reinterpret_cast<Pack<T, V>*>(v)[i];
            const Pack<T, V> gp = reinterpret_cast<const Pack<T, V>*>(g)[i];
#pragma unroll
            for (int j = 0; j < V; ++j) {
                A pa = to_acc(pp.v[j]), ma = to_acc(mp.v[j]), va = to_acc(vp.v[j]);
                adam_elem<A>(pa, to_acc(gp.v[j]), ma, va, wd, decay, w1, beta2, w2, eps,
                             step_size, bc2_sqrt, decoupled);
                pp.v[j] = Store<T>::from(pa);
                mp.v[j] = Store<T>::from(ma);
                vp.v[j] = Store<T>::from(va);
            }
            reinterpret_cast<Pack<T, V>*>(p)[i] = pp;
            reinterpret_cast<Pack<T, V>*>(m)[i] = mp;
            reinterpret_cast<Pack<T, V>*>(v)[i] = vp;
        }
        done = nv * V;
    }
    for (i64 i = done + threadIdx.x; i < len; i += blockDim.x) {
        A pa = to_acc(p[i]), ma = to_acc(m[i]), va = to_acc(v[i]);
        adam_elem<A>(pa, to_acc(g[i]), ma, va, wd, decay, w1, beta2, w2, eps, step_size, bc2_sqrt,
                     decoupled);
        p[i] = Store<T>::from(pa);
        m[i] = Store<T>::from(ma);
        v[i] = Store<T>::from(va);
    }
}

#define GPUGRAD_OPTIM_KERNELS(SUFFIX, T, A)                                                        \
    extern "C" __global__ void __launch_bounds__(256, 4) sgd_step_##SUFFIX(                        \
        const i64* __restrict__ tab, const i64* __restrict__ gtab, const i64* __restrict__ sizes,  \
        const i64* __restrict__ blocks, int chunk, A lr, A momentum, A one_minus_damp,             \
        int nesterov, A wd, int first_step) {                                                      \
        sgd_impl<T>(tab, gtab, sizes, blocks, chunk, lr, momentum, one_minus_damp, nesterov, wd,   \
                    first_step);                                                                   \
    }                                                                                              \
    extern "C" __global__ void __launch_bounds__(256, 4) adam_step_##SUFFIX(                       \
        const i64* __restrict__ tab, const i64* __restrict__ gtab, const i64* __restrict__ sizes,  \
        const i64* __restrict__ blocks, int chunk, A wd, A decay, A w1, A beta2, A w2, A eps,      \
        A step_size, A bc2_sqrt, int decoupled) {                                                  \
        adam_impl<T>(tab, gtab, sizes, blocks, chunk, wd, decay, w1, beta2, w2, eps, step_size,    \
                     bc2_sqrt, decoupled);                                                         \
    }

GPUGRAD_OPTIM_KERNELS(f32, float, float)
GPUGRAD_OPTIM_KERNELS(f64, double, double)
GPUGRAD_OPTIM_KERNELS(f16, half_t, float)
GPUGRAD_OPTIM_KERNELS(bf16, bf16_t, float)
