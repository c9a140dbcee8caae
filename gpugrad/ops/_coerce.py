"""Argument coercion shared by the op wrappers: operands to Tensors (on the right device), Python
and NumPy scalars to Python numbers, dtype checks with errors that name the op. A leaf module: it
imports only the Tensor layer (and autograd's ``traced_call``)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..autograd import traced_call
from ..tensor import Tensor

_SCALARS = (int, float, bool)


def as_tensor(x: Any, like: Tensor | None = None) -> Tensor:
    """``x`` as a Tensor (on ``like``'s device when it has to be built)."""
    if x.__class__ is Tensor:
        return x
    return Tensor(x, device=like.device if like is not None else None)


def operand(x: Any, like: Tensor | None) -> Any:
    """Tensors and Python scalars pass through; anything array-like becomes a Tensor."""
    if x.__class__ is Tensor or x.__class__ in _SCALARS:
        return x
    if isinstance(x, (np.generic,)):
        return x.item()
    return Tensor(x, device=like.device if like is not None else None)


def binary(fn, a, b):
    if a.__class__ is not Tensor:
        if b.__class__ is not Tensor:
            a = as_tensor(a)
        a = operand(a, b if b.__class__ is Tensor else a)
    if b.__class__ is not Tensor:
        b = operand(b, a)
    return fn.apply(a, b)


def scalar_arg(op: str, name: str, value):
    """A bound or slope as a Python number: a NumPy scalar (np.float64(1.0)) would promote a
    float32 tensor and its gradient to float64."""
    if value is None or value.__class__ in _SCALARS:
        return value
    if isinstance(value, np.generic) or (isinstance(value, np.ndarray) and value.ndim == 0):
        return value.item()
    hint = " (for tensor bounds use gg.maximum / gg.minimum)" if op == "clip" else ""
    raise TypeError(f"{op}: {name} must be a Python or NumPy scalar, got "
                    f"{type(value).__name__}{hint}")


def floating(x, op: str) -> Tensor:
    x = as_tensor(x)
    if x.dtype.kind not in "fc":
        raise TypeError(f"{op}: expected a floating-point tensor, got dtype {x.dtype}")
    return x


def tensor_list(op: str, xs) -> list[Tensor]:
    xs = list(xs)
    if not xs:
        raise ValueError(f"{op}: expected a non-empty sequence of tensors")
    like = next((t for t in xs if t.__class__ is Tensor), None)
    return [as_tensor(t, like) for t in xs]


def float_tensor(x, op: str) -> Tensor:
    """``x`` as a Tensor, which must hold real floating-point numbers (else ``TypeError``)."""
    x = as_tensor(x)
    if x.dtype.kind != "f":
        raise TypeError(f"{op}: expected a floating-point tensor, got dtype {x.dtype} "
                        f"(shape {x.shape}, device {x.device})")
    return x


def float_input(op: str, x: Any, what: str = "input") -> Tensor:
    if x.__class__ is not Tensor:
        x = Tensor(x)
    if x.dtype.kind != "f":
        raise TypeError(f"{op}: {what} must be a floating-point tensor, got dtype {x.dtype} "
                        f"(shape {x.shape})")
    return x


def untracked_result(dev, fn, *args) -> Tensor:
    """``fn`` of the tensors' arrays (and other arguments) as a new tensor on ``dev``: math
    outside any Function, so without gradient (comparisons, argmax, integer casts). Recorded as
    one step of a ``gg.compile`` program."""
    return traced_call(_apply_arrays, dev, fn, *args)


def _apply_arrays(dev, fn, *args) -> Tensor:
    arrays = [a.data if a.__class__ is Tensor else a for a in args]
    if dev.type == "cpu":  # NumPy returns a scalar for 0-d inputs; tensors hold arrays
        return Tensor._wrap(np.asarray(fn(*arrays)), dev)
    with dev.activate():  # CuPy computes on the current GPU
        return Tensor._wrap(fn(*arrays), dev)
