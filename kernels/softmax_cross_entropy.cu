// Fused softmax cross-entropy over rows of logits x (N, C) with integer labels (N,).
//
//   per row:   m = max_j x_j,  s = sum_j exp(x_j - m)     (ONE pass: online normalizer, see below)
//              loss = (m - x_label) + log(s)          (= logsumexp(x) - x_label, no cancellation)
//              grad_j = (exp((x_j - m) - log(s)) - [j == label]) * scale
//   scale:     "none": gy[row] (1 in the fused forward), "sum": gy, "mean": gy / count, count =
//              the number of rows whose label != ignore_index, counted ON THE DEVICE (no sync).
//   ignored rows (label == ignore_index) give loss 0 and a zero gradient row. Labels outside [0, C)
//   are treated like ignored rows here and reported by ce_finalize (meta[1] = first such row),
//   which the launcher registers as a deferred check: read with the next host read, no sync.
//
// Online normalizer (Milakov & Gimelshein 2018): each thread keeps (m, s) over the elements it
// reads, taking a chunk max first so a 16-byte chunk costs one rescale at most; partial states
// combine as (m, s) + (m', s') = (M, s*exp(m-M) + s'*exp(m'-M)), M = max(m, m'). The empty state
// is (lowest finite, 0), so -inf logits add exp(-inf) = 0 rather than exp(-inf - -inf) = NaN.
//
// Regimes (chosen by the launcher from C):
//   ce_small_*  C <= 32: a W-lane group (W = next power of two >= C) per row, 32/W rows per warp,
//               one element per lane, shuffles only.
//   ce_warp_*   32 < C <= 1024: one warp per row, 8 rows per block.
//   ce_block_*  C > 1024 (any size; 256k and more): one block per row, looping over the row.
// The warp and block kernels keep the row they read in dynamic shared memory when it fits
// (use_smem), so forward+gradient reads the logits from DRAM once and writes the gradient once:
// 2*N*C*s bytes for the fused forward with gradient, N*C*s for the loss alone. Rows too long for
// shared memory are read a second time (mostly from L2).
//
// Determinism: every reduction is a fixed shuffle/shared-memory tree and each thread's element set
// depends only on (C, blockDim), never on timing or pointer alignment (vector and scalar loads
// cover the same 16-byte packs), so two runs give bit-identical results. No atomics: the one
// cross-row reduction is ce_finalize, a single block of 1024 threads summing in double.

#include "common.cuh"

template <typename T> struct Lim;
template <> struct Lim<float> {
    static __device__ __forceinline__ float lowest() { return -3.402823466e+38f; }
};
template <> struct Lim<double> {
    static __device__ __forceinline__ double lowest() { return -1.7976931348623157e+308; }
};

// One dynamic shared-memory symbol for the whole module (instantiations must agree on its type).
extern __shared__ __align__(16) unsigned char g_smem[];

template <typename T>
__device__ __forceinline__ void ms_combine(T& m, T& s, T m2, T s2) {
    const T mx = m2 > m ? m2 : m;
    // Not bit-symmetric: NVRTC contracts this into an FMA, fma(s, e, s2 * e2) on one lane and
    // fma(s2, e2, s * e) on its partner, so after a butterfly the lanes' sums differ in the last
    // bit. Callers that need one normaliser per row broadcast one lane's result (ce_row).
    s = s * exp_(m - mx) + s2 * exp_(m2 - mx);
    m = mx;
}

template <typename T, int V>
__device__ __forceinline__ void ms_update(T& m, T& s, const Pack<T, V>& p) {
    T cm = p.v[0];
#pragma unroll
    for (int k = 1; k < V; ++k) cm = p.v[k] > cm ? p.v[k] : cm;
    if (cm > m) {
        s = s * exp_(m - cm);
        m = cm;
    }
#pragma unroll
    for (int k = 0; k < V; ++k) s += exp_(p.v[k] - m);
}

template <typename T>
__device__ __forceinline__ void warp_ms(T& m, T& s, int width) {
    for (int off = width >> 1; off > 0; off >>= 1) {
        const T m2 = __shfl_xor_sync(FULL_MASK, m, off);
        const T s2 = __shfl_xor_sync(FULL_MASK, s, off);
        ms_combine(m, s, m2, s2);
    }
}

