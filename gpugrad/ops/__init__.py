"""The public op functions (``gg.exp``, ``gg.sum``, ...). Each coerces its operands and applies one
Function. This module is also the ``ops`` namespace derivative rules see in graph mode."""

from __future__ import annotations

import builtins
from typing import Any

import numpy as np

from ..backend import DeviceError, checks
from ..tensor import Tensor
from . import activations as _act
from . import elementwise as _ew
from . import linalg as _la
from . import reductions as _red
from . import shape as _sh
from .stochastic import dropout

_SCALARS = (int, float, bool)


def _t(x: Any, like: Tensor | None = None) -> Tensor:
    """``x`` as a Tensor (on ``like``'s device when it has to be built)."""
    if x.__class__ is Tensor:
        return x
    return Tensor(x, device=like.device if like is not None else None)


def _operand(x: Any, like: Tensor | None) -> Any:
    """Tensors and Python scalars pass through; anything array-like becomes a Tensor."""
    if x.__class__ is Tensor or x.__class__ in _SCALARS:
        return x
    if isinstance(x, (np.generic,)):
        return x.item()
    return Tensor(x, device=like.device if like is not None else None)


def _binary(fn, a, b):
    if a.__class__ is not Tensor:
        if b.__class__ is not Tensor:
            a = _t(a)
        a = _operand(a, b if b.__class__ is Tensor else a)
    if b.__class__ is not Tensor:
        b = _operand(b, a)
    return fn.apply(a, b)


# -- elementwise ----------------------------------------------------------------------------
def add(a, b) -> Tensor: return _binary(_ew.Add, a, b)
def sub(a, b) -> Tensor: return _binary(_ew.Sub, a, b)
def mul(a, b) -> Tensor: return _binary(_ew.Mul, a, b)
def div(a, b) -> Tensor: return _binary(_ew.Div, a, b)
def pow(a, b) -> Tensor: return _binary(_ew.Pow, a, b)  # noqa: A001
def maximum(a, b) -> Tensor: return _binary(_ew.Maximum, a, b)
def minimum(a, b) -> Tensor: return _binary(_ew.Minimum, a, b)
def neg(x) -> Tensor: return _ew.Neg.apply(_t(x))
def exp(x) -> Tensor: return _ew.Exp.apply(_t(x))
def log(x) -> Tensor: return _ew.Log.apply(_t(x))
def sqrt(x) -> Tensor: return _ew.Sqrt.apply(_t(x))
def abs(x) -> Tensor: return _ew.Abs.apply(_t(x))  # noqa: A001
def sin(x) -> Tensor: return _ew.Sin.apply(_t(x))
def cos(x) -> Tensor: return _ew.Cos.apply(_t(x))
def tanh(x) -> Tensor: return _ew.Tanh.apply(_t(x))
def erf(x) -> Tensor: return _ew.Erf.apply(_t(x))
def sign(x) -> Tensor:
    x = _t(x)
    if x.dtype == np.bool_:  # NumPy has no bool sign loop
        raise TypeError(f"sign: expected a numeric tensor, got dtype bool (shape {x.shape})")
    return _ew.Sign.apply(x)
def relu(x) -> Tensor: return _act.ReLU.apply(_t(x))


def sigmoid(x) -> Tensor:
    x = _t(x)
    if x.dtype.kind in "biu":  # the float dtype gg.exp gives (NumPy's loops), on either path
        x = astype(x, np.exp.resolve_dtypes((x.dtype, None))[1])
    return _act.Sigmoid.apply(x)


def _scalar(op: str, name: str, value):
    """A bound or slope as a Python number: a NumPy scalar (np.float64(1.0)) would promote a
    float32 tensor and its gradient to float64."""
    if value is None or value.__class__ in _SCALARS:
        return value
    if isinstance(value, np.generic) or (isinstance(value, np.ndarray) and value.ndim == 0):
        return value.item()
    hint = " (for tensor bounds use gg.maximum / gg.minimum)" if op == "clip" else ""
    raise TypeError(f"{op}: {name} must be a Python or NumPy scalar, got "
                    f"{type(value).__name__}{hint}")


def leaky_relu(x, negative_slope: float = 0.01) -> Tensor:
    negative_slope = _scalar("leaky_relu", "negative_slope", negative_slope)
    return _act.LeakyReLU.apply(_t(x), negative_slope=negative_slope)


def gelu(x, approximate: str = "none") -> Tensor:
    if approximate not in ("none", "tanh"):
        raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
    return _act.GELU.apply(_t(x), approximate=approximate)


