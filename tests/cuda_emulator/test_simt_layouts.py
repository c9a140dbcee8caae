"""fused_cuda's entry points on device arrays that are not C-contiguous: transposed views, every
other row of a larger buffer (NaN in the gaps), negative strides, zero-stride broadcasts and
views one element off an alignment boundary. The kernels take flat pointers (the emulator
refuses a non-contiguous argument outright), so every entry point must hand them contiguous
copies: each result must equal, byte for byte, the same call on C-contiguous copies, and no
input may change."""

from __future__ import annotations

import numpy as np
import pytest
import simt_cupy as cp
from _simt_cases import dev, dev_unaligned, host

LAYOUTS = ("T", "rows", "neg", "bcast", "offset")
# float64 runs float32's launch code; half types are converted to contiguous float32 first
DTYPES = ["float32"]


@pytest.fixture(autouse=True)
def _one_thread_order(emu, monkeypatch):
    """One thread order per launch: the kernels' order independence is the other tests' subject;
    here only what the launch code hands them matters (a third of the time)."""
    monkeypatch.setattr(cp, "ORDERS", ("forward",))


def _place(x: np.ndarray, layout: str) -> cp.ndarray:
    """``x`` as a device array in ``layout`` (for "bcast", ``x`` must repeat its first row)."""
    flip = (slice(None, None, -1),) * x.ndim
    if layout == "T":
        return dev(np.ascontiguousarray(x.T)).T
    if layout == "rows":
        buf = cp.full((2 * x.shape[0],) + x.shape[1:], np.nan if x.dtype.kind == "f" else -7,
                      x.dtype)
        buf[::2] = x
        return buf[::2]
    if layout == "neg":
        return dev(np.ascontiguousarray(x[flip]))[flip]
    if layout == "bcast":
        return np.broadcast_to(dev(np.ascontiguousarray(x[:1])), x.shape, subok=True)
    if layout == "offset":
        return dev_unaligned(x)
    raise ValueError(layout)


def _bcast_rows(x: np.ndarray) -> np.ndarray:
    return np.broadcast_to(x[:1], x.shape).copy()


def _same(got, want, what: str) -> None:
    got = got if isinstance(got, tuple) else (got,)
    want = want if isinstance(want, tuple) else (want,)
    for g, w in zip(got, want):
        if w is None:
            assert g is None, what
            continue
        g, w = host(g), host(w)
        assert g.shape == w.shape and g.dtype == w.dtype, (what, g.shape, w.shape)
        assert g.tobytes() == w.tobytes(), f"{what}: differs from the C-contiguous call"


_CONTIGUOUS: dict = {}  # the C-contiguous call's result per (what, inputs): computed once


