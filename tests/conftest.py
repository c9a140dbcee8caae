"""Shared test fixtures: every op test runs on every available device from one body."""

from __future__ import annotations

import numpy as np
import pytest

import gpugrad as gg
from gpugrad.backend import fused_enabled, set_fused

DEVICES = ["cpu"] + (["cuda"] if gg.cuda.is_available() else [])


@pytest.fixture(params=DEVICES)
def device(request) -> str:
    """The device under test: "cpu" always, "cuda" when a GPU is present."""
    return request.param


@pytest.fixture(params=[True, False], ids=["fused", "composite"])
def fused(request) -> bool:
    """Run the test with the fused kernels on, then with the composite (GPUGRAD_FUSED=0) path."""
    prev = fused_enabled()
    set_fused(request.param)
    yield request.param
    set_fused(prev)


def to_numpy(t) -> np.ndarray:
    return t.numpy() if isinstance(t, gg.Tensor) else np.asarray(t)
