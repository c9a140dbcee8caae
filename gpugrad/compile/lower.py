"""Lowering: replay lines that write into program-owned buffers (``out=``) instead of calling a
Function's ``forward`` / ``backward``, which allocate a fresh array per call.

Each entry of ``FORWARD`` / ``BACKWARD`` mirrors one Function's eager code for the NumPy
backend -- the same array calls on the same operands in the same order, so a replay stays bit
for bit the eager result -- but only for the traced case it was written for. Every eager branch
(dtype promotion, float16 accumulation, broadcasting, a Python-scalar operand, an input that
needs no gradient) either has its own line here or makes the entry return ``None``: that step
then replays as the generic call. Entries are plain functions of the traced values, read
top to bottom like a table:

    Linear.forward   matmul(x, w.T, out=o0); add(o0, b, out=o0)        # y = x @ w.T; y += b

Templates use ``{a0}``, ``{a1}``... for the step's operands (the replay's expressions),
``{o0}``, ``{o1}``... for its outputs and ``{t0}``... for scratch buffers; the program binds each
``o``/``t`` to a buffer from its pool (``program.Program.finish``). Lowering applies on the CPU
only (see the README: CUDA replays keep the generic calls, captured into graphs).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..ops import activations, elementwise, linalg, reductions
from ..ops.cross_entropy import CrossEntropy

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))
_SAME_SIZE_INT = {4: "int32", 8: "int64"}  # as numpy_backend.mask_select's bit trick

# the array calls lowered lines make, by the name they have in the generated function
UFUNCS: dict[str, Any] = {
    "matmul": np.matmul, "add": np.add, "subtract": np.subtract, "multiply": np.multiply,
    "true_divide": np.true_divide, "negative": np.negative, "maximum": np.maximum,
    "greater": np.greater,
    "exp": np.exp, "log": np.log, "sqrt": np.sqrt, "absolute": np.absolute, "sin": np.sin,
    "cos": np.cos, "tanh": np.tanh, "log1p": np.log1p, "expm1": np.expm1,
    "int32": np.int32, "int64": np.int64,
    # what ndarray.sum and .view call, by name (the same C functions, less a Python wrapper)
    "add_reduce": np.add.reduce, "view": np.ndarray.view,
    "max_reduce": np.maximum.reduce, "take": np.ndarray.take, "put": np.ndarray.put,
    "empty_like": np.empty_like, "float64": np.float64, "uint64": np.uint64,
    "labels_max": np.maximum.reduce,  # the label check's, by a name of its own: a value it uses
}


@dataclass
class Lowered:
    """Statements replacing one step; ``scratch``: (shape, dtype) of each ``{tK}`` buffer."""

    lines: list[str]
    scratch: list[tuple[tuple, Any]] = field(default_factory=list)
    operands: list[str] = field(default_factory=list)  # the {aK} expressions, set when recorded
    # {name}: objects the lines refer to (bound in the program's namespace); {generic} in a
    # line is the step's generic call, for a branch the traced case does not cover
    consts: dict[str, Any] = field(default_factory=dict)


def _floats(*values: Any) -> bool:
    """Every value an ndarray (not a NumPy scalar) of one float32 or float64 dtype."""
    dt = values[0].dtype if values[0].__class__ is np.ndarray else None
    return dt in _FLOATS and all(v.__class__ is np.ndarray and v.dtype == dt for v in values)


def _same(*values: Any) -> bool:
    """``_floats`` and one shape: no broadcasting, so nothing is summed back or promoted."""
    return _floats(*values) and all(v.shape == values[0].shape for v in values)


# -- forward: (fn, traced operands, traced result) -> Lowered | None -------------------------------
def _linear_fwd(fn: Any, xs: list, y: Any) -> Lowered | None:
    x, w = xs[0], xs[1]
    b = xs[2] if len(xs) > 2 else None
    if not _floats(x, w, y) or (b is not None and not _floats(b, y)):
        return None  # a float64 bias on a float32 product promotes: y = y + b (generic)
    lines = ["matmul({a0}, {a1}.T, out={o0})"]  # y = x @ w.T
    if b is not None:
        lines.append("add({o0}, {a2}, out={o0})")  # y += b
    return Lowered(lines)


def _relu_fwd(fn: Any, xs: list, y: Any) -> Lowered | None:
    return Lowered(["maximum({a0}, 0, out={o0})"]) if _same(xs[0], y) else None


def _ufunc1(name: str) -> Callable[[Any, list, Any], Lowered | None]:
    """``xp.<name>(x)`` (or an operator that is that ufunc): same dtype in and out."""
    def emit(fn: Any, xs: list, y: Any) -> Lowered | None:
        return Lowered([f"{name}({{a0}}, out={{o0}})"]) if _same(xs[0], y) else None
    return emit


def _square_fwd(fn: Any, xs: list, y: Any) -> Lowered | None:
    return Lowered(["multiply({a0}, {a0}, out={o0})"]) if _same(xs[0], y) else None  # x * x


def _binary(name: str) -> Callable[[Any, list, Any], Lowered | None]:
    """``operator.<op>(a, b)``: arrays of the result's shape and dtype, or Python numbers (weak
    scalars: NumPy picks the array's loop either way). Broadcasting stays generic."""
    def emit(fn: Any, xs: list, y: Any) -> Lowered | None:
        arrays = [v for v in xs if v.__class__ not in (int, float)]
        if not arrays or not _same(y, *arrays) or any(v.__class__ is bool for v in xs):
            return None
        return Lowered([f"{name}({{a0}}, {{a1}}, out={{o0}})"])
    return emit


