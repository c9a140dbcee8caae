"""Comparisons and logical ops: bool results, never differentiable, so no Functions.

These run outside ``Function.apply`` (through ``untracked_result``, which makes a GPU tensor's
device current, as CuPy computes on the current GPU, and records one ``gg.compile`` step).
"""

from __future__ import annotations

import numpy as np

from ..backend import DeviceError
from ..tensor import Tensor
from ._coerce import as_tensor, operand, untracked_result
from ._rules import check_broadcast


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
        try:
            return untracked_result(dev, np_ufunc if dev.type == "cpu" else
                                    getattr(dev.xp, ufunc), a, b)
        except ValueError:
            check_broadcast(name, a.data, b.data if b.__class__ is Tensor else b)
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
        return untracked_result(dev, np_ufunc if dev.type == "cpu" else getattr(dev.xp, ufunc),
                                x)

    unary.__name__ = name
    return unary


logical_not = _unary("logical_not (~)", "logical_not", bool_only=True)


isfinite = _unary("isfinite", "isfinite")
