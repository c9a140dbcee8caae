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


# -- float64 references of the normalization layers ----------------------------------------------
def ref_layer_norm(x, k, w=None, b=None, eps=1e-5):
    axes = tuple(range(x.ndim - k, x.ndim))
    mu = x.mean(axis=axes, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=axes, keepdims=True)
    y = (x - mu) / np.sqrt(var + eps)
    return y * (1 if w is None else w) + (0 if b is None else b)


def ref_batch_stats(x):
    axes = (0,) if x.ndim == 2 else (0, 2)
    n = x.size // x.shape[1]
    mu = x.mean(axis=axes)
    var = x.var(axis=axes)
    return mu, var, var * n / (n - 1)


def ref_batch_norm(x, mu, var, w, b, eps=1e-5):
    shape = (1, -1) + (1,) * (x.ndim - 2)
    return (x - mu.reshape(shape)) / np.sqrt(var.reshape(shape) + eps) * w.reshape(shape) \
        + b.reshape(shape)