def _sum_fwd(fn: Any, xs: list, y: Any) -> Lowered | None:
    x = xs[0]
    if not _floats(x) or y.__class__ is not np.ndarray or y.dtype != x.dtype:
        return None  # float16: summed in float32 and cast (acc_sum), generic
    # x.sum(axis, keepdims=k) is add.reduce(x, axis, None, None, k)
    return Lowered([f"add_reduce({{a0}}, {fn.axes!r}, None, {{o0}}, {fn.keepdims!r})"])


def _matmul_fwd(fn: Any, xs: list, y: Any) -> Lowered | None:
    a, b = xs
    if not (_floats(a, b, y) and a.ndim == 2 and b.ndim == 2):
        return None
    return Lowered(["matmul({a0}, {a1}, out={o0})"])


def _cross_entropy_fwd(fn: Any, xs: list, y: Any) -> Lowered | None:
    """``fused_reference.softmax_cross_entropy`` with its gradient, when every label is a class
    (``_ce_every_row``): the same calls in the same order into scratch buffers, the gradient in
    a new array per call, left on ``fn`` for its backward as eager leaves it. Whether every label
    is a class is checked per call as eager checks it; a batch where one is not (an ignored
    row, or an out-of-range label, which raises eager's error) takes the generic call."""
    x, labels = xs
    if not (_floats(x, y) and x.ndim == 2 and x.shape[0] and x.shape[1] and x.flags.c_contiguous
            and labels.__class__ is np.ndarray and labels.dtype == np.int64
            and labels.shape == x.shape[:1] and fn.dlogits is not None
            and fn.dlogits.__class__ is np.ndarray and fn.dlogits.dtype == x.dtype
            and not 0 <= fn.ignore_index < x.shape[1] and fn.reduction in ("mean", "sum", "none")):
        return None
    n, c = x.shape
    cd = x.dtype
    # scratch: {t0} flat positions of the labels, {t1} row maxima, {t2} x at the labels, {t3}
    # row sums of exp, {t4} the per-row losses (the output itself for reduction="none"), {t5}
    # their float64 total
    scratch = [((n,), np.int64), ((n, 1), cd), ((n,), cd), ((n,), cd)]
    loss = "{o0}"
    if fn.reduction != "none":
        scratch += [((n,), cd), ((), np.float64)]
        loss = "{t4}"
    lines = [
        # labels_in_range: a negative label, read as unsigned, is above any class count
        f"if labels_max(view({{a1}}, uint64)) >= {c}:",
        "    {o0} = {generic}",
        "else:",
        "    {fn}.labels = {a1}",
        "    add({first_of_row}, {a1}, out={t0})",  # flat positions of the labels
        "    max_reduce({a0}, 1, None, {t1}, True)",
        "    {fn}.dlogits = d = empty_like({a0})",
        "    subtract({a0}, {t1}, out=d)",  # x - max
        "    take(d, {t0}, None, {t2})",  # x_label - max
        "    exp(d, out=d)",
        "    add_reduce(d, 1, None, {t3})",  # sums
        f"    log({{t3}}, out={loss})",
        f"    subtract({loss}, {{t2}}, out={loss})",
    ]
    if fn.reduction != "none":  # summed in float64 ({t5}), divided there, then rounded
        lines.append(f"    add_reduce({loss}, 0, float64, {{t5}})")
        lines.append(f"    {{o0}}[()] = {{t5}} / {n}" if fn.reduction == "mean"
                     else "    {o0}[()] = {t5}")
    lines += [
        "    true_divide(d, {t3}[:, None], out=d)",  # softmax
        "    take(d, {t0}, None, {t2})",  # flat[at_label] -= 1
        "    subtract({t2}, 1, out={t2})",
        "    put(d, {t0}, {t2})",
    ]
    if fn.reduction == "mean":
        lines.append("    multiply(d, {inv_n}, out=d)")
    lines.append("    del d")
    return Lowered(lines, scratch, consts={
        "fn": fn, "first_of_row": np.arange(0, n * c, c), "inv_n": cd.type(1) / cd.type(n)})