def clip(x, min=None, max=None) -> Tensor:  # noqa: A002 - numpy/torch spelling
    if min is None and max is None:
        raise ValueError("clip: at least one of min and max must be given")
    return _ew.Clip.apply(_t(x), lo=_scalar("clip", "min", min), hi=_scalar("clip", "max", max))


def where(cond, a, b) -> Tensor:
    like = next((t for t in (cond, a, b) if t.__class__ is Tensor), None)
    cond = _t(cond, like)
    if cond.dtype != np.bool_:
        raise TypeError(f"where: condition must be a bool tensor, got dtype {cond.dtype}")
    return _ew.Where.apply(cond, _operand(a, like), _operand(b, like))


# -- comparisons and logic: bool results, never differentiable ------------------------------
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
        a = _t(a, b if b.__class__ is Tensor else None)
        b = _operand(b, a)
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
            _ew._check_broadcast(name, a.data, b)
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
        x = _t(x)
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


# -- reductions -----------------------------------------------------------------------------
def sum(x, axis=None, keepdims: bool = False) -> Tensor:  # noqa: A001
    return _red.Sum.apply(_t(x), axis=axis, keepdims=keepdims)


def mean(x, axis=None, keepdims: bool = False) -> Tensor:
    return _red.Mean.apply(_t(x), axis=axis, keepdims=keepdims)


def max(x, axis=None, keepdims: bool = False) -> Tensor:  # noqa: A001
    return _red.Max.apply(_t(x), axis=axis, keepdims=keepdims)


def min(x, axis=None, keepdims: bool = False) -> Tensor:  # noqa: A001
    return _red.Min.apply(_t(x), axis=axis, keepdims=keepdims)


def logsumexp(x, axis=None, keepdims: bool = False) -> Tensor:
    return _red.LogSumExp.apply(_float(x, "logsumexp"), axis=axis, keepdims=keepdims)


def softmax(x, axis: int = -1) -> Tensor:
    return _red.Softmax.apply(_float(x, "softmax"), axis=axis)


def log_softmax(x, axis: int = -1) -> Tensor:
    return _red.LogSoftmax.apply(_float(x, "log_softmax"), axis=axis)


def _arg_axis(op: str, x: Tensor, axis):
    """argmax / argmin's axis validated (an int or None) and its length checked (no empty)."""
    if axis is not None and (not isinstance(axis, (int, np.integer)) or isinstance(axis, bool)):
        raise TypeError(f"{op}: axis must be an int or None, got {axis!r}")
    try:
        axes = _red.normalize_axis(op, axis, x.ndim)
    except ValueError as e:
        raise ValueError(f"{e} (shape {x.shape})") from None
    _red.check_nonempty(op, x.shape, axes)
    return None if axes is None else axes[0]


def argmax(x, axis=None, keepdims: bool = False) -> Tensor:
    x = _t(x)
    axis = _arg_axis("argmax", x, axis)
    if x.device.type == "cpu":
        return Tensor._wrap(np.asarray(x.data.argmax(axis=axis, keepdims=keepdims)), x.device)
    with x.device.activate():  # not an op: make the GPU current here
        return Tensor._wrap(x.data.argmax(axis=axis, keepdims=keepdims), x.device)


def argmin(x, axis=None, keepdims: bool = False) -> Tensor:
    x = _t(x)
    axis = _arg_axis("argmin", x, axis)
    if x.device.type == "cpu":
        return Tensor._wrap(np.asarray(x.data.argmin(axis=axis, keepdims=keepdims)), x.device)
    with x.device.activate():
        return Tensor._wrap(x.data.argmin(axis=axis, keepdims=keepdims), x.device)


def _float(x, op: str) -> Tensor:
    x = _t(x)
    if x.dtype.kind not in "fc":
        raise TypeError(f"{op}: expected a floating-point tensor, got dtype {x.dtype}")
    return x


# -- shape and indexing ---------------------------------------------------------------------
def reshape(x, *shape) -> Tensor:
    return _sh.Reshape.apply(_t(x), shape=shape)


def transpose(x, *axes) -> Tensor:
    """Permute dims (NumPy semantics); no axes reverses them. See also ``swapaxes``."""
    if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
        axes = tuple(axes[0])
    return _sh.Transpose.apply(_t(x), axes=axes or None)


permute = transpose


def swapaxes(x, axis1: int, axis2: int) -> Tensor:
    x = _t(x)
    axes = list(range(x.ndim))
    a, b = (_red.normalize_axis("swapaxes", ax, x.ndim)[0] for ax in (axis1, axis2))
    axes[a], axes[b] = axes[b], axes[a]
    return _sh.Transpose.apply(x, axes=tuple(axes))