// Block-wide (m, s) combine; blockDim.x is a multiple of 32 and at most 1024.
template <typename T>
__device__ __forceinline__ void block_ms(T& m, T& s, T* red_m, T* red_s) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    warp_ms(m, s, 32);
    if (lane == 0) {
        red_m[warp] = m;
        red_s[warp] = s;
    }
    __syncthreads();
    if (warp == 0) {
        m = lane < nw ? red_m[lane] : Lim<T>::lowest();
        s = lane < nw ? red_s[lane] : T(0);
        warp_ms(m, s, 32);
        if (lane == 0) {
            red_m[0] = m;
            red_s[0] = s;
        }
    }
    __syncthreads();
    m = red_m[0];
    s = red_s[0];
}

// Rows with label != ignore_index, counted by every block itself (the launcher only asks for this
// when N * gridDim is small; otherwise a ce_finalize pass has already written the count).
__device__ __forceinline__ i64 block_count_valid(const i64* __restrict__ labels, i64 N,
                                                 i64 ignore_index, i64* red) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    i64 c = 0;
    for (i64 i = threadIdx.x; i < N; i += blockDim.x) c += labels[i] != ignore_index ? 1 : 0;
    for (int off = 16; off > 0; off >>= 1) c += __shfl_xor_sync(FULL_MASK, c, off);
    if (lane == 0) red[warp] = c;
    __syncthreads();
    if (warp == 0) {
        c = lane < nw ? red[lane] : 0;
        for (int off = 16; off > 0; off >>= 1) c += __shfl_xor_sync(FULL_MASK, c, off);
        if (lane == 0) red[0] = c;
    }
    __syncthreads();
    return red[0];
}

// Gradient scale shared by all kernels. gy_mode: 0 = upstream gradient 1, 1 = scalar gy[0],
// 2 = per-row gy[row]. need_count: mean reduction with a gradient to write.
template <typename T>
__device__ __forceinline__ T grad_scale(const T* __restrict__ gy, int gy_mode, i64 row, int mean,
                                        i64 count) {
    T g = gy_mode == 2 ? gy[row] : (gy_mode == 1 ? gy[0] : T(1));
    return mean ? g / (T)count : g;
}

template <typename T>
__device__ __forceinline__ i64 mean_count(const i64* __restrict__ labels, i64 N, i64 ignore_index,
                                          const i64* __restrict__ count_ptr, int need_count,
                                          i64* red) {
    if (!need_count) return 1;
    if (count_ptr) return count_ptr[0];
    return block_count_valid(labels, N, ignore_index, red);
}

