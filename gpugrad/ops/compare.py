"""Comparisons and logical ops: bool results, never differentiable, so no Functions.

These run outside ``Function.apply``, so they make a GPU tensor's device current themselves (CuPy
computes on the current GPU); the CPU branch is spelled out to keep it as cheap as an op.
"""

from __future__ import annotations

import numpy as np

from ..backend import DeviceError
from ..tensor import Tensor
from ._coerce import as_tensor, operand
from ._rules import check_broadcast


# These run outside Function.apply, so they make a GPU tensor's device current themselves (CuPy
# computes on the current GPU); the CPU branch is spelled out to keep it as cheap as before.
def _check_bool(name: str, *xs) -> None:
    """``& | ^ ~`` (logical_*) take bool tensors only (README); ints would give logical results
    where Python and torch mean bitwise ones."""
    if not all(x.dtype == np.bool_ if x.__class__ is Tensor else x.__class__ is bool
               for x in xs):
        got = " and ".join(f"dtype {x.dtype}" if x.__class__ is Tensor else
                           f"{type(x).__name__} {x!r}" for x in xs)
        raise TypeError(f"{name}: expected bool tensors, got {got}")


def _compare(name: str, ufunc: str, bool_only: bool = False):
    np_ufunc = getattr(np, ufunc)

    def compare(a, b) -> Tensor:
        a = as_tensor(a, b if b.__class__ is Tensor else None)
        b = operand(b, a)
        if bool_only:
            _check_bool(name, a, b)
        if b.__class__ is Tensor and b.device is not a.device:
            raise DeviceError(f"{name}: tensors are on different devices ({a.device} and "
                              f"{b.device})")
        dev = a.device
        b = b.data if b.__class__ is Tensor else b
        try:
            if dev.type == "cpu":  # NumPy returns a scalar for 0-d inputs; tensors hold arrays
                return Tensor._wrap(np.asarray(np_ufunc(a.data, b)), dev)
            with dev.activate():  # CuPy computes on the current GPU
                return Tensor._wrap(getattr(dev.xp, ufunc)(a.data, b), dev)
        except ValueError:
            check_broadcast(name, a.data, b)
            raise

    compare.__name__ = name
    return compare


equal = _compare("equal", "equal")


not_equal = _compare("not_equal", "not_equal")


less = _compare("less", "less")


less_equal = _compare("less_equal", "less_equal")


greater = _compare("greater", "greater")


greater_equal = _compare("greater_equal", "greater_equal")


logical_and = _compare("logical_and (&)", "logical_and", bool_only=True)


logical_or = _compare("logical_or (|)", "logical_or", bool_only=True)


logical_xor = _compare("logical_xor (^)", "logical_xor", bool_only=True)


def _unary(name: str, ufunc: str, bool_only: bool = False):
    np_ufunc = getattr(np, ufunc)

    def unary(x) -> Tensor:
        x = as_tensor(x)
        if bool_only:
            _check_bool(name, x)
        dev = x.device
        if dev.type == "cpu":
            return Tensor._wrap(np_ufunc(x.data), dev)
        with dev.activate():
            return Tensor._wrap(getattr(dev.xp, ufunc)(x.data), dev)

    unary.__name__ = name
    return unary


logical_not = _unary("logical_not (~)", "logical_not", bool_only=True)


isfinite = _unary("isfinite", "isfinite")
