"""Shared helpers for the core op tests (imported as ``from _helpers import ...``).

Inputs are built on the host in float64, moved with ``gg.tensor(x, device=device)`` and compared
on the host with ``t.numpy()``, so one test body is right on every device.
"""

from __future__ import annotations

import os

import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import gpugrad as gg
import gpugrad.functional as F

# Small and deterministic by default; GPUGRAD_HYPOTHESIS_EXAMPLES=200 for a deeper local hunt.
_EXAMPLES = int(os.environ.get("GPUGRAD_HYPOTHESIS_EXAMPLES", "0"))


def hsettings(max_examples: int = 10):
    return settings(
        max_examples=_EXAMPLES or max_examples,
        deadline=None,
        derandomize=not _EXAMPLES,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )


shapes = hnp.array_shapes(min_dims=0, max_dims=3, min_side=1, max_side=3)
seeds = st.integers(0, 2**32 - 1)


@st.composite
def shape_and_axis(draw, min_dims=0, max_dims=4, max_side=3):
    """A shape and an ``axis`` for it: None, an int, or a tuple of distinct axes (some negative)."""
    shape = draw(hnp.array_shapes(min_dims=min_dims, max_dims=max_dims, min_side=1,
                                  max_side=max_side))
    nd = len(shape)
    if nd == 0:
        return shape, None
    kind = draw(st.sampled_from(["none", "int", "tuple"]))
    if kind == "none":
        return shape, None
    if kind == "int":
        return shape, draw(st.integers(-nd, nd - 1))
    axes = draw(st.lists(st.integers(0, nd - 1), min_size=1, max_size=nd, unique=True))
    return shape, tuple(a - nd if draw(st.booleans()) else a for a in axes)


def pair_shapes(num_shapes: int = 2):
    """Mutually broadcastable shapes (e.g. (3, 1) and (2, 1, 4))."""
    return hnp.mutually_broadcastable_shapes(num_shapes=num_shapes, min_dims=0, max_dims=3,
                                             min_side=1, max_side=3).map(lambda s: s.input_shapes)


def rand(shape, seed=0, low=-2.0, high=2.0, away_from=None, gap=0.15) -> np.ndarray:
    """Float64 host data; ``away_from`` pushes values off a kink (e.g. 0 for abs/relu)."""
    x = np.random.default_rng(seed).uniform(low, high, size=shape)
    if away_from is not None:
        near = np.abs(x - away_from) < gap
        x = np.where(near, away_from + np.where(x >= away_from, 1, -1) * (gap + 0.25), x)
    return np.asarray(x, dtype=np.float64)


def T(x, device, dtype=None, requires_grad=False) -> gg.Tensor:  # noqa: N802 - like torch.tensor
    x = np.asarray(x)
    return gg.tensor(x, dtype=dtype if dtype is not None else x.dtype, device=device,
                     requires_grad=requires_grad)


def check_grad(fn, arrays, device, atol=1e-5, rtol=1e-3) -> None:
    """``gg.gradcheck`` of ``fn`` at float64 copies of ``arrays`` on ``device``."""
    inputs = [T(np.asarray(a, np.float64), device, requires_grad=True) for a in arrays]
    assert gg.gradcheck(fn, inputs, atol=atol, rtol=rtol)


def check_unary(fn, ref, x, device, rtol64=1e-12, atol64=1e-13) -> None:
    """One unary op against its float64 reference: float32 and float64 values, the gradient by
    finite differences, and a float32 gradient of the input's dtype and shape."""
    y32 = fn(T(x, device, dtype=gg.float32))
    assert y32.dtype == np.float32 and y32.shape == x.shape
    assert_close(y32, ref(x.astype(np.float32).astype(np.float64)), rtol=2e-5, atol=2e-6)
    assert_close(fn(T(x, device)), ref(x), rtol=rtol64, atol=atol64, dtype=np.float64)
    check_grad(fn, [x], device)
    t = T(x, device, dtype=gg.float32, requires_grad=True)
    fn(t).sum().backward()
    assert t.grad.dtype == np.float32 and t.grad.shape == x.shape


def assert_close(t, ref, rtol=1e-6, atol=1e-6, dtype=None) -> None:
    got = t.numpy() if isinstance(t, gg.Tensor) else np.asarray(t)
    ref = np.asarray(ref)
    assert got.shape == ref.shape, (got.shape, ref.shape)
    if dtype is not None:
        assert got.dtype == np.dtype(dtype), (got.dtype, dtype)
    np.testing.assert_allclose(got, ref, rtol=rtol, atol=atol)


def train_step(model, opt):
    """The README's training step: forward, cross-entropy, zero_grad, backward, step."""
    def step(x, y):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss

    return step


def compiled_train_step(model, opt):
    """``train_step`` under ``gg.compile``."""
    return gg.compile(train_step(model, opt))
