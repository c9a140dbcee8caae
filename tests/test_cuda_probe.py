"""CUDA detection reports "no CUDA", with the reason, when CuPy cannot compile a kernel because
the CUDA headers are missing (cupy-cuda13x without [ctk]): the reason reaches ``gpugrad info``."""

from __future__ import annotations

import sys
import types

from gpugrad.backend import cuda_runtime


class _Device:
    def __init__(self, i=0):
        self.id = i

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _fake_cupy(headers: bool):
    class RawModule:
        def __init__(self, code, options=()):
            self.code = code

        def get_function(self, name):
            if not headers:
                raise RuntimeError("Failed to find CUDA headers. Please install the CUDA "
                                   "Toolkit or set CUDA_PATH\nmore detail")  # fmt: skip
            assert name in self.code
            return object()

    cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=lambda: 1),
                                 nvrtc=types.SimpleNamespace(getVersion=lambda: (13, 0)),
                                 Device=_Device)  # fmt: skip
    return types.SimpleNamespace(cuda=cuda, RawModule=RawModule)


def _with_cublas(monkeypatch):
    fake = types.ModuleType("cupy_backends.cuda.libs.cublas")
    for name in ("cupy_backends", "cupy_backends.cuda", "cupy_backends.cuda.libs"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    monkeypatch.setitem(sys.modules, "cupy_backends.cuda.libs.cublas", fake)
    sys.modules["cupy_backends.cuda.libs"].cublas = fake


def test_missing_cuda_headers_mean_no_cuda_with_the_reason(monkeypatch):
    _with_cublas(monkeypatch)
    probe = cuda_runtime.status.__wrapped__  # uncached
    monkeypatch.setitem(sys.modules, "cupy", _fake_cupy(headers=False))
    count, reason = probe()
    assert count == 0 and "1 CUDA device(s) found" in reason
    assert "Failed to find CUDA headers" in reason and "more detail" not in reason
    assert "[ctk]" in reason and "CUDA_PATH" in reason
    monkeypatch.setitem(sys.modules, "cupy", _fake_cupy(headers=True))
    assert probe() == (1, "")


def test_gpugrad_info_shows_the_header_reason(monkeypatch, capsys):
    from gpugrad.cli import main

    _with_cublas(monkeypatch)
    monkeypatch.setitem(sys.modules, "cupy", _fake_cupy(headers=False))
    cuda_runtime.status.cache_clear()
    try:
        assert main(["info"]) == 0
    finally:
        cuda_runtime.status.cache_clear()
    out = capsys.readouterr().out
    assert "cuda    unavailable:" in out and "Failed to find CUDA headers" in out
