"""The reference implementation of the fused ops, written once against the array module (NumPy or
CuPy, picked from the arrays): the math of ``kernels/*.cu``, same formulas, same numerics (stable
``exp(-|x|)`` sigmoid, max-shifted softmax, ``log1p`` BCE, float64 accumulation of reductions,
float32 math for float16/bfloat16 inputs), in few passes.

It is the CPU path, and what a GPU runs when the kernels are switched off (``GPUGRAD_FUSED=0``,
see ``backend.config``): so there is one implementation per fused op per device, this one and the
CUDA kernel (``fused_cuda``, same signatures). Work buffers are reused in place (``out=``) so the
big inputs are walked as few times as the array module allows; the inputs are never modified.
The optimizer steps run ``optim_updates`` (which also has the options the kernels lack).
"""

from __future__ import annotations

import numpy as np

from . import fp_errors
from .errors import check_labels, labels_in_range
from .numerics import array_module, compute_dtype
from .optim_updates import adam_bias_terms as _adam_bias_terms  # noqa: F401 (fused_cuda's)
from .optim_updates import adam_update, sgd_update

_REDUCTIONS = ("mean", "sum", "none")


def _float_dtype(a: np.ndarray, op: str, what: str) -> np.dtype:
    dt = a.dtype
    if dt.kind != "f" and dt.name != "bfloat16":
        raise TypeError(f"{op}: {what} must be a floating-point array, got dtype {dt}")
    return dt


def _check_reduction(op: str, reduction: str) -> None:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"{op}: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def _scalar(xp, value, dt: np.dtype):
    """``value`` (a Python float or a 0-d float64 array) as a 0-d array of dtype ``dt``."""
    return xp.asarray(value, dtype=np.float64).astype(dt)


# ---------------------------------------------------------------------------------------------
# sigmoid


def _sigmoid(xc: np.ndarray) -> np.ndarray:
    """``1/(1+exp(-x))``: exp(-x) may overflow to inf, giving exactly 0 like the kernels.

    Within a couple of ulp of the kernels' ``exp(-|x|)`` form everywhere (both round one exp,
    one add, one divide), but with no masked ufunc: NumPy's ``where=``/``copyto`` paths are not
    vectorised and cost ~10x a plain pass.
    """
    xp = array_module(xc)
    y = xp.negative(xc, out=xp.empty_like(xc))  # out= keeps 0-d inputs arrays
    with np.errstate(over="ignore"):
        xp.exp(y, out=y)
    xp.add(y, 1, out=y)
    return xp.reciprocal(y, out=y)


def sigmoid_forward(x: np.ndarray) -> np.ndarray:
    """``sigmoid(x)``, never overflowing; float16/bfloat16 computed in float32."""
    dt = _float_dtype(x, "sigmoid", "input")
    return _sigmoid(array_module(x).asarray(x, dtype=compute_dtype(dt))).astype(dt, copy=False)


def sigmoid_backward(y: np.ndarray, gy: np.ndarray) -> np.ndarray:
    """``gx = ((1 - y) * y) * gy`` from the saved output."""
    dt = _float_dtype(y, "sigmoid_backward", "y")
    if gy.shape != y.shape:
        raise ValueError(f"sigmoid_backward: gy shape {gy.shape} != y shape {y.shape}")
    cd = compute_dtype(dt)
    xp = array_module(y)
    yc = xp.asarray(y, dtype=cd)
    gx = xp.subtract(1, yc, out=xp.empty_like(yc))
    xp.multiply(gx, yc, out=gx)
    xp.multiply(gx, xp.asarray(gy, dtype=cd), out=gx)
    return gx.astype(dt, copy=False)


# ---------------------------------------------------------------------------------------------
# softmax cross-entropy


# The _check_* helpers only read .shape/.dtype/.ndim, so fused_cuda shares them (same messages).


def _check_ce_args(logits, labels, reduction: str) -> None:
    op = "cross_entropy"
    _check_reduction(op, reduction)
    if logits.ndim != 2:
        raise ValueError(f"{op}: logits must be 2-D (N, C), got shape {logits.shape}")
    _float_dtype(logits, op, "logits")
    if labels.dtype.kind not in "iu":
        raise TypeError(f"{op}: labels must be an integer array, got dtype {labels.dtype}")
    if labels.shape != (logits.shape[0],):
        raise ValueError(
            f"{op}: labels shape {labels.shape} does not match logits shape {logits.shape} "
            f"(expected ({logits.shape[0]},))"
        )


