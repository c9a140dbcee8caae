"""Helpers shared by the nn layer tests (imported as ``from _nn_helpers import ...``)."""

from __future__ import annotations

import numpy as np
import pytest

import gpugrad as gg
import gpugrad.nn as nn

try:
    import torch
except ImportError:  # the GPU machine may have no torch: the NumPy references still run there
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="torch is not installed")


def _rng(seed=0):
    return np.random.default_rng(seed)


def _t(x, device, requires_grad=False, dtype=None):
    x = np.asarray(x)
    return gg.tensor(x, dtype=dtype or x.dtype, device=device, requires_grad=requires_grad)


def _other(device: str) -> str:
    """Another device than ``device`` when there is one (CUDA <-> CPU), else the CPU."""
    return "cpu" if device != "cpu" else ("cuda" if gg.cuda.is_available() else "cpu")


def _set(t: gg.Tensor, host: np.ndarray) -> None:
    with t.device.activate():
        t.data[...] = t.device.backend.asarray(np.asarray(host, dtype=t.dtype))


def _to_torch(module: nn.Module, tmod) -> None:
    """Copy every parameter and buffer into the torch module (strict: the keys must match)."""
    tmod.load_state_dict({k: torch.from_numpy(v.numpy()) for k, v in module.state_dict().items()})
