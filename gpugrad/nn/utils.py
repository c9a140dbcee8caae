"""Gradient clipping, like ``torch.nn.utils``: ``clip_grad_norm_`` and ``clip_grad_value_``.

Both change the parameters' ``.grad`` arrays in place on their devices. The norm and the scale
stay device arrays (PyTorch's formulas: per-gradient norms, the norm of those norms, then
clip_coef = min(max_norm / (total + 1e-6), 1)), so clipping never waits for the GPU -- except
with ``error_if_nonfinite=True``, which must read the norm to decide whether to raise, and when
the gradients live on several GPUs (their norms and the scale travel through the host).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np

from ..autograd import traced_call
from ..backend import cpu
from ..tensor import Tensor

__all__ = ["clip_grad_norm_", "clip_grad_value_"]


def _params(parameters: Tensor | Iterable[Tensor]) -> list[Tensor]:
    return [parameters] if isinstance(parameters, Tensor) else list(parameters)


def _vector_norm(xp: Any, x: Any, p: float) -> Any:
    """torch.linalg.vector_norm(x, p) as a 0-d array on x's device (half inputs in float32)."""
    a = xp.abs(x).ravel()
    if a.dtype.itemsize < 4:  # float16 / bfloat16: squares overflow, accumulate in float32
        a = a.astype(np.float32)
    if p == math.inf:
        out = a.max()
    elif p == -math.inf:
        out = a.min()
    elif p == 0:
        out = (a != 0).sum().astype(a.dtype)
    elif p == 1:
        out = a.sum()
    elif p == 2:
        out = xp.sqrt(xp.dot(a, a))
    else:
        out = (a**p).sum() ** (1.0 / p)
    return xp.asarray(out)


def clip_grad_norm_(parameters: Tensor | Iterable[Tensor], max_norm: float,
                    norm_type: float = 2.0, error_if_nonfinite: bool = False) -> Tensor:
    """Scale the gradients of ``parameters`` in place so that their total ``norm_type``-norm
    (over all gradients, as if concatenated) is at most ``max_norm``; return that total norm
    (before clipping) as a 0-d tensor on the first parameter's device. Parameters without a
    gradient are ignored. ``norm_type`` may be ``inf`` (largest absolute value)."""
    # one step of a gg.compile program
    return traced_call(_clip_grad_norm, _params(parameters), float(max_norm), float(norm_type),
                       bool(error_if_nonfinite))


def _clip_grad_norm(params: list[Tensor], max_norm: float, norm_type: float,
                    error_if_nonfinite: bool) -> Tensor:
    # Empty gradients add nothing to any norm (and max/min of nothing is undefined).
    grads = [p.grad for p in params if p.grad is not None and p.grad.size]
    if not grads:
        dev = params[0].device if params else cpu()
        with dev.activate():
            return Tensor._wrap(dev.xp.zeros((), dtype=np.float32), dev)
    first = grads[0].device
    dtype = np.result_type(*[g.dtype for g in grads])
    norms = []
    for g in grads:
        with g.device.activate():
            norm = _vector_norm(g.device.xp, g.data, norm_type)
        if g.device is not first:  # PyTorch gathers the norms on the first device too
            with first.activate():
                norm = g.device.ops.to_device(norm, first)
        norms.append(norm)
    xp = first.xp
    with first.activate():
        total = _vector_norm(xp, xp.stack(norms), norm_type).astype(dtype)
        if error_if_nonfinite and not bool(xp.isfinite(total)):  # the one host read
            raise RuntimeError(f"clip_grad_norm_: the total norm of order {norm_type} of the "
                               "gradients is non-finite, so it cannot be clipped; pass "
                               "error_if_nonfinite=False to scale by it anyway")
        coef = xp.minimum(max_norm / (total + 1e-6), 1.0)
    for g in grads:
        with g.device.activate(), np.errstate(invalid="ignore"):  # inf · 0 = nan, as torch, quietly
            c = coef if g.device is first else first.ops.to_device(coef, g.device)
            arr = g.writable_data()  # never scale an array a graph saved (create_graph)
            arr *= c
    return Tensor._wrap(total, first)


def clip_grad_value_(parameters: Tensor | Iterable[Tensor], clip_value: float) -> None:
    """Clamp every gradient of ``parameters`` into [-clip_value, clip_value], in place."""
    traced_call(_clip_grad_value, _params(parameters), float(clip_value))


def _clip_grad_value(params: list[Tensor], clip_value: float) -> None:
    for p in params:
        if p.grad is not None:
            with p.device.activate():
                arr = p.grad.writable_data()  # never clamp an array a graph saved
                p.device.xp.clip(arr, -clip_value, clip_value, out=arr)