FORWARD: dict[type, Callable[[Any, list, Any], Lowered | None]] = {
    CrossEntropy: _cross_entropy_fwd,
    linalg.Linear: _linear_fwd,
    linalg.MatMul: _matmul_fwd,
    activations.ReLU: _relu_fwd,
    elementwise.Add: _binary("add"),
    elementwise.Sub: _binary("subtract"),
    elementwise.Mul: _binary("multiply"),
    elementwise.Div: _binary("true_divide"),
    elementwise.Neg: _ufunc1("negative"),
    elementwise.Exp: _ufunc1("exp"),
    elementwise.Log: _ufunc1("log"),
    elementwise.Sqrt: _ufunc1("sqrt"),
    elementwise.Abs: _ufunc1("absolute"),
    elementwise.Sin: _ufunc1("sin"),
    elementwise.Cos: _ufunc1("cos"),
    elementwise.Tanh: _ufunc1("tanh"),
    elementwise.Log1p: _ufunc1("log1p"),
    elementwise.Expm1: _ufunc1("expm1"),
    elementwise.Square: _square_fwd,
    reductions.Sum: _sum_fwd,
}


# -- backward: (fn, g, saved, traced input grads) -> Lowered | None --------------------------------
# Operands: {a0} is g, then the saved values in order; {oK} is the gradient of input K (only
# those the walk keeps: an input that needs no gradient has no output and no line).
def _linear_bwd(fn: Any, g: Any, saved: list, grads: list) -> Lowered | None:
    x, w = saved
    gx, gw = grads[0], grads[1]
    gb = grads[2] if len(grads) > 2 else None
    if not _floats(g, x, w) or not all(_floats(v, g) for v in (gx, gw, gb) if v is not None):
        return None  # mixed dtypes: cast_to casts (generic)
    if gb is not None and fn.b_dtype != g.dtype:
        return None
    lines = []
    if gx is not None:
        lines.append("matmul({a0}, {a2}, out={o0})")  # gx = g @ w
    if gw is not None or gb is not None:
        rows = math.prod(x.shape[:-1])
        two_d = x.ndim == 2 and g.ndim == 2  # g.reshape((rows, n)) is g's own layout
        g2 = "{a0}" if two_d else f"{{a0}}.reshape({(rows, g.shape[-1])!r})"
        x2 = "{a1}" if two_d else f"{{a1}}.reshape({(rows, x.shape[-1])!r})"
        if gw is not None:
            lines.append(f"matmul({g2}.T, {x2}, out={{o1}})")  # gw = g2.T @ x2
        if gb is not None:
            lines.append(f"add_reduce({g2}, 0, None, {{o2}})")  # gb = g2.sum(axis=0)
    return Lowered(lines)


def _relu_bwd(fn: Any, g: Any, saved: list, grads: list) -> Lowered | None:
    """``mask_select(y > 0, g)`` on the NumPy backend: g's bits, read as integers, multiplied by
    ``y > 0`` as 1 or 0 (g's own bits, or exactly 0 where y <= 0 even where g is inf or NaN).
    Eager code multiplies by the boolean mask ``y > 0``; here the comparison writes the
    integers directly into the output (the same products, without the mask array)."""
    y = saved[0]
    if grads[0] is None or not _same(g, y, grads[0]) or y.ndim == 0:
        return None
    as_int = _SAME_SIZE_INT[g.dtype.itemsize]
    return Lowered([
        f"{{o0}}_bits = view({{o0}}, {as_int})",
        "greater({a1}, 0, out={o0}_bits)",  # y > 0 as 1 or 0
        f"multiply(view({{a0}}, {as_int}), {{o0}}_bits, out={{o0}}_bits)",
        "del {o0}_bits",
    ])


