"""CUDA detection: import cupy and count devices. Any failure means "no CUDA", reason kept."""

from __future__ import annotations

import functools


@functools.lru_cache(maxsize=1)
def status() -> tuple[int, str]:
    """``(device_count, reason)``; ``reason`` explains a count of zero."""
    try:
        import cupy
    except ImportError as exc:
        return 0, f"cupy is not installed ({exc}); install 'gpugrad[cuda12]' or 'gpugrad[cuda13]'"
    except Exception as exc:  # a broken CUDA install can raise anything at import
        return 0, f"importing cupy failed: {type(exc).__name__}: {exc}"
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # cupy imports fine without a driver; counting raises
        return 0, f"cupy cannot reach a CUDA device: {type(exc).__name__}: {exc}"
    if count == 0:
        return 0, "the CUDA runtime reports no devices"
    # A driver is enough to count devices, but CuPy compiles every elementwise kernel with NVRTC
    # and runs matmul through cuBLAS: without them the first op would fail, so say so here.
    fix = ("install 'gpugrad[cuda12]' or 'gpugrad[cuda13]' (they bring the CUDA libraries) or a "
           "CUDA toolkit")
    try:
        cupy.cuda.nvrtc.getVersion()
    except Exception as exc:
        return 0, (f"{count} CUDA device(s) found, but CuPy cannot load NVRTC, its kernel "
                   f"compiler ({type(exc).__name__}: {exc}); {fix}")
    try:
        from cupy_backends.cuda.libs import cublas  # noqa: F401
    except Exception as exc:
        return 0, (f"{count} CUDA device(s) found, but CuPy cannot load cuBLAS "
                   f"({type(exc).__name__}: {exc}); {fix}")
    try:
        _compile_probe(cupy)
    except Exception as exc:
        return 0, (f"{count} CUDA device(s) found, but CuPy cannot compile a kernel "
                   f"({type(exc).__name__}: {_first_line(exc)}); CuPy 14 compiles every kernel "
                   "against the CUDA headers (cuda_fp16.h, ...): install gpugrad[cuda12] or "
                   "gpugrad[cuda13] (cupy-cuda1Nx[ctk] brings the headers) or point CUDA_PATH "
                   "at a CUDA toolkit")
    return count, ""


def _compile_probe(cupy) -> None:
    """Compile and load one empty kernel the way gpugrad's kernels are (``RawModule``): NVRTC
    loading is not enough, CuPy 14.2 also needs the CUDA headers ("Failed to find CUDA headers"
    otherwise), which ``cupy-cuda13x`` without ``[ctk]`` lacks. CuPy caches the binary on disk."""
    with cupy.cuda.Device(0):
        code = 'extern "C" __global__ void gpugrad_probe(int* p) { if (p) p[0] = 0; }'
        cupy.RawModule(code=code).get_function("gpugrad_probe")


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""


def is_available() -> bool:
    return status()[0] > 0


def device_count() -> int:
    return status()[0]


def unavailable_reason() -> str:
    return status()[1]
