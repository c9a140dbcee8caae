"""Everything a ``Tensor`` does by running ops, attached to the class in one place (like DeZero's
``setup_variable``): operators, op methods (``t.exp()``, ``t.sum(axis)``), in-place methods,
``__setitem__``, ``.to``, ``.T``, ``.backward``. ``gpugrad/__init__.py`` calls ``setup_tensor()``
once; it also hands the autograd engine the ops namespace its graph-mode backward uses, so
neither ``tensor.py`` nor ``autograd.py`` imports anything above them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import autograd
from .. import ops as _ops
from ..backend import device as _device
from ..tensor import Tensor
from . import elementwise as _ew
from .indexing import setitem
from .inplace import INPLACE_METHODS

_SCALARS = (int, float, bool)

# Functions of gpugrad.ops that are also Tensor methods, under the same name (t.exp() == gg.exp(t)).
OP_METHODS = (
    "exp", "log", "sqrt", "abs", "sin", "cos", "tanh", "erf", "sign", "sigmoid", "relu",
    "leaky_relu", "gelu", "clip", "sum", "mean", "max", "min", "logsumexp", "softmax",
    "log_softmax", "argmax", "argmin", "reshape", "transpose", "permute", "swapaxes", "squeeze",
    "unsqueeze", "expand_dims", "broadcast_to", "astype", "matmul", "maximum", "minimum",
    "isfinite", "silu", "elu", "softplus", "log1p", "expm1", "square", "reciprocal",
    "logaddexp", "var", "std", "prod", "norm", "cumsum", "flatten", "split", "chunk", "flip",
    "tile", "repeat_interleave", "gather", "clone",
)


# Tensor/scalar operands go straight to the Function: these are the tape's hottest calls.
def _arith(fn, wrapper):
    """``a <op> b`` and its reflected form ``b <op> a`` for the Function ``fn``."""
    Tensor_ = Tensor  # local lookups keep the operator as cheap as a method defined in the class

    def forward(self, other):
        if other.__class__ is Tensor_ or other.__class__ in _SCALARS:
            return fn.apply(self, other)
        return wrapper(self, other)

    def reflected(self, other):
        if other.__class__ in _SCALARS:
            return fn.apply(other, self)
        return wrapper(other, self)

    return forward, reflected


def _binary(wrapper):
    return (lambda self, other: wrapper(self, other),
            lambda self, other: wrapper(other, self))


def to(self: Tensor, device: Any = None, dtype: Any = None) -> Tensor:
    """Move (and/or cast) the tensor; differentiable, like torch's ``.to``.

    ``t.to("cuda")``, ``t.to(gg.float64)``, ``t.to("cuda", gg.float16)``."""
    if isinstance(device, (np.dtype, type)):
        device, dtype = None, device
    out = self
    if device is not None and _device(device) is not self.device:
        out = _ops.to_device(out, _device(device))
    if dtype is not None and np.dtype(dtype) != out.dtype:
        out = out.astype(dtype)
    return out


def backward(self: Tensor, gradient: Any = None, retain_graph: bool | None = None,
             create_graph: bool = False) -> None:
    """Accumulate d(self)/d(leaf) into every reachable leaf's ``.grad``."""
    autograd.backward(self, gradient, retain_graph, create_graph)


def register_post_accumulate_grad_hook(self: Tensor, hook: Any) -> autograd.RemovableHandle:
    """Call ``hook(self)`` after backward accumulates into this leaf's ``.grad``."""
    return autograd.register_post_accumulate_grad_hook(self, hook)


def _methods() -> dict[str, Any]:
    m: dict[str, Any] = {name: getattr(_ops, name) for name in OP_METHODS}
    m["__add__"], m["__radd__"] = _arith(_ew.Add, _ops.add)
    m["__sub__"], m["__rsub__"] = _arith(_ew.Sub, _ops.sub)
    m["__mul__"], m["__rmul__"] = _arith(_ew.Mul, _ops.mul)
    m["__truediv__"], m["__rtruediv__"] = _arith(_ew.Div, _ops.div)
    m["__pow__"], m["__rpow__"] = _binary(_ops.pow)
    m["__matmul__"], m["__rmatmul__"] = _binary(_ops.matmul)
    m["__and__"], m["__rand__"] = _binary(_ops.logical_and)
    m["__or__"], m["__ror__"] = _binary(_ops.logical_or)
    m["__xor__"] = lambda self, other: _ops.logical_xor(self, other)
    m.update(
        __neg__=_ops.neg,
        __pos__=lambda self: self,
        __abs__=_ops.abs,
        __invert__=_ops.logical_not,
        __getitem__=_ops.getitem,
        __setitem__=setitem,
        __eq__=_ops.equal,
        __ne__=_ops.not_equal,
        __lt__=_ops.less,
        __le__=_ops.less_equal,
        __gt__=_ops.greater,
        __ge__=_ops.greater_equal,
        T=property(_ops.transpose, doc="The tensor with its dims reversed (``transpose()``)."),
        to=to,
        backward=backward,
        register_post_accumulate_grad_hook=register_post_accumulate_grad_hook,
        view=lambda self, *shape: _ops.reshape(self, *shape),
        float=lambda self: _ops.astype(self, np.float32),
        double=lambda self: _ops.astype(self, np.float64),
        half=lambda self: _ops.astype(self, np.float16),
        long=lambda self: _ops.astype(self, np.int64),
    )
    m.update(INPLACE_METHODS)
    return m


def setup_tensor() -> None:
    """Attach the op-backed methods to ``Tensor`` and give the engine its graph-mode namespace."""
    for name, method in _methods().items():
        if getattr(method, "__module__", None) == __name__ and \
                method.__name__ in ("<lambda>", "forward", "reflected"):
            method.__name__ = method.__qualname__ = name  # tracebacks say "__add__", not "forward"
        setattr(Tensor, name, method)
    autograd.set_graph_ops(_ops)