def _matmul_bwd(fn: Any, g: Any, saved: list, grads: list) -> Lowered | None:
    a, b = saved
    if not (_floats(g, a, b) and a.ndim == 2 and b.ndim == 2):
        return None
    lines = []
    if grads[0] is not None:
        lines.append("matmul({a0}, {a2}.T, out={o0})")  # ga = g @ b.swapaxes(-1, -2)
    if grads[1] is not None:
        lines.append("matmul({a1}.T, {a0}, out={o1})")  # gb = a.swapaxes(-1, -2) @ g
    return Lowered(lines)


def _mul_bwd(fn: Any, g: Any, saved: list, grads: list) -> Lowered | None:
    a, b = saved
    if not _same(g, a, b):
        return None  # a scalar or broadcast operand: reduce_to sums (generic)
    lines = []
    if grads[0] is not None:
        lines.append("multiply({a0}, {a2}, out={o0})")  # g * b
    if grads[1] is not None:
        lines.append("multiply({a0}, {a1}, out={o1})")  # g * a
    return Lowered(lines)


def _div_bwd(fn: Any, g: Any, saved: list, grads: list) -> Lowered | None:
    a, b = saved
    if not _same(g, a, b):
        return None
    ga = "{o0}" if grads[0] is not None else "{t0}"  # ga = g / b is computed either way
    lines = [f"true_divide({{a0}}, {{a2}}, out={ga})"]
    if grads[1] is not None:  # -ga * a / b, left to right
        lines += [f"negative({ga}, out={{o1}})", "multiply({o1}, {a1}, out={o1})",
                  "true_divide({o1}, {a2}, out={o1})"]
    return Lowered(lines, scratch=[] if grads[0] is not None else [(g.shape, g.dtype)])


def _unary_bwd(*lines: str) -> Callable[[Any, Any, list, list], Lowered | None]:
    """A one-input rule on same-shape arrays: ``{a1}`` is the saved x or y."""
    def emit(fn: Any, g: Any, saved: list, grads: list) -> Lowered | None:
        if grads[0] is None or not _same(g, *saved, grads[0]):
            return None
        return Lowered(list(lines))
    return emit


BACKWARD: dict[type, Callable[[Any, Any, list, list], Lowered | None]] = {
    linalg.Linear: _linear_bwd,
    linalg.MatMul: _matmul_bwd,
    activations.ReLU: _relu_bwd,
    elementwise.Mul: _mul_bwd,
    elementwise.Div: _div_bwd,
    elementwise.Neg: _unary_bwd("negative({a0}, out={o0})"),  # -g
    elementwise.Exp: _unary_bwd("multiply({a0}, {a1}, out={o0})"),  # g * y
    elementwise.Log: _unary_bwd("true_divide({a0}, {a1}, out={o0})"),  # g / x
    elementwise.Sqrt: _unary_bwd("multiply({a0}, 0.5, out={o0})",  # g * 0.5 / y
                                 "true_divide({o0}, {a1}, out={o0})"),
    elementwise.Tanh: _unary_bwd("multiply({a1}, {a1}, out={o0})",  # g * (1 - y * y)
                                 "subtract(1, {o0}, out={o0})",
                                 "multiply({a0}, {o0}, out={o0})"),
}


def lowering_enabled() -> bool:
    """Traces lower steps into buffers unless ``GPUGRAD_COMPILE_BUFFERS=0`` (read per trace)."""
    return os.environ.get("GPUGRAD_COMPILE_BUFFERS", "1").strip() != "0"


def _applies(fn: Any) -> bool:
    return fn.device is not None and fn.device.type == "cpu" and lowering_enabled()


def _c_layout(*results: Any) -> bool:
    """Eager's results are C-contiguous, as the buffers are. A ufunc gives its result its
    operands' layout (``x.T`` in, a Fortran-ordered result out), and a later reduction sums in
    memory order: a C-ordered buffer in its place would change the sum's rounding."""
    return all(r is None or r.__class__ is not np.ndarray or r.flags.c_contiguous
               for r in results)


def lower_forward(fn: Any, values: list, result: Any) -> Lowered | None:
    """The lowered lines of ``fn``'s forward in the traced case, or None (generic call)."""
    emit = FORWARD.get(type(fn))
    if emit is None or fn.replay_params or not _applies(fn) or not _c_layout(result):
        return None
    return emit(fn, values, result)


def lower_backward(fn: Any, g: Any, saved: tuple, grads: list) -> Lowered | None:
    """The lowered lines of ``fn``'s backward; ``grads`` holds None for outputs not kept."""
    emit = BACKWARD.get(type(fn))
    if emit is None or not _applies(fn) or not _c_layout(*grads):
        return None
    return emit(fn, g, list(saved), grads)