def _check_ce_gy(gy, reduction: str, logits_shape: tuple) -> tuple:
    """The shape gy is used with: (N,) for "none", () for mean/sum (any size-1 gy is accepted)."""
    expect = (logits_shape[0],) if reduction == "none" else ()
    if gy.shape != expect and not (reduction != "none" and gy.size == 1):
        raise ValueError(
            f"cross_entropy backward: gy shape {gy.shape} does not match reduction "
            f"{reduction!r} (expected {expect}) for logits {logits_shape}"
        )
    return expect


def _ce_inputs(logits, labels, reduction: str):
    _check_ce_args(logits, labels, reduction)
    dt = logits.dtype
    xp = array_module(logits)
    xc = xp.asarray(logits, dtype=compute_dtype(dt))
    if not xc.flags.c_contiguous:  # transposed logits: rows in C order, which the flat label
        xc = xp.ascontiguousarray(xc)  # positions of _ce_every_row and the row sums assume
    return dt, xc, labels.astype(np.int64, copy=False)


def _ce_grad(e: np.ndarray, labels: np.ndarray, valid: np.ndarray, scale: np.ndarray) -> None:
    """In place over ``e = exp(x - max)``: ``(softmax - onehot) * scale`` per row, as the kernels
    (subtracting the one before scaling keeps ``p - 1`` exact for confident rows)."""
    xp = array_module(e)
    xp.divide(e, e.sum(axis=1, keepdims=True), out=e)
    rows = xp.flatnonzero(valid)
    e[rows, labels[rows]] -= 1
    xp.multiply(e, scale[:, None], out=e)
    e[~valid] = 0


def _shift_by_max(xc: np.ndarray) -> np.ndarray:
    """``x - rowmax(x)`` in one new buffer (the copy the in-place passes then work on)."""
    xp = array_module(xc)
    if xc.shape[1] == 0:
        return xp.empty_like(xc)
    return xp.subtract(xc, xc.max(axis=1, keepdims=True))


def softmax_cross_entropy(
    logits: np.ndarray, labels: np.ndarray, ignore_index: int, reduction: str, with_grad: bool
) -> tuple[np.ndarray, np.ndarray | None]:
    """Loss (0-d for mean/sum, (N,) for none) and, with ``with_grad``, d(loss)/d(logits)."""
    dt, xc, labels = _ce_inputs(logits, labels, reduction)
    xp = array_module(xc)
    N, C = xc.shape
    if N and not 0 <= ignore_index < C and labels_in_range(labels, C):
        return _ce_every_row(dt, xc, labels, reduction, with_grad)
    check_labels(labels, C, ignore_index, "cross_entropy")
    cd = xc.dtype
    valid = labels != ignore_index
    count = int(valid.sum())
    safe = xp.where(valid, labels, 0)
    with np.errstate(all="ignore"):  # inf/NaN logits propagate like the kernels, silently
        x = _shift_by_max(xc)
        x_lab = x[xp.arange(N), safe] if C else xp.zeros(N, cd)  # x_label - max
        xp.exp(x, out=x)
        # with C == 0 every row is ignored (any other label failed the range check above)
        loss_rows = xp.log(x.sum(axis=1)) - x_lab if C else xp.zeros(N, cd)
        loss_rows[~valid] = 0
        if reduction == "none":
            loss = loss_rows
        else:
            total = loss_rows.sum(dtype=np.float64)
            loss = _scalar(xp, total / count if reduction == "mean" else total, cd)
            if reduction == "mean" and count == 0:
                loss = _scalar(xp, np.nan, cd)
        grad = None
        if with_grad:
            one = cd.type(1)  # the same float division the backward and the kernels do
            g = one / cd.type(count) if (reduction == "mean" and count) else one
            _ce_grad(x, safe, valid, xp.full(N, g, dtype=cd))
            grad = x.astype(dt, copy=False)
    return loss.astype(dt, copy=False), grad


