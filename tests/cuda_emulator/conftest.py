"""The CUDA emulator tier: kernels/*.cu built with g++ and run as fibers (see simt_build and
simt_cupy), driven by the project's real launch code (fused_cuda, fused_cuda_tables, kernels)."""

from __future__ import annotations

import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import simt_build
import simt_cupy
from _backend_loader import load_backend_module

from gpugrad.backend import kernels

# One emulator-side cache of compiled modules for the whole session (kernels.get_function's
# caches are swapped for these while a test runs, so real CuPy modules never mix in).
_MODULES: dict = {}
_FUNCTIONS: dict = {}


def pytest_collection_modifyitems(config, items):
    if simt_build.compiler() is not None:
        return
    skip = pytest.mark.skip(reason="g++ not found: the CUDA emulator tier compiles kernels/*.cu "
                                   "with a C++17 compiler (apt-get install g++)")  # fmt: skip
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def _sanitizer_preloaded():
    if simt_build.sanitize() and "libasan" not in Path("/proc/self/maps").read_text():
        pytest.skip("GPUGRAD_SIMT_SANITIZE=1 needs libasan preloaded: run with "
                    "LD_PRELOAD=$(g++ -print-file-name=libasan.so) (README, Development)")


@pytest.fixture(scope="session")
def prebuilt():
    """Every kernel family built once, two at a time at most (CI has 2 cores)."""
    sources = {fam: kernels.read_source(fam) for fam in kernels.families()}
    simt_build.runtime_lib()
    workers = max(1, min(2, os.cpu_count() or 1))
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(lambda kv: simt_build.build_module(kv[1], f"{kv[0]}.cu"), sources.items()))
    return sources


def load_with_standin(name: str):
    """A fresh ``gpugrad.backend.<name>`` (and fused_cuda_tables) whose ``import cupy`` got the
    stand-in; sys.modules and the gpugrad.backend package are left as they were."""
    return load_backend_module(name, simt_cupy, f"_{name}_simt")


_FUSED = {}


@pytest.fixture()
def emu(prebuilt, monkeypatch):
    """The stand-in as ``cupy`` for this test, with fused_cuda bound to it. Yields the fused_cuda
    module; ``emu.cupy`` is the stand-in."""
    monkeypatch.setitem(sys.modules, "cupy", simt_cupy)
    monkeypatch.setattr(kernels, "_modules", _MODULES)
    monkeypatch.setattr(kernels, "_functions", _FUNCTIONS)
    monkeypatch.setattr(simt_cupy, "ORDERS", simt_cupy.ORDERS)
    simt_cupy.launches.clear()
    if "mod" not in _FUSED:
        _FUSED["mod"] = load_with_standin("fused_cuda")
    mod = _FUSED["mod"]
    mod.cupy_standin = simt_cupy
    yield mod


@pytest.fixture()
def emu_scatter(emu):
    """gpugrad.backend.scatter_cuda bound to the stand-in."""
    if "scatter" not in _FUSED:
        _FUSED["scatter"] = load_with_standin("scatter_cuda")
    return _FUSED["scatter"]
