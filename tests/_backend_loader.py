"""Load a fresh copy of a cupy-importing ``gpugrad.backend`` module against a stand-in for CuPy
(the emulator tier's ``simt_cupy``, or a recording fake), leaving ``sys.modules`` and the
``gpugrad.backend`` package exactly as they were."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from gpugrad.backend import kernels

# fused_cuda imports this sibling, which imports cupy itself: it must be fresh too
_SIBLING = "fused_cuda_tables"


def load_backend_module(name: str, cupy_module: ModuleType | object, alias: str) -> ModuleType:
    """A new module object ``gpugrad.backend.<alias>`` built from ``gpugrad/backend/<name>.py``
    whose ``import cupy`` (and its ``fused_cuda_tables``'s) receives ``cupy_module``."""
    path = Path(kernels.__file__).with_name(f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"gpugrad.backend.{alias}", path)
    mod = importlib.util.module_from_spec(spec)
    package = sys.modules["gpugrad.backend"]
    names = ("cupy", f"{package.__name__}.{_SIBLING}")
    saved = {n: sys.modules.pop(n, None) for n in names}
    saved_attr = vars(package).get(_SIBLING)
    sys.modules["cupy"] = cupy_module
    try:
        spec.loader.exec_module(mod)
    finally:
        for n, module in saved.items():
            if module is None:
                sys.modules.pop(n, None)
            else:
                sys.modules[n] = module
        if saved_attr is None:
            vars(package).pop(_SIBLING, None)
        else:
            setattr(package, _SIBLING, saved_attr)
    return mod
