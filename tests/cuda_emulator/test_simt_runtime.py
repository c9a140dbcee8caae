"""The emulator itself: warp collectives against their CUDA semantics, every meeting-point check,
race detection by thread order, shared and global memory guards, launch-argument checks, and the
half conversions that replace inline PTX (bit-exact against NumPy)."""

from __future__ import annotations

import re

import numpy as np
import pytest
import simt_build
import simt_cupy as cp

SRC = r"""
#include <placeholder>
extern "C" __global__ void collectives(const int* in, int* out, int width) {
    const int t = threadIdx.x, lane = t & 31;
    const int v = in[t];
    int* o = out + t * 8;
    o[0] = __shfl_sync(0xffffffffu, v, (lane * 7 + 3) & 31);
    o[1] = __shfl_xor_sync(0xffffffffu, v, 5, width);
    o[2] = __shfl_up_sync(0xffffffffu, v, 3, width);
    o[3] = __shfl_down_sync(0xffffffffu, v, 2, width);
    o[4] = (int)__ballot_sync(0xffffffffu, v & 1);
    o[5] = __any_sync(0xffffffffu, v == 7);
    o[6] = __all_sync(0xffffffffu, v >= 0);
    // two half-warps meeting at different shuffles with disjoint masks: legal
    if (lane < 16) o[7] = __shfl_xor_sync(0x0000ffffu, v, 1);
    else o[7] = __shfl_xor_sync(0xffff0000u, v, 2);
    __syncwarp();
}
extern "C" __global__ void lane_not_in_mask(float* out) {
    out[threadIdx.x] = __shfl_sync(0x0000ffffu, 1.0f, 0);
}
extern "C" __global__ void full_mask(float* out) {  // launched with 48 threads
    out[threadIdx.x] = __shfl_sync(0xffffffffu, 1.0f, 0);
}
extern "C" __global__ void exited_lane(float* out) {
    if ((threadIdx.x & 31) == 5) return;
    out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, 1.0f, 1);
}
extern "C" __global__ void different_sites(float* out) {
    float v;
    if ((threadIdx.x & 31) < 16) v = __shfl_xor_sync(0xffffffffu, 1.0f, 1);
    else v = __shfl_xor_sync(0xffffffffu, 2.0f, 2);
    out[threadIdx.x] = v;
}
extern "C" __global__ void different_masks(float* out) {
    const int lane = threadIdx.x & 31;
    out[threadIdx.x] = __shfl_xor_sync(lane < 2 ? 0x3u : 0xffffffffu, 1.0f, 1);
}
extern "C" __global__ void shuffle_meets_barrier(float* out) {
    if (threadIdx.x == 0) __syncthreads();
    out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, 1.0f, 1);
    if (threadIdx.x != 0) __syncthreads();
}
extern "C" __global__ void divergent_barrier(float* out) {
    if (threadIdx.x < 32) __syncthreads();
    else __syncthreads();
    out[threadIdx.x] = 1.0f;
}
extern "C" __global__ void barrier_after_exit(float* out) {
    if (threadIdx.x == 0) return;
    __syncthreads();
    out[threadIdx.x] = 1.0f;
}
extern "C" __global__ void racy_sum(const float* in, float* out) {
    __shared__ float buf[64];
    buf[threadIdx.x] = in[threadIdx.x];
    // missing __syncthreads(): thread t reads its neighbour's slot
    out[threadIdx.x] = buf[(threadIdx.x + 1) & 63];
}
extern "C" __global__ void synced_sum(const float* in, float* out) {
    __shared__ float buf[64];
    buf[threadIdx.x] = in[threadIdx.x];
    __syncthreads();
    out[threadIdx.x] = buf[(threadIdx.x + 1) & 63];
}
extern __shared__ __align__(16) unsigned char dyn[];
extern "C" __global__ void dyn_write(int at) {
    if (threadIdx.x == 0) dyn[at] = 1;
}
extern "C" __global__ void global_write(float* out, long long at) {
    if (threadIdx.x == 0) out[at] = 1.0f;
}
extern "C" __global__ void typed(const double* x, long long n, float a, int k, unsigned short* h) {
    if (threadIdx.x == 0) h[0] = (unsigned short)(x[0] * a + n + k);
}
extern "C" __global__ void __launch_bounds__(64) bounded(float* out) { out[threadIdx.x] = 1.0f; }
extern "C" __global__ void cvt(const unsigned short* h, float* f, const float* g,
                               unsigned short* r, int n) {
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        float a;
        asm("cvt.f32.f16 %0, %1;" : "=f"(a) : "h"(h[i]));
        f[i] = a;
        unsigned short b;
        asm("cvt.rn.f16.f32 %0, %1;" : "=h"(b) : "f"(g[i]));
        r[i] = b;
    }
}
""".replace("#include <placeholder>\n", "")


