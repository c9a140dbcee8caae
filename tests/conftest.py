"""Shared test fixtures: every op test runs on every available device from one body."""

from __future__ import annotations

import os

import numpy as np
import pytest

import gpugrad as gg
from gpugrad.backend import fused_enabled, set_fused


def _test_devices() -> list[str]:
    """Every available device, or the subset named in GPUGRAD_TEST_DEVICES (e.g. "cuda" on the
    GPU machine, where CI has already run the CPU cases)."""
    available = ["cpu"] + (["cuda"] if gg.cuda.is_available() else [])
    wanted = [d for d in os.environ.get("GPUGRAD_TEST_DEVICES", "").split(",") if d]
    return [d for d in wanted if d in available] or available


DEVICES = _test_devices()


@pytest.fixture(params=DEVICES)
def device(request) -> str:
    """The device under test: "cpu" always, "cuda" when a GPU is present."""
    return request.param


@pytest.fixture(params=[True, False], ids=["fused", "composite"])
def fused(request) -> bool:
    """Run the test with the fused kernels on, then with their reference (GPUGRAD_FUSED=0) path."""
    prev = fused_enabled()
    set_fused(request.param)
    yield request.param
    set_fused(prev)


def to_numpy(t) -> np.ndarray:
    return t.numpy() if isinstance(t, gg.Tensor) else np.asarray(t)