def _check(call, arrays: list[np.ndarray], layout: str, what: str) -> None:
    """``call`` on ``arrays`` in ``layout`` (2-D and larger arrays; 1-D ones too except for
    "T", where they stay C) against ``call`` on C-contiguous copies; inputs unchanged."""
    if layout == "bcast":
        arrays = [_bcast_rows(a) for a in arrays]
    placed = [_place(a, layout) if a.ndim and (a.ndim > 1 or layout != "T") else dev(a)
              for a in arrays]
    assert any(not p.flags.c_contiguous or p.data.ptr % 16 for p in placed), what
    before = [host(p).tobytes() for p in placed]
    key = (what, tuple((a.dtype.str, a.shape, a.tobytes()) for a in arrays))
    if key not in _CONTIGUOUS:
        _CONTIGUOUS[key] = call(*[dev(a) for a in arrays])
    _same(call(*placed), _CONTIGUOUS[key], f"{what} ({layout})")
    assert [host(p).tobytes() for p in placed] == before, f"{what} ({layout}): input changed"


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES + ["float16"])
def test_sigmoid(emu, dtype, layout):
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((6, 5)) * 3).astype(dtype)
    y = rng.uniform(0.1, 0.9, (6, 5)).astype(dtype)
    gy = rng.standard_normal((6, 5)).astype(dtype)
    _check(emu.sigmoid_forward, [x], layout, "sigmoid_forward")
    _check(emu.sigmoid_backward, [y, gy], layout, "sigmoid_backward")


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("C", [5, 40, 1100])  # the three row-kernel regimes
def test_softmax_cross_entropy(emu, dtype, C, layout):
    rng = np.random.default_rng(C)
    x = (rng.standard_normal((6, C)) * 3).astype(dtype)
    labels = rng.integers(0, C, 6)
    labels[4] = -100
    for reduction in ("mean", "sum", "none"):
        def forward(xd, lab, r=reduction):
            return emu.softmax_cross_entropy(xd, lab, -100, r, True)

        _check(forward, [x, labels], layout, f"softmax_cross_entropy {reduction}")
        gy = rng.uniform(0.5, 1.5, 6 if reduction == "none" else ()).astype(dtype)

        def backward(xd, lab, g=gy, r=reduction):
            return emu.softmax_cross_entropy_backward(xd, lab, -100, r, dev(g) if not g.ndim
                                                      else _place(g, "neg"))

        _check(backward, [x, labels], layout, f"softmax_cross_entropy_backward {reduction}")


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_bce_with_logits(emu, dtype, layout):
    rng = np.random.default_rng(2)
    z = (rng.standard_normal((6, 5)) * 4).astype(dtype)
    t = rng.uniform(0, 1, (6, 5)).astype(dtype)
    gy = rng.standard_normal((6, 5)).astype(dtype)
    for reduction in ("mean", "sum", "none"):
        def forward(zd, td, r=reduction):
            return emu.bce_with_logits(zd, td, r, True)

        _check(forward, [z, t], layout, f"bce_with_logits {reduction}")
        if reduction == "none":
            _check(lambda zd, td, g: emu.bce_with_logits_backward(zd, td, "none", g),
                   [z, t, gy], layout, "bce_with_logits_backward none")
        else:
            _check(lambda zd, td, r=reduction: emu.bce_with_logits_backward(
                zd, td, r, dev(np.asarray(0.75, dtype))), [z, t], layout,
                f"bce_with_logits_backward {reduction}")


@pytest.mark.parametrize("layout", LAYOUTS)
def test_optimizer_steps_take_non_contiguous_grads(emu, layout):
    """Parameters and states are C-contiguous (the optimizers check); gradients come as they
    are, e.g. the transposed gradient of a weight used as ``w.T``."""
    rng = np.random.default_rng(3)
    p = rng.standard_normal((6, 5)).astype(np.float32)
    g = rng.standard_normal((6, 5)).astype(np.float32)
    g = _bcast_rows(g) if layout == "bcast" else g
    results = []
    for grad in (_place(g, layout), dev(g)):
        params, bufs = [dev(p)], [cp.zeros((6, 5), np.float32)]
        emu.sgd_step(params, [grad], bufs, lr=0.1, momentum=0.9, dampening=0.0,
                     nesterov=True, weight_decay=0.01, first_step=True)
        m, v, q = cp.zeros((6, 5), np.float32), cp.zeros((6, 5), np.float32), dev(p)
        emu.adam_step([q], [grad], [m], [v], step=1, lr=0.01, beta1=0.9, beta2=0.999, eps=1e-8,
                      weight_decay=0.01, decoupled=True)
        results.append(tuple(host(a).tobytes() for a in (params[0], bufs[0], q, m, v)))
    assert results[0] == results[1], layout


@pytest.mark.parametrize("layout", LAYOUTS)
def test_scatter_add_takes_non_contiguous_indices_and_values(emu_scatter, layout):
    """The deterministic segment-sum scatter-add (``x[idx]``'s gradient, Embedding's) with the
    index array and the values in any layout: the same bytes as from C-contiguous ones."""
    rng = np.random.default_rng(4)
    idx = rng.integers(-5, 5, (3, 4))  # repeated and negative rows
    values = rng.standard_normal((2, 3, 4, 3)).astype(np.float32)
    if layout == "bcast":
        idx, values = _bcast_rows(idx), _bcast_rows(values)
    results = []
    for i, v in ((_place(idx, layout), _place(values, layout)), (dev(idx), dev(values))):
        target = cp.zeros((2, 5, 3), np.float32)
        assert emu_scatter.scatter_add(target, (slice(None), i), v) is True
        results.append(host(target).tobytes())
    assert results[0] == results[1], layout