def squeeze(x, axis=None) -> Tensor:
    x = _t(x)
    axes = _red.normalize_axis("squeeze", axis, x.ndim)
    if axes is None:
        axes = tuple(i for i, n in enumerate(x.shape) if n == 1)
    for a in axes:
        if x.shape[a] != 1:
            raise ValueError(f"squeeze: axis {a} of shape {x.shape} has size {x.shape[a]}, not 1")
    return reshape(x, tuple(n for i, n in enumerate(x.shape) if i not in axes))


def unsqueeze(x, axis) -> Tensor:
    """Insert a 1 at ``axis`` (an int, or a tuple of them like NumPy's ``expand_dims``), counted
    in the result's dims."""
    x = _t(x)
    n = 1 if isinstance(axis, (int, np.integer)) else len(axis) \
        if isinstance(axis, (tuple, list)) else 1  # (a bad type is reported by normalize_axis)
    axes = _red.normalize_axis("unsqueeze", axis, x.ndim + n)
    dims = iter(x.shape)
    return reshape(x, tuple(1 if i in axes else next(dims) for i in range(x.ndim + n)))


expand_dims = unsqueeze


def broadcast_to(x, shape) -> Tensor:
    return _sh.BroadcastTo.apply(_t(x), shape=tuple(shape))


def _tensors(op: str, xs) -> list[Tensor]:
    xs = list(xs)
    if not xs:
        raise ValueError(f"{op}: expected a non-empty sequence of tensors")
    like = next((t for t in xs if t.__class__ is Tensor), None)
    return [_t(t, like) for t in xs]


def concatenate(tensors, axis: int = 0) -> Tensor:
    return _sh.Concatenate.apply(*_tensors("concatenate", tensors), axis=axis)


concat = cat = concatenate


def stack(tensors, axis: int = 0) -> Tensor:
    return _sh.Stack.apply(*_tensors("stack", tensors), axis=axis)


def _index_part(part, x: Tensor, op: str = "getitem"):
    if part.__class__ is Tensor:
        if part.device is not x.device:
            if part.device.type != "cpu":
                raise DeviceError(f"{op}: index is on {part.device} but the tensor is on "
                                  f"{x.device}")
            part = part.to(x.device)
        part = part.data
    elif isinstance(part, (list, np.ndarray)):
        host = np.asarray(part)
        if host.size == 0 and isinstance(part, list):
            host = host.astype(np.intp)  # [] means no indices (NumPy's rule), not a float array
        part = x.device.backend.asarray(host)
    else:
        if isinstance(part, float):
            raise IndexError(f"{op}: only integers, slices, None, Ellipsis and integer or bool "
                             f"arrays are valid indices, got {part!r} (tensor shape {x.shape})")
        return part
    if part.dtype.kind not in "iub":
        raise IndexError(f"{op}: index arrays must be integer or bool, got {part.dtype}")
    return part


def _bounds_error(op: str, dim: int, n: int, shape: tuple):
    def error(f) -> IndexError | None:
        lo, hi = int(f[0]), int(f[1])
        if lo >= -n and hi < n:
            return None
        return IndexError(f"{op}: index {hi if hi >= n else lo} is out of bounds for axis {dim} "
                          f"with size {n} (tensor shape {shape})")

    return error


def _check_bounds(index: tuple, shape: tuple, op: str = "getitem", xp=np) -> None:
    """CuPy does not bounds-check integer-array indices (it wraps); check them like NumPy does
    (deferred to the next host read: ``backend.checks``)."""
    consumed = [0 if p is None else (p.ndim if hasattr(p, "dtype") and p.dtype == np.bool_
                                     else 1) for p in index if p is not Ellipsis]
    dim = 0
    for p in index:
        if p is Ellipsis:
            dim += len(shape) - builtins.sum(consumed)  # this module's sum is gg.sum
            continue
        if hasattr(p, "dtype") and p.dtype.kind in "iu" and p.size and dim < len(shape):
            n = shape[dim]
            # deferred: read at the next host read (no sync per index array), then IndexError
            flags = xp.stack([p.min(), p.max()]).astype(np.int64)
            checks.require(flags, _bounds_error(op, dim, n, shape))
        dim += 0 if p is None else (p.ndim if hasattr(p, "dtype") and p.dtype == np.bool_
                                    else 1)


def _is_index_array(p, kind: str) -> bool:
    return hasattr(p, "dtype") and not isinstance(p, np.generic) and p.ndim > 0 \
        and p.dtype.kind in kind


