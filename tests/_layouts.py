"""Helpers of the memory-layout tests (``test_ops_layouts.py``): the same values placed on a
device as a C-contiguous array, a Fortran-ordered one, transposed and axis-swapped views,
strided slices, a view with negative strides and a zero-stride broadcast view; one run of an op
on such inputs (forward, then backward of a weighted sum of its outputs, or a second-order
backward through the graph-mode rules); and a finite-difference gradient of a float64 NumPy
reference.

The gaps of the strided layouts hold poison (NaN, or an out-of-range index), so an op that reads
memory it should not gives a visibly wrong answer; every input's whole buffer, gaps included, is
compared byte for byte before and after the run, so an op that writes into its input is caught.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

import gpugrad as gg

#: C order, Fortran order, a transposed view, the first two axes swapped (3-D and up: neither C
#: nor Fortran order, the last axis still contiguous), every other row, every other column from
#: an offset (the last axis), all axes reversed (negative strides), and rows broadcast from the
#: first row (zero stride on axis 0).
LAYOUTS = ("C", "F", "T", "swap", "rows", "cols", "neg", "bcast")


@dataclass(frozen=True)
class Arg:
    """One input of an op: its shape and what values it holds.

    ``kind``: "float" (uniform in [low, high], kept ``gap`` away from each of ``avoid``),
    "int" (integers in [low, high]), or "bool". Only float inputs get gradients (``grad``)."""

    shape: tuple[int, ...]
    kind: str = "float"
    low: float = -2.0
    high: float = 2.0
    avoid: tuple[float, ...] = ()
    gap: float = 0.1
    grad: bool = True

    @property
    def is_float(self) -> bool:
        return self.kind == "float"

    @property
    def differentiable(self) -> bool:
        return self.is_float and self.grad

    def draw(self, rng: np.random.Generator) -> np.ndarray:
        if self.kind == "bool":
            return np.asarray(rng.random(self.shape) < 0.5)
        if self.kind == "int":
            return np.asarray(rng.integers(int(self.low), int(self.high) + 1, size=self.shape))
        x = np.asarray(rng.uniform(self.low, self.high, size=self.shape))
        for point in self.avoid:  # off the kinks, so finite differences are meaningful there
            near = np.abs(x - point) < self.gap
            x = np.where(near, point + np.where(x >= point, 1, -1) * 2 * self.gap, x)
        return x


@dataclass
class Case:
    """An op under test: ``fn`` maps input tensors to a tensor (or a tuple of them); ``ref``
    maps float64 host arrays of the same values to the expected output(s), or is None when
    there is no deterministic reference (dropout). ``exact``: every layout must give the very
    same bits as the C-contiguous run (elementwise math, the same NumPy calls); otherwise the
    results may differ in the last bits (a reduction summed in another memory order).
    ``fused``: the op has a fused kernel, so a GPU also runs it with ``GPUGRAD_FUSED=0``.
    ``fd_on_bcast``: finite differences are meaningful on broadcast values too (not so for max
    and min over the broadcast axis, whose values are then all tied)."""

    name: str
    fn: Callable
    ref: Callable | None
    args: tuple[Arg, ...]
    exact: bool = True
    fused: bool = False
    fd_on_bcast: bool = True
    layouts: tuple[str, ...] = field(default=LAYOUTS)


def broadcast_values(values: np.ndarray) -> np.ndarray:
    """``values`` made constant along axis 0 (its first row repeated), so that a zero-stride
    view can hold them."""
    if values.ndim == 0 or values.shape[0] == 0:
        return values.copy()
    return np.broadcast_to(values[:1], values.shape).copy()


def _poison(dtype: np.dtype):
    if dtype.kind == "f":
        return np.nan
    if dtype.kind == "b":
        return True
    return -(10**6)  # an index no op may accept


def place(values: np.ndarray, layout: str, dev) -> tuple:
    """(the array of ``values`` on ``dev`` in ``layout``, the buffer it lives in)."""
    nd = values.ndim
    xp = dev.xp
    with dev.activate():
        if layout == "C" or nd == 0 or values.size == 0 and layout == "bcast":
            arr = dev.put(np.array(values, order="C"))
            return arr, arr
        if layout == "F":
            arr = xp.asfortranarray(dev.put(np.array(values, order="C")))
            return arr, arr
        if layout == "T":
            rev = tuple(reversed(range(nd)))
            root = dev.put(np.ascontiguousarray(values.transpose(rev)))
            return root.transpose(rev), root
        if layout == "swap" and nd >= 3:
            order = (1, 0) + tuple(range(2, nd))
            root = dev.put(np.ascontiguousarray(values.transpose(order)))
            return root.transpose(order), root
        if layout == "swap":  # (the same as "T" in 2-D)
            return place(values, "T", dev)
        if layout == "neg":
            flip = (slice(None, None, -1),) * nd
            root = dev.put(np.ascontiguousarray(values[flip]))
            return root[flip], root
        if layout == "rows":
            host = np.full((2 * values.shape[0],) + values.shape[1:], _poison(values.dtype),
                           values.dtype)
            host[::2] = values
            root = dev.put(host)
            return root[::2], root
        if layout == "cols":
            host = np.full(values.shape[:-1] + (2 * values.shape[-1] + 1,),
                           _poison(values.dtype), values.dtype)
            host[..., 1::2] = values
            root = dev.put(host)
            return root[..., 1::2], root
        if layout == "bcast":
            root = dev.put(np.ascontiguousarray(values[:1]))
            return xp.broadcast_to(root, values.shape), root
    raise ValueError(f"unknown layout {layout!r}")


def _snapshot(root) -> bytes:
    return gg.tensor(root, dtype=root.dtype, device="cpu").numpy().tobytes()  # GPU -> host


@dataclass
class Run:
    outputs: list[np.ndarray]
    grads: list[np.ndarray | None]


def _inputs(case: Case, dev, dtype, layouts, values) -> tuple[list, list, list]:
    """(leaf tensors of ``values`` placed in ``layouts``, their buffers, the buffers' bytes)."""
    tensors, roots, before = [], [], []
    for arg, v, layout in zip(case.args, values, layouts):
        arr, root = place(v.astype(dtype) if arg.is_float else v, layout, dev)
        t = gg.Tensor._wrap(arr, dev)
        if arg.differentiable:
            t.requires_grad_()
        tensors.append(t)
        roots.append(root)
        before.append(_snapshot(root))
    return tensors, roots, before


def _seed(w: np.ndarray, like: gg.Tensor, layout: str) -> gg.Tensor:
    """The weight ``w`` as an upstream gradient for ``like``, in ``layout`` where a copy keeps
    it (gradients are copied in order "K": Fortran order and transposes survive)."""
    g, _ = place(w.astype(like.dtype), layout if layout != "bcast" else "C", like.device)
    return gg.Tensor._wrap(g, like.device)


def _check_unmodified(case: Case, roots, before, layouts) -> None:
    for i, (root, snap) in enumerate(zip(roots, before)):
        assert _snapshot(root) == snap, \
            f"{case.name}: input {i} ({layouts[i]}) was modified by forward or backward"


def run(case: Case, device: str, dtype, layouts: tuple[str, ...], values: list[np.ndarray],
        weights: list[np.ndarray]) -> Run:
    """``case.fn`` on ``values`` placed in ``layouts`` (float inputs cast to ``dtype``), then
    backward of ``Σ weights·outputs`` (each weight placed in the first input's layout, so the
    upstream gradient is non-contiguous too where the layout allows). Fails if any input's
    buffer changed."""
    dev = gg.device(device)
    tensors, roots, before = _inputs(case, dev, dtype, layouts, values)
    out = case.fn(*tensors)
    outs = list(out) if isinstance(out, tuple) else [out]
    diff = [(o, w) for o, w in zip(outs, weights) if o.requires_grad]
    if len(diff) == 1:
        o, w = diff[0]
        o.backward(gradient=_seed(w, o, layouts[0]))
    elif diff:
        total = None
        for o, w in diff:
            term = (o * gg.tensor(w, dtype=o.dtype, device=device)).sum()
            total = term if total is None else total + term
        total.backward()
    grads = []
    for arg, t in zip(case.args, tensors):
        if not arg.differentiable or not diff:
            grads.append(None)
            continue
        assert t.grad is not None, f"{case.name}: no gradient reached an input"
        assert t.grad.shape == t.shape and t.grad.dtype == t.dtype, \
            f"{case.name}: gradient {t.grad.shape} {t.grad.dtype} for input {t.shape} {t.dtype}"
        grads.append(t.grad.numpy())
    outputs = [o.numpy() for o in outs]
    _check_unmodified(case, roots, before, layouts)
    return Run(outputs, grads)


def run_second_order(case: Case, device: str, dtype, layouts: tuple[str, ...],
                     values: list[np.ndarray], weights: list[np.ndarray]) -> Run:
    """Like ``run``, through the graph-mode rules: the first-order gradients of
    ``Σ weights·outputs`` (``gg.grad(create_graph=True)``) as outputs, then backward of
    ``Σ v·gradient`` (fixed pseudo-random ``v``) for the second-order gradients."""
    dev = gg.device(device)
    tensors, roots, before = _inputs(case, dev, dtype, layouts, values)
    leaves = [t for t in tensors if t.requires_grad]
    out = case.fn(*tensors)
    outs = list(out) if isinstance(out, tuple) else [out]
    diff = [(o, w) for o, w in zip(outs, weights) if o.requires_grad]
    if not diff:  # comparisons: nothing to differentiate
        return Run([], [])
    firsts = gg.grad([o for o, _ in diff], leaves, [_seed(w, o, layouts[0]) for o, w in diff],
                     create_graph=True)
    total = None
    rng = np.random.default_rng(3)
    for f in firsts:
        if f is not None and f.requires_grad:
            term = (f * gg.tensor(rng.uniform(-1, 1, f.shape), dtype=f.dtype, device=device)).sum()
            total = term if total is None else total + term
    if total is not None:
        total.backward()
    _check_unmodified(case, roots, before, layouts)
    return Run([f.numpy() if f is not None else None for f in firsts],
               [t.grad.numpy() if t.grad is not None else None for t in leaves])


def fd_grads(case: Case, values: list[np.ndarray], weights: list[np.ndarray],
             eps: float = 1e-6) -> list[np.ndarray | None]:
    """Central differences of ``Σ weights·case.ref(values)`` for every differentiable input."""

    def objective(vals) -> float:
        out = case.ref(*vals)
        outs = out if isinstance(out, tuple) else (out,)
        return float(sum(np.sum(w * np.asarray(o, np.float64)) for o, w in zip(outs, weights)
                         if np.asarray(o).dtype.kind == "f"))

    grads: list[np.ndarray | None] = []
    for i, arg in enumerate(case.args):
        if not arg.differentiable:
            grads.append(None)
            continue
        g = np.zeros(values[i].shape)
        for j in np.ndindex(values[i].shape):
            vals = [v.copy() for v in values]
            vals[i][j] += eps
            up = objective(vals)
            vals[i][j] -= 2 * eps
            g[j] = (up - objective(vals)) / (2 * eps)
        grads.append(g)
    return grads