def _ce_every_row(dt: np.dtype, xc: np.ndarray, labels: np.ndarray, reduction: str,
                  with_grad: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """``softmax_cross_entropy`` when every label is a class (none ignored, none out of range):
    the same operations in the same order as the general path, less its masks and row weights
    (all ones there), in a third of the array calls -- the cost of a small batch is the calls."""
    xp = array_module(xc)
    N, C = xc.shape
    cd = xc.dtype
    at_label = xp.arange(0, N * C, C) + labels  # flat positions: cheaper than x[rows, labels]
    # inf/NaN logits propagate like the kernels, silently (np.errstate's effect, cheaper)
    token = fp_errors.quiet()
    try:
        x = xp.subtract(xc, xc.max(axis=1, keepdims=True))
        flat = x.reshape(N * C)  # a view: x is a new contiguous array
        x_lab = flat[at_label]  # x_label - max
        xp.exp(x, out=x)
        sums = x.sum(axis=1, keepdims=True)
        loss = xp.log(sums.reshape(N))
        loss -= x_lab
        if reduction != "none":
            total = loss.sum(dtype=np.float64)
            loss = xp.asarray(total / N if reduction == "mean" else total, dtype=cd)
        grad = None
        if with_grad:
            x /= sums
            flat[at_label] -= 1
            if reduction == "mean":  # the general path's row scale; 1 (a no-op) otherwise
                x *= cd.type(1) / cd.type(N)
            grad = x.astype(dt, copy=False)
    finally:
        fp_errors.restore(token)
    return loss.astype(dt, copy=False), grad


def softmax_cross_entropy_backward(
    logits: np.ndarray, labels: np.ndarray, ignore_index: int, reduction: str, gy: np.ndarray
) -> np.ndarray:
    """d(loss)/d(logits) for upstream ``gy`` (0-d for mean/sum, (N,) for none), recomputing
    the softmax."""
    dt, xc, labels = _ce_inputs(logits, labels, reduction)
    xp = array_module(xc)
    N, C = xc.shape
    cd = xc.dtype
    gy = xp.asarray(gy, dtype=cd).reshape(_check_ce_gy(gy, reduction, xc.shape))
    valid = (labels != ignore_index) & (labels >= 0) & (labels < C)
    safe = xp.where(valid, labels, 0)
    if reduction == "none":
        scale = gy.copy()
    else:
        g = gy
        if reduction == "mean":
            count = int((labels != ignore_index).sum())
            g = g / cd.type(count) if count else g
        scale = xp.broadcast_to(g, (N,)).astype(cd)  # g is a 0-d array: a copy, per row
    with np.errstate(all="ignore"):
        x = _shift_by_max(xc)
        xp.exp(x, out=x)
        _ce_grad(x, safe, valid, scale)
    return x.astype(dt, copy=False)


# ---------------------------------------------------------------------------------------------
# binary cross-entropy with logits


_BCE = "binary_cross_entropy_with_logits"


def _check_bce_args(z, t, reduction: str, op: str) -> None:
    _check_reduction(op, reduction)
    _float_dtype(z, op, "logits")
    if t.shape != z.shape:
        raise ValueError(f"{op}: target shape {t.shape} does not match logits shape {z.shape}")
    if t.dtype.kind not in "fiub" and t.dtype.name != "bfloat16":
        raise TypeError(f"{op}: target must be numeric, got dtype {t.dtype}")


def _check_bce_gy(gy, reduction: str, z_shape: tuple) -> None:
    op = f"{_BCE} backward"
    if reduction == "none" and gy.shape != z_shape:
        raise ValueError(f"{op}: gy shape {gy.shape} != logits shape {z_shape}")
    if reduction != "none" and gy.size != 1:
        raise ValueError(f"{op}: reduction {reduction!r} needs a scalar gy, got shape {gy.shape}")


def _bce_inputs(z, t, reduction: str, op: str = _BCE):
    _check_bce_args(z, t, reduction, op)
    cd = compute_dtype(z.dtype)
    xp = array_module(z)
    return z.dtype, xp.asarray(z, dtype=cd), xp.asarray(t, dtype=cd)


def _bce_terms(zc: np.ndarray, tc: np.ndarray, want_loss: bool, want_sig: bool):
    """Per-element loss ``max(z,0) - z*t + log1p(e)`` and ``sigmoid(z)``, ``e = exp(-|z|)``."""
    xp = array_module(zc)
    e = xp.abs(zc, out=xp.empty_like(zc))  # out= everywhere keeps 0-d inputs arrays
    xp.negative(e, out=e)
    xp.exp(e, out=e)
    sig = _sigmoid(zc) if want_sig else None
    loss = None
    if want_loss:
        loss = xp.maximum(zc, 0, out=xp.empty_like(zc))
        loss -= zc * tc
        xp.log1p(e, out=e)
        loss += e
    return loss, sig


def bce_with_logits(
    z: np.ndarray, t: np.ndarray, reduction: str, with_grad: bool
) -> tuple[np.ndarray, np.ndarray | None]:
    dt, zc, tc = _bce_inputs(z, t, reduction)
    xp = array_module(zc)
    n = zc.size
    loss, sig = _bce_terms(zc, tc, True, with_grad)
    if reduction != "none":
        total = loss.sum(dtype=np.float64)
        with np.errstate(all="ignore"):
            loss = _scalar(xp, total / n if reduction == "mean" else total, zc.dtype)
    grad = None
    if with_grad:
        grad = xp.subtract(sig, tc, out=sig)
        if reduction == "mean" and n:
            grad *= zc.dtype.type(1.0 / n)
        grad = grad.astype(dt, copy=False)
    return loss.astype(dt, copy=False), grad


def bce_with_logits_backward(
    z: np.ndarray, t: np.ndarray, reduction: str, gy: np.ndarray
) -> np.ndarray:
    dt, zc, tc = _bce_inputs(z, t, reduction, f"{_BCE} backward")
    _check_bce_gy(gy, reduction, zc.shape)
    xp = array_module(zc)
    cd = zc.dtype
    g = xp.asarray(gy, dtype=cd)
    if reduction != "none":
        g = g.reshape(())
        if reduction == "mean" and zc.size:
            g = g * cd.type(1.0 / zc.size)
    _, sig = _bce_terms(zc, tc, False, True)
    xp.subtract(sig, tc, out=sig)
    xp.multiply(sig, g, out=sig)
    return sig.astype(dt, copy=False)


# ---------------------------------------------------------------------------------------------
# optimizers (in place, PyTorch formulas; see kernels/optimizers.cu and optim_updates)


def _check_group(op: str, params, grads, states: list) -> None:
    n = len(params)
    if len(grads) != n or any(len(s) != n for s in states):
        raise ValueError(
            f"{op}: got {n} params, {len(grads)} grads and state lists of lengths "
            f"{[len(s) for s in states]}; all must match"
        )
    # every step: plain comparisons, column by column; the messages only on a failure
    for column in (grads, *states):
        for p, a in zip(params, column):
            if a is None or a.shape != p.shape or a.dtype != p.dtype or p.dtype.kind != "f":
                break
        else:
            continue
        for i, p in enumerate(params):
            _check_param(op, i, p, grads, states)


def _check_param(op: str, i: int, p, grads, states: list) -> None:
    """Raise the error that parameter ``i`` of a group deserves, if any."""
    if p.dtype.kind != "f" and p.dtype.name != "bfloat16":
        raise TypeError(f"{op}: parameter {i} has non-float dtype {p.dtype}")
    arrays = [("grad", grads[i])] + [(f"state {j}", s[i]) for j, s in enumerate(states)]
    for what, a in arrays:
        if a is None:
            raise ValueError(
                f"{op}: {what} of parameter {i} is None (pass only params with grads)"
            )
        if a.shape != p.shape:
            raise ValueError(
                f"{op}: {what} of parameter {i} has shape {a.shape}, param {p.shape}"
            )
        if a.dtype != p.dtype:
            raise TypeError(
                f"{op}: {what} of parameter {i} has dtype {a.dtype}, param {p.dtype}"
            )


def sgd_step(
    params: list,
    grads: list,
    momentum_bufs: list,
    *,
    lr: float,
    momentum: float,
    dampening: float,
    nesterov: bool,
    weight_decay: float,
    first_step: bool,
) -> None:
    _check_group("sgd_step", params, grads, [momentum_bufs] if momentum != 0 else [])
    sgd_update(params, grads, momentum_bufs, lr=lr, momentum=momentum, dampening=dampening,
               nesterov=nesterov, weight_decay=weight_decay, first_step=first_step)


def adam_step(
    params: list,
    grads: list,
    exp_avgs: list,
    exp_avg_sqs: list,
    *,
    step: int,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    decoupled: bool,
) -> None:
    _check_group("adam_step", params, grads, [exp_avgs, exp_avg_sqs])
    adam_update(params, grads, exp_avgs, exp_avg_sqs, step=step, lr=lr, beta1=beta1, beta2=beta2,
                eps=eps, weight_decay=weight_decay, decoupled=decoupled)