def _masks_to_indices(parts: tuple) -> tuple:
    """A boolean array among other index arrays means its ``nonzero()`` integer arrays (NumPy's
    rule). CuPy supports a boolean array only on its own, so spell it out for every device."""
    out = []
    for p in parts:
        if _is_index_array(p, "b"):
            out.extend(p.nonzero())
        else:
            out.append(p)
    return tuple(out)


def _prepare_index(x: Tensor, index, op: str):
    """``index`` for ``x.data[...]``: arrays on x's device, masks among other index arrays spelled
    out, and integer arrays bounds-checked on CUDA (CuPy wraps out-of-range values silently)."""
    parts = tuple(_index_part(p, x, op) for p in (index if isinstance(index, tuple) else (index,)))
    if len(parts) > 1 and any(_is_index_array(p, "b") for p in parts) and \
            len([p for p in parts if _is_index_array(p, "biu")]) > 1:  # (sum is gg.sum here)
        with x.device.activate():  # nonzero() runs on the index arrays' (x's) device
            parts = _masks_to_indices(parts)
    if x.device.type != "cpu" and any(hasattr(p, "dtype") for p in parts):
        with x.device.activate():
            _check_bounds(parts, x.shape, op, x.device.xp)
    return parts if isinstance(index, tuple) else parts[0]


def getitem(x, index) -> Tensor:
    x = _t(x)
    return _sh.GetItem.apply(x, index=_prepare_index(x, index, "getitem"))


def index_put(x: Tensor, value, index) -> Tensor:
    """``x`` with ``x[index] = value`` applied to a copy (``index`` prepared by _prepare_index)."""
    return _sh.IndexPut.apply(x, value, index=index)


def unindex(g, index, shape, accumulate: bool) -> Tensor:
    return _sh.UnIndex.apply(g, index=index, shape=shape, accumulate=accumulate)


def clone(x) -> Tensor:
    """A differentiable copy that owns its memory (``torch.clone``)."""
    return _sh.Clone.apply(_t(x))


def astype(x, dtype) -> Tensor:
    x = _t(x)
    dtype = np.dtype(dtype)
    if dtype == x.dtype:
        return x
    if dtype.kind not in "fc":  # integer/bool results carry no gradient (like comparisons)
        if x.device.type == "cpu":
            return Tensor._wrap(x.data.astype(dtype), x.device)
        with x.device.activate():  # not an op: make the GPU current here
            return Tensor._wrap(x.data.astype(dtype), x.device)
    return _sh.AsType.apply(x, dtype=dtype)


def to_device(x, device) -> Tensor:
    return _sh.ToDevice.apply(_t(x), target=device)


# -- linear algebra -------------------------------------------------------------------------
def matmul(a, b) -> Tensor:
    a = _t(a, b if b.__class__ is Tensor else None)
    return _la.MatMul.apply(a, _t(b, a))


def linear(x, weight, bias=None) -> Tensor:
    x = _t(x, weight)
    if bias is None:
        return _la.Linear.apply(x, weight)
    return _la.Linear.apply(x, weight, bias)


# -- helpers rules call in graph mode (mirrors backend.array_ops.ArrayOps) ------------------
sum_to = _ew.sum_to


def sigmoid_grad(y, g) -> Tensor:
    return g * y * (1 - y)


TENSOR_METHODS = (
    "exp", "log", "sqrt", "abs", "sin", "cos", "tanh", "erf", "sign", "sigmoid", "relu",
    "leaky_relu", "gelu", "clip", "sum", "mean", "max", "min", "logsumexp", "softmax",
    "log_softmax", "argmax", "argmin", "reshape", "transpose", "permute", "swapaxes", "squeeze",
    "unsqueeze", "expand_dims", "broadcast_to", "astype", "matmul", "maximum", "minimum",
    "isfinite",
)


# -- more ops; their modules use the helpers above, so they are imported last -----------------
from .math_extra import (  # noqa: E402
    elu,
    expm1,
    log1p,
    logaddexp,
    reciprocal,
    silu,
    softplus,
    square,
)
from .reductions_extra import cumsum, norm, prod, std, var  # noqa: E402
from .shape_extra import (  # noqa: E402
    chunk,
    flatten,
    flip,
    gather,
    pad,
    repeat,
    split,
    take_along_axis,
    tile,
)

repeat_interleave = repeat  # torch's name for NumPy's repeat (torch's Tensor.repeat is tile)

TENSOR_METHODS += ("silu", "elu", "softplus", "log1p", "expm1", "square", "reciprocal",
                   "logaddexp", "var", "std", "prod", "norm", "cumsum", "flatten", "split",
                   "chunk", "flip", "tile", "repeat_interleave", "gather", "clone")
