"""In-place tensor operations: ``+= -= *= /=``, ``add_ sub_ mul_ div_ zero_ fill_ copy_``.

PyTorch writes these into the tensor's storage and uses version counters to catch a write into a
value that backward still needs. gpugrad keeps no version counters, so it never writes into an
array that something else may hold: each op computes its result out of place (the ordinary,
recorded op) and the tensor *takes* it -- same Tensor object, new array. Whatever saved the old
array for backward (or holds a view of it) keeps the old values, so a gradient can never be
computed from overwritten inputs. The rules otherwise follow PyTorch:

- a leaf that requires grad may be changed only under ``gg.no_grad()`` (the manual SGD step
  ``with gg.no_grad(): w -= lr * w.grad``); in grad mode that is a ``RuntimeError``;
- in grad mode a non-leaf (or a tensor combined with one that requires grad) takes the recorded
  result, so it becomes that node of the graph and gradients flow through the update;
- the result must keep the tensor's shape (``ValueError`` otherwise) and cast to its dtype within
  the same kind (float32 += float64 is fine, int64 += float32 is a ``TypeError``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import ops
from ..autograd import _tracing, is_grad_enabled
from ..tensor import Tensor

__all__ = ["INPLACE_METHODS"]


def _check_writable(t: Tensor, op: str) -> None:
    if t.requires_grad and t._ctx is None and is_grad_enabled():
        raise RuntimeError(
            f"{op}: a leaf tensor that requires grad (shape {t.shape}) cannot be changed in "
            "place while grad mode is on; wrap the update in `with gg.no_grad():`"
        )


def _take(t: Tensor, out: Tensor, op: str) -> Tensor:
    """Make ``t`` hold ``out`` (its array, and its graph node when ``out`` was recorded)."""
    if out.shape != t.shape:
        raise ValueError(f"{op}: the result has shape {out.shape} but the tensor has shape "
                         f"{t.shape}; an in-place op cannot change a tensor's shape")
    if out.dtype != t.dtype:
        if not np.can_cast(out.dtype, t.dtype, casting="same_kind"):
            raise TypeError(f"{op}: the result's dtype {out.dtype} cannot be stored in the "
                            f"tensor's dtype {t.dtype} (shape {t.shape})")
        out = out.astype(t.dtype)
    t.data = out.data
    if out.requires_grad:
        t._ctx, t.requires_grad = out._ctx, True
    if _tracing.tracer is not None:  # gg.compile replays the rebinding
        _tracing.tracer.on_rebind(t)
    return t


def _updater(fn, name: str, label: str | None = None):
    """The in-place form of the binary op ``fn``; ``add_``/``sub_`` also take torch's ``alpha``
    (``self ± alpha * other``)."""
    label = label or name

    def update(self: Tensor, other: Any, alpha: float = 1) -> Tensor:
        _check_writable(self, label)
        return _take(self, fn(self, other if alpha == 1 else other * alpha), label)

    update.__name__ = name
    update.__doc__ = f"In place ``{label}``: the tensor takes the result (see gpugrad.ops.inplace)."
    return update


def _replace(t: Tensor, array: Any) -> Tensor:
    """``t`` now holds the constant ``array``. In grad mode that cuts it from the graph (nothing
    upstream influences a constant); under no_grad the update is invisible to autograd, as in
    PyTorch, and the tensor keeps its node."""
    t.data = array
    if t._ctx is not None and is_grad_enabled():
        t._ctx, t.requires_grad = None, False
    if _tracing.tracer is not None:
        _tracing.tracer.on_rebind(t)
    return t


def zero_(self: Tensor) -> Tensor:
    """Set every element to 0 in place."""
    return fill_(self, 0)


def fill_(self: Tensor, value: Any) -> Tensor:
    """Set every element to ``value`` (a number or a 0-d tensor) in place."""
    if isinstance(value, Tensor):
        if value.ndim != 0:
            raise ValueError(f"fill_: value must be a number or a 0-d tensor, got shape "
                             f"{value.shape} (tensor shape {self.shape})")
        return copy_(self, value)
    _check_writable(self, "fill_")
    with self.device.activate():
        return _replace(self, self.device.xp.full(self.shape, value, dtype=self.dtype))


def copy_(self: Tensor, src: Any) -> Tensor:
    """Copy ``src`` (broadcast to this shape, cast to this dtype, from any device) in place;
    differentiable with respect to ``src``, like torch's ``copy_``."""
    _check_writable(self, "copy_")
    if src.__class__ is not Tensor:
        src = Tensor(src, dtype=self.dtype, device=self.device)
    elif src.device is not self.device:
        src = src.to(self.device)
    if src.shape != self.shape:
        try:
            src = ops.broadcast_to(src, self.shape)
        except ValueError:
            raise ValueError(f"copy_: a source of shape {src.shape} does not broadcast to the "
                             f"tensor's shape {self.shape}") from None
    if src.requires_grad and is_grad_enabled() and self.dtype.kind in "fc":
        return _take(self, ops.clone(src), "copy_")  # a node of its own, not src's alias
    with self.device.activate():
        return _replace(self, src.data.astype(self.dtype, copy=True))


INPLACE_METHODS = {
    "__iadd__": _updater(ops.add, "__iadd__", "+="),
    "__isub__": _updater(ops.sub, "__isub__", "-="),
    "__imul__": _updater(ops.mul, "__imul__", "*="),
    "__itruediv__": _updater(ops.div, "__itruediv__", "/="),
    "add_": _updater(ops.add, "add_"),
    "sub_": _updater(ops.sub, "sub_"),
    "mul_": _updater(ops.mul, "mul_"),
    "div_": _updater(ops.div, "div_"),
    "zero_": zero_,
    "fill_": fill_,
    "copy_": copy_,
}