// ---------------------------------------------------------------------------------------------
// C <= 32: 32/W rows per warp.
template <typename T>
__device__ __forceinline__ void ce_small_impl(const T* __restrict__ x,
    const i64* __restrict__ labels,
                                              i64 N, int C, int W, i64 ignore_index,
                                              T* __restrict__ loss_rows, T* __restrict__ grad,
                                              const T* __restrict__ gy, int gy_mode, int mean,
                                              const i64* __restrict__ count_ptr) {
    __shared__ i64 red_c[32];
    const i64 count = mean_count<T>(labels, N, ignore_index, count_ptr,
                                    mean && grad != nullptr, red_c);
    const int lane = threadIdx.x & 31;
    const int j = lane & (W - 1);
    const int group_base = lane & ~(W - 1);
    const i64 gwarp = ((i64)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    const i64 row = gwarp * (32 / W) + (lane / W);
    const bool row_ok = row < N;
    const i64 lab = row_ok ? labels[row] : ignore_index;
    const bool active = row_ok && lab != ignore_index && lab >= 0 && lab < C;
    const bool have = active && j < C;
    const T x_j = have ? x[row * C + j] : Lim<T>::lowest();

    // Every lane of the warp runs the shuffles (full mask); inactive lanes carry the empty state.
    T m = x_j;
    for (int off = W >> 1; off > 0; off >>= 1) {
        const T o = __shfl_xor_sync(FULL_MASK, m, off);
        m = o > m ? o : m;
    }
    const T e = have ? exp_(x_j - m) : T(0);
    T s = e;
    for (int off = W >> 1; off > 0; off >>= 1) s += __shfl_xor_sync(FULL_MASK, s, off);
    const T x_lab = __shfl_sync(FULL_MASK, x_j, group_base + (active ? (int)lab : 0));

    if (!row_ok) return;
    if (loss_rows != nullptr && j == 0) loss_rows[row] = active ? (m - x_lab) + log_(s) : T(0);
    if (grad != nullptr && j < C) {
        T g = T(0);
        if (active) {
            const T scale = grad_scale(gy, gy_mode, row, mean, count);
            g = (e / s - (j == lab ? T(1) : T(0))) * scale;
        }
        grad[row * C + j] = g;
    }
}

// ---------------------------------------------------------------------------------------------
// One row handled by a group of G threads (a warp or a block). cache: shared memory holding
// round_up(C, V) elements, or nullptr to re-read the row from global memory.
template <typename T, int V, bool BLOCK>
__device__ __forceinline__ void ce_row(const T* __restrict__ xrow, T* __restrict__ grow, T* cache,
                                       i64 C, i64 lab, bool active, int vec, int t, int G,
                                       T* red_m, T* red_s, T scale, T* loss_out) {
    const int U = 4;  // packs in flight per thread: enough bytes outstanding to cover DRAM latency
    const i64 nv = C / V;
    const int tail = (int)(C - nv * V);
    if (!active) {
        if (loss_out != nullptr && t == 0) *loss_out = T(0);
        if (grow != nullptr) {
            Pack<T, V> z;
#pragma unroll
            for (int k = 0; k < V; ++k) z.v[k] = T(0);
            for (i64 p = t; p < nv; p += G) store_pack<T, V>(grow, p, z, vec);
            if (t < tail) grow[nv * V + t] = T(0);
        }
        return;
    }
    Pack<T, V>* cache_v = reinterpret_cast<Pack<T, V>*>(cache);
    T m = Lim<T>::lowest(), s = T(0);
    for (i64 base = t; base < nv; base += (i64)G * U) {
        Pack<T, V> r[U];
#pragma unroll
        for (int u = 0; u < U; ++u) {
            const i64 p = base + (i64)u * G;
            if (p < nv) r[u] = load_pack<T, V>(xrow, p, vec);
        }
#pragma unroll
        for (int u = 0; u < U; ++u) {
            const i64 p = base + (i64)u * G;
            if (p < nv) {
                if (cache != nullptr) cache_v[p] = r[u];
                ms_update<T, V>(m, s, r[u]);
            }
        }
    }
    if (t < tail) {
        Pack<T, 1> r;
        r.v[0] = xrow[nv * V + t];
        if (cache != nullptr) cache[nv * V + t] = r.v[0];
        ms_update<T, 1>(m, s, r);
    }
    if (BLOCK) {
        block_ms(m, s, red_m, red_s);  // every thread reads the same shared (m, s)
    } else {
        warp_ms(m, s, 32);
        // lane 0's (m, s) for the whole row: the butterfly leaves lanes ~1 ulp apart
        m = __shfl_sync(FULL_MASK, m, 0);
        s = __shfl_sync(FULL_MASK, s, 0);
    }
    const T ls = log_(s);
    if (loss_out != nullptr && t == 0) *loss_out = (m - xrow[lab]) + ls;
    if (grow == nullptr) return;
    // Each thread re-reads exactly the packs it cached, so no barrier is needed before this loop.
    for (i64 p = t; p < nv; p += G) {
        const Pack<T, V> r = cache != nullptr ? cache_v[p] : load_pack<T, V>(xrow, p, vec);
        Pack<T, V> g;
#pragma unroll
        for (int k = 0; k < V; ++k) {
            const T hot = (p * V + k == lab) ? T(1) : T(0);
            g.v[k] = (exp_((r.v[k] - m) - ls) - hot) * scale;
        }
        store_pack<T, V>(grow, p, g, vec);
    }
    if (t < tail) {
        const i64 jj = nv * V + t;
        const T xv = cache != nullptr ? cache[jj] : xrow[jj];
        grow[jj] = (exp_((xv - m) - ls) - (jj == lab ? T(1) : T(0))) * scale;
    }
}

template <typename T>
__device__ __forceinline__ void ce_warp_impl(const T* __restrict__ x,
    const i64* __restrict__ labels,
                                             i64 N, i64 C, i64 ignore_index,
                                             T* __restrict__ loss_rows, T* __restrict__ grad,
                                             const T* __restrict__ gy, int gy_mode, int mean,
                                             const i64* __restrict__ count_ptr, int use_smem,
                                             int vec) {
    const int V = 16 / sizeof(T);
    __shared__ i64 red_c[32];
    const i64 count = mean_count<T>(labels, N, ignore_index, count_ptr,
                                    mean && grad != nullptr, red_c);
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const i64 row = (i64)blockIdx.x * (blockDim.x >> 5) + warp;
    if (row >= N) return;  // whole warp leaves together; no block barriers follow
    const i64 lab = labels[row];
    const bool active = lab != ignore_index && lab >= 0 && lab < C;
    const i64 cstride = (C + V - 1) / V * V;
    T* cache = use_smem ? reinterpret_cast<T*>(g_smem) + warp * cstride : nullptr;
    const T scale = active ? grad_scale(gy, gy_mode, row, mean, count) : T(0);
    ce_row<T, V, false>(x + row * C, grad != nullptr ? grad + row * C : nullptr, cache, C, lab,
                        active, vec, lane, 32, nullptr, nullptr, scale,
                        loss_rows != nullptr ? loss_rows + row : nullptr);
}

template <typename T>
__device__ __forceinline__ void ce_block_impl(const T* __restrict__ x,
    const i64* __restrict__ labels,
                                              i64 N, i64 C, i64 ignore_index,
                                              T* __restrict__ loss_rows, T* __restrict__ grad,
                                              const T* __restrict__ gy, int gy_mode, int mean,
                                              const i64* __restrict__ count_ptr, int use_smem,
                                              int vec) {
    const int V = 16 / sizeof(T);
    __shared__ i64 red_c[32];
    __shared__ T red_m[32];
    __shared__ T red_s[32];
    const i64 count = mean_count<T>(labels, N, ignore_index, count_ptr,
                                    mean && grad != nullptr, red_c);
    const i64 row = blockIdx.x;  // grid is exactly N blocks
    const i64 lab = labels[row];
    const bool active = lab != ignore_index && lab >= 0 && lab < C;  // uniform over the block
    T* cache = use_smem ? reinterpret_cast<T*>(g_smem) : nullptr;
    const T scale = active ? grad_scale(gy, gy_mode, row, mean, count) : T(0);
    ce_row<T, V, true>(x + row * C, grad != nullptr ? grad + row * C : nullptr, cache, C, lab,
                       active, vec, threadIdx.x, blockDim.x, red_m, red_s, scale,
                       loss_rows != nullptr ? loss_rows + row : nullptr);
}

// ---------------------------------------------------------------------------------------------
// One block (the launcher always uses 1024 threads, which fixes the summation order):
// meta[0] = rows with label != ignore_index, meta[1] = first row whose label is outside [0, C) and
// not ignore_index (N if none); with loss_rows, out[0] = the sum (or the mean over meta[0]; 0/0
// gives NaN, as PyTorch) accumulated in double in a fixed order.
template <typename T>
__device__ __forceinline__ void ce_finalize_impl(const i64* __restrict__ labels, i64 N, i64 C,
                                                 i64 ignore_index, const T* __restrict__ loss_rows,
                                                 T* __restrict__ out, int mean,
                                                 i64* __restrict__ meta) {
    __shared__ double red_a[32];
    __shared__ i64 red_c[32];
    __shared__ i64 red_b[32];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    double acc = 0.0;
    i64 cnt = 0, bad = N;
    for (i64 i = threadIdx.x; i < N; i += blockDim.x) {
        const i64 lab = labels[i];
        if (lab != ignore_index) {
            cnt += 1;
            if ((lab < 0 || lab >= C) && bad == N) bad = i;
        }
        if (loss_rows != nullptr) acc += (double)loss_rows[i];
    }
    for (int off = 16; off > 0; off >>= 1) {
        acc += __shfl_xor_sync(FULL_MASK, acc, off);
        cnt += __shfl_xor_sync(FULL_MASK, cnt, off);
        const i64 ob = __shfl_xor_sync(FULL_MASK, bad, off);
        bad = ob < bad ? ob : bad;
    }
    if (lane == 0) {
        red_a[warp] = acc;
        red_c[warp] = cnt;
        red_b[warp] = bad;
    }
    __syncthreads();
    if (warp == 0) {
        acc = lane < nw ? red_a[lane] : 0.0;
        cnt = lane < nw ? red_c[lane] : 0;
        bad = lane < nw ? red_b[lane] : N;
        for (int off = 16; off > 0; off >>= 1) {
            acc += __shfl_xor_sync(FULL_MASK, acc, off);
            cnt += __shfl_xor_sync(FULL_MASK, cnt, off);
            const i64 ob = __shfl_xor_sync(FULL_MASK, bad, off);
            bad = ob < bad ? ob : bad;
        }
        if (lane == 0) {
            meta[0] = cnt;
            meta[1] = bad;
            if (out != nullptr) out[0] = (T)(mean ? acc / (double)cnt : acc);
        }
    }
}

// BLOCK_MAX: ce_block's largest block. 1024 threads leave 64 registers each, which double's exp
// outgrows on sm_120 (64 B spilled); float64 rows get 512 threads (the launcher knows both).
#define GPUGRAD_CE_KERNELS(SUFFIX, T, BLOCK_MAX)                                                   \
    extern "C" __global__ void __launch_bounds__(256, 4) ce_small_##SUFFIX(                        \
        const T* __restrict__ x, const i64* __restrict__ labels, i64 N, int C, int W,              \
        i64 ignore_index, T* __restrict__ loss_rows, T* __restrict__ grad,                         \
        const T* __restrict__ gy, int gy_mode, int mean, const i64* __restrict__ count_ptr) {      \
        ce_small_impl<T>(x, labels, N, C, W, ignore_index, loss_rows, grad, gy, gy_mode, mean,     \
                         count_ptr);                                                               \
    }                                                                                              \
    extern "C" __global__ void __launch_bounds__(256, 2) ce_warp_##SUFFIX(                         \
        const T* __restrict__ x, const i64* __restrict__ labels, i64 N, i64 C, i64 ignore_index,   \
        T* __restrict__ loss_rows, T* __restrict__ grad, const T* __restrict__ gy, int gy_mode,    \
        int mean, const i64* __restrict__ count_ptr, int use_smem, int vec) {                      \
        ce_warp_impl<T>(x, labels, N, C, ignore_index, loss_rows, grad, gy, gy_mode, mean,         \
                        count_ptr, use_smem, vec);                                                 \
    }                                                                                              \
    extern "C" __global__ void __launch_bounds__(BLOCK_MAX, 1) ce_block_##SUFFIX(                  \
        const T* __restrict__ x, const i64* __restrict__ labels, i64 N, i64 C, i64 ignore_index,   \
        T* __restrict__ loss_rows, T* __restrict__ grad, const T* __restrict__ gy, int gy_mode,    \
        int mean, const i64* __restrict__ count_ptr, int use_smem, int vec) {                      \
        ce_block_impl<T>(x, labels, N, C, ignore_index, loss_rows, grad, gy, gy_mode, mean,        \
                         count_ptr, use_smem, vec);                                                \
    }                                                                                              \
    extern "C" __global__ void __launch_bounds__(1024, 1) ce_finalize_##SUFFIX(                    \
        const i64* __restrict__ labels, i64 N, i64 C, i64 ignore_index,                            \
        const T* __restrict__ loss_rows, T* __restrict__ out, int mean, i64* __restrict__ meta) {  \
        ce_finalize_impl<T>(labels, N, C, ignore_index, loss_rows, out, mean, meta);               \
    }

GPUGRAD_CE_KERNELS(f32, float, 1024)
GPUGRAD_CE_KERNELS(f64, double, 512)
