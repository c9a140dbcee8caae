"""Shared test fixtures: every op test runs on every available device from one body."""

from __future__ import annotations

import numpy as np
import pytest

import gpugrad as gg

DEVICES = ["cpu"] + (["cuda"] if gg.cuda.is_available() else [])


@pytest.fixture(params=DEVICES)
def device(request) -> str:
    """The device under test: "cpu" always, "cuda" when a GPU is present."""
    return request.param


def to_numpy(t) -> np.ndarray:
    return t.numpy() if isinstance(t, gg.Tensor) else np.asarray(t)