@pytest.fixture(scope="module")
def mod(prebuilt):
    return cp.RawModule(code=SRC, name="runtime_checks.cu")


def _run(mod, name, threads, *args, grid=1, smem=0):
    mod.get_function(name)((grid,), (threads,), args, shared_mem=smem)


@pytest.mark.parametrize("width", [32, 16, 8, 4])
def test_collectives_follow_cuda_semantics(mod, width):
    rng = np.random.default_rng(width)
    v = rng.integers(0, 16, 64).astype(np.int32)
    out = cp.zeros(64 * 8, np.int32)
    _run(mod, "collectives", 64, cp.asarray(v), out, np.int32(width))
    got = out.get().reshape(64, 8)
    for t in range(64):
        lane, base = t & 31, t & ~31
        seg = lane & ~(width - 1)
        w = v[base : base + 32]
        xor = lane ^ 5
        up, down = lane - 3, lane + 2
        want = [
            w[(lane * 7 + 3) & 31],
            w[xor] if xor < seg + width else w[lane],
            w[up] if up >= seg else w[lane],
            w[down] if down < seg + width else w[lane],
            sum(1 << j for j in range(32) if w[j] & 1) - (1 << 32 if w[31] & 1 else 0),
            int((w == 7).any()),
            1,
            w[lane ^ 1] if lane < 16 else w[lane ^ 2],
        ]
        assert list(got[t]) == want, (t, list(got[t]), want)


@pytest.mark.parametrize(
    "name,threads,needle",
    [
        ("lane_not_in_mask", 32, r"__shfl_sync\(mask 0x0000ffff\) at .*: the calling lane is "
                                 r"not in the mask"),
        ("full_mask", 48, r"names lanes that do not exist \(the warp has 16 lanes\)"),
        ("exited_lane", 32, r"names lane 5, which has exited"),
        ("different_sites", 32, r"lanes of one warp meet at different points: lane \d+ at "
                                r"__shfl_xor_sync.*:\d+, lane \d+ at __shfl_xor_sync"),
        # lanes 0-1 (mask 0x3) may finish before lane 2 (full mask) arrives: then it names them
        # as exited; either way the launch fails naming the shuffle
        ("different_masks", 32, r"__shfl_xor_sync\(mask 0x(0000000)?[3f]+\) at .*:\d+ "
                                r"(names lane [01], which has exited|.*at __shfl_xor_sync)"),
        ("shuffle_meets_barrier", 32, r"meet at different points: .* lane 0 at __syncthreads"),
        ("divergent_barrier", 64, r"divergent __syncthreads"),
        ("barrier_after_exit", 64, r"thread 0 of the block has exited"),
    ],
)
def test_meeting_point_checks(mod, name, threads, needle):
    out = cp.zeros(64, np.float32)
    with pytest.raises(cp.SimtError, match=needle) as info:
        _run(mod, name, threads, out)
    assert re.search(rf"kernel {name}, block \(0,0,0\), thread \(\d+,0,0\)", str(info.value))


def test_missing_barrier_is_a_race(mod):
    x = cp.asarray(np.arange(64, dtype=np.float32))
    out = cp.zeros(64, np.float32)
    _run(mod, "synced_sum", 64, x, out)
    assert (out.get() == np.roll(np.arange(64), -1)).all()
    with pytest.raises(cp.SimtError, match=r"racy_sum: thread orders forward and \w+ .*a race"):
        _run(mod, "racy_sum", 64, x, out)


UNDER_ASAN = pytest.mark.skipif(
    simt_build.sanitize(), reason="under GPUGRAD_SIMT_SANITIZE=1 an out-of-range access aborts "
    "with AddressSanitizer's report instead (test_sanitizer_mode_reports checks that)")


@UNDER_ASAN
def test_shared_and_global_guards(mod):
    _run(mod, "dyn_write", 32, np.int32(99), smem=100)
    with pytest.raises(cp.SimtError, match="dynamic shared memory at byte 100, past the 100"):
        _run(mod, "dyn_write", 32, np.int32(100), smem=100)
    out = cp.zeros(10, np.float32)
    _run(mod, "global_write", 32, out, np.int64(9))
    with pytest.raises(cp.SimtError, match=r"out-of-range write at byte 40 \(after the 40-byte"):
        _run(mod, "global_write", 32, out, np.int64(10))
    with pytest.raises(cp.SimtError, match=r"out-of-range write at byte -4 \(before"):
        _run(mod, "global_write", 32, cp.zeros(10, np.float32), np.int64(-1))


def test_launch_arguments_are_checked_against_the_signature(mod):
    x, h = cp.zeros(1, np.float64), cp.zeros(1, np.uint16)
    ok = (x, np.int64(3), np.float32(2), np.int32(1), h)
    _run(mod, "typed", 32, *ok)
    bad = [
        ((x, np.int32(3), *ok[2:]), r"argument 1 \(C type long long\) got int32"),
        ((x, 3, np.float64(2), *ok[3:]), r"argument 2 \(C type float\) got float64"),
        ((x, *ok[1:3], 1, h), r"argument 3 \(C type int\) got int64"),  # CuPy: int -> int64
        ((cp.zeros(1, np.float32), *ok[1:]), r"argument 0 \(C type double\*\) got an array "
                                             r"of float32"),
        ((np.zeros(1), *ok[1:]), r"argument 0 .* got ndarray"),  # host memory
        ((*ok[:4], np.uint64(0)), None),  # the null pointer is fine
        (ok[:4], r"4 arguments for 5 parameters \(double\*, long long, float, int, "
                 r"unsigned short\*\)"),
    ]
    for args, needle in bad:
        if needle is None:
            continue
        with pytest.raises(TypeError, match=needle):
            _run(mod, "typed", 32, *args)
    with pytest.raises(ValueError, match="__launch_bounds__ allows 64"):
        _run(mod, "bounded", 96, cp.zeros(96, np.float32))
    fn = mod.get_function("dyn_write")
    with pytest.raises(ValueError, match="dynamic shared memory > the kernel's limit"):
        fn((1,), (32,), (np.int32(0),), shared_mem=64 * 1024)
    fn.max_dynamic_shared_size_bytes = 64 * 1024
    fn((1,), (32,), (np.int32(0),), shared_mem=64 * 1024)


def test_half_conversions_are_bit_exact(mod):
    every_half = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16)
    rng = np.random.default_rng(0)
    with np.errstate(invalid="ignore", over="ignore"):  # inf + -inf and the like: NaN, wanted
        tricky = _tricky_floats(every_half, rng)
    n = max(every_half.size, tricky.size)
    h = np.resize(every_half, n)
    g = np.resize(tricky, n)
    f, r = cp.zeros(n, np.float32), cp.zeros(n, np.uint16)
    _run(mod, "cvt", 256, cp.asarray(h), f, cp.asarray(g), r, np.int32(n))
    want_f = h.view(np.float16).astype(np.float32)
    with np.errstate(over="ignore"):
        want_r = g.astype(np.float16).view(np.uint16)
    same_f = (f.get().view(np.uint32) == want_f.view(np.uint32)) | np.isnan(want_f)
    assert same_f.all() and (np.isnan(f.get()) == np.isnan(want_f)).all()
    nan = np.isnan(g)
    assert (r.get()[~nan] == want_r[~nan]).all()
    assert (r.get()[nan] == 0x7FFF).all()  # PTX's canonical NaN


def _tricky_floats(every_half, rng) -> np.ndarray:
    return np.concatenate([
        every_half.view(np.float16).astype(np.float32),  # exact halves
        # halfway between neighbouring halves: the ties, rounded to even
        ((every_half[:-1].view(np.float16).astype(np.float64)
          + every_half[1:].view(np.float16).astype(np.float64)) / 2).astype(np.float32),
        rng.standard_normal(20000).astype(np.float32) * 10.0 ** rng.integers(-9, 6, 20000),
        np.array([65504, 65519.99, 65520, 1e10, -1e10, 2.0**-25, 2.0**-24 * 1.5, 5.9e-8,
                  np.inf, -np.inf, np.nan, 0.0, -0.0], np.float32),
    ]).astype(np.float32)  # fmt: skip


def test_rewrites_stay_few_and_complete(prebuilt):
    """Only what a CPU cannot compile is rewritten; every kernel source needs nothing else."""
    assert len(simt_build.REWRITES) <= 3
    for fam, src in prebuilt.items():
        wrapper, kernels_found = simt_build.translate(src, f"{fam}.cu")
        assert "asm(" not in wrapper and kernels_found
    with pytest.raises(simt_build.BuildError, match="no emulator equivalent"):
        simt_build.translate('asm("cvt.rz.f16.f32 %0, %1;" : "=h"(a) : "f"(b));', "x.cu")
    with pytest.raises(simt_build.BuildError, match="inline assembly the emulator cannot run"):
        simt_build.translate('asm volatile("membar.gl;");', "x.cu")
