"""The fused ops on the CPU: the math of ``kernels/*.cu`` in NumPy, same formulas, few passes.

Every function mirrors ``fused_cuda`` (arrays in, arrays out) and the kernels' numerics: stable
``exp(-|x|)`` sigmoid, max-shifted softmax, ``log1p`` BCE, float64 accumulation of reductions,
float32 math for float16/bfloat16 inputs. Work buffers are reused in place (``out=``) so the big
inputs are walked as few times as NumPy allows; the inputs themselves are never modified.
"""

from __future__ import annotations

import numpy as np

_REDUCTIONS = ("mean", "sum", "none")
_NATIVE = (np.dtype(np.float32), np.dtype(np.float64))


def _float_dtype(a: np.ndarray, op: str, what: str) -> np.dtype:
    dt = a.dtype
    if dt.kind != "f" and dt.name != "bfloat16":
        raise TypeError(f"{op}: {what} must be a floating-point array, got dtype {dt}")
    return dt


def _compute_dtype(dt: np.dtype) -> np.dtype:
    return dt if dt in _NATIVE else np.dtype(np.float32)


def _check_reduction(op: str, reduction: str) -> None:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"{op}: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def _scalar(value: float, dt: np.dtype) -> np.ndarray:
    return np.asarray(value, dtype=np.float64).astype(dt)


# ---------------------------------------------------------------------------------------------
# sigmoid


def _sigmoid(xc: np.ndarray) -> np.ndarray:
    """``1/(1+exp(-x))``: exp(-x) may overflow to inf, giving exactly 0 like the kernels.

    Within a couple of ulp of the kernels' ``exp(-|x|)`` form everywhere (both round one exp,
    one add, one divide), but with no masked ufunc: NumPy's ``where=``/``copyto`` paths are not
    vectorised and cost ~10x a plain pass.
    """
    y = np.negative(xc, out=np.empty_like(xc))  # out= keeps 0-d inputs arrays
    with np.errstate(over="ignore"):
        np.exp(y, out=y)
    np.add(y, 1, out=y)
    return np.reciprocal(y, out=y)


def sigmoid_forward(x: np.ndarray) -> np.ndarray:
    """``sigmoid(x)``, never overflowing; float16/bfloat16 computed in float32."""
    dt = _float_dtype(x, "sigmoid", "input")
    return _sigmoid(np.asarray(x, dtype=_compute_dtype(dt))).astype(dt, copy=False)


def sigmoid_backward(y: np.ndarray, gy: np.ndarray) -> np.ndarray:
    """``gx = ((1 - y) * y) * gy`` from the saved output."""
    dt = _float_dtype(y, "sigmoid_backward", "y")
    if gy.shape != y.shape:
        raise ValueError(f"sigmoid_backward: gy shape {gy.shape} != y shape {y.shape}")
    cd = _compute_dtype(dt)
    yc = np.asarray(y, dtype=cd)
    gx = np.subtract(1, yc, out=np.empty_like(yc))
    np.multiply(gx, yc, out=gx)
    np.multiply(gx, np.asarray(gy, dtype=cd), out=gx)
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
    return dt, np.asarray(logits, dtype=_compute_dtype(dt)), labels.astype(np.int64, copy=False)


def _ce_check_labels(labels: np.ndarray, C: int, ignore_index: int) -> None:
    bad = (labels != ignore_index) & ((labels < 0) | (labels >= C))
    if bad.any():
        row = int(np.argmax(bad))
        raise ValueError(
            f"cross_entropy: label {int(labels[row])} at row {row} is out of range for "
            f"N={labels.shape[0]}, C={C} (labels must be in [0, {C}) or equal "
            f"ignore_index={ignore_index})"
        )


def _ce_grad(e: np.ndarray, labels: np.ndarray, valid: np.ndarray, scale: np.ndarray) -> None:
    """In place over ``e = exp(x - max)``: ``(softmax - onehot) * scale`` per row, as the kernels
    (subtracting the one before scaling keeps ``p - 1`` exact for confident rows)."""
    np.divide(e, e.sum(axis=1, keepdims=True), out=e)
    rows = np.flatnonzero(valid)
    e[rows, labels[rows]] -= 1
    np.multiply(e, scale[:, None], out=e)
    e[~valid] = 0


def _shift_by_max(xc: np.ndarray) -> np.ndarray:
    """``x - rowmax(x)`` in one new buffer (the copy the in-place passes then work on)."""
    if xc.shape[1] == 0:
        return np.empty_like(xc)
    return np.subtract(xc, xc.max(axis=1, keepdims=True))


def softmax_cross_entropy(
    logits: np.ndarray, labels: np.ndarray, ignore_index: int, reduction: str, with_grad: bool
) -> tuple[np.ndarray, np.ndarray | None]:
    """Loss (0-d for mean/sum, (N,) for none) and, with ``with_grad``, d(loss)/d(logits)."""
    dt, xc, labels = _ce_inputs(logits, labels, reduction)
    N, C = xc.shape
    _ce_check_labels(labels, C, ignore_index)
    cd = xc.dtype
    valid = labels != ignore_index
    count = int(valid.sum())
    safe = np.where(valid, labels, 0)
    with np.errstate(all="ignore"):  # inf/NaN logits propagate like the kernels, silently
        x = _shift_by_max(xc)
        x_lab = x[np.arange(N), safe] if C else np.zeros(N, cd)  # x_label - max
        np.exp(x, out=x)
        # with C == 0 every row is ignored (any other label failed the range check above)
        loss_rows = np.log(x.sum(axis=1)) - x_lab if C else np.zeros(N, cd)
        loss_rows[~valid] = 0
        if reduction == "none":
            loss = loss_rows
        else:
            total = loss_rows.sum(dtype=np.float64)
            loss = _scalar(total / count if reduction == "mean" else total, cd)
            if reduction == "mean" and count == 0:
                loss = _scalar(np.nan, cd)
        grad = None
        if with_grad:
            one = cd.type(1)  # the same float division the backward and the kernels do
            g = one / cd.type(count) if (reduction == "mean" and count) else one
            _ce_grad(x, safe, valid, np.full(N, g, dtype=cd))
            grad = x.astype(dt, copy=False)
    return loss.astype(dt, copy=False), grad


def softmax_cross_entropy_backward(
    logits: np.ndarray, labels: np.ndarray, ignore_index: int, reduction: str, gy: np.ndarray
) -> np.ndarray:
    """d(loss)/d(logits) for upstream ``gy`` (0-d for mean/sum, (N,) for none), recomputing
    the softmax."""
    dt, xc, labels = _ce_inputs(logits, labels, reduction)
    N, C = xc.shape
    cd = xc.dtype
    gy = np.asarray(gy, dtype=cd).reshape(_check_ce_gy(gy, reduction, xc.shape))
    valid = (labels != ignore_index) & (labels >= 0) & (labels < C)
    safe = np.where(valid, labels, 0)
    if reduction == "none":
        scale = gy.copy()
    else:
        g = gy
        if reduction == "mean":
            count = int((labels != ignore_index).sum())
            g = g / cd.type(count) if count else g
        scale = np.full(N, g, dtype=cd)
    with np.errstate(all="ignore"):
        x = _shift_by_max(xc)
        np.exp(x, out=x)
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
    cd = _compute_dtype(z.dtype)
    return z.dtype, np.asarray(z, dtype=cd), np.asarray(t, dtype=cd)


def _bce_terms(zc: np.ndarray, tc: np.ndarray, want_loss: bool, want_sig: bool):
    """Per-element loss ``max(z,0) - z*t + log1p(e)`` and ``sigmoid(z)``, ``e = exp(-|z|)``."""
    e = np.abs(zc, out=np.empty_like(zc))  # out= everywhere keeps 0-d inputs arrays
    np.negative(e, out=e)
    np.exp(e, out=e)
    sig = _sigmoid(zc) if want_sig else None
    loss = None
    if want_loss:
        loss = np.maximum(zc, 0, out=np.empty_like(zc))
        loss -= zc * tc
        np.log1p(e, out=e)
        loss += e
    return loss, sig


def bce_with_logits(
    z: np.ndarray, t: np.ndarray, reduction: str, with_grad: bool
) -> tuple[np.ndarray, np.ndarray | None]:
    dt, zc, tc = _bce_inputs(z, t, reduction)
    n = zc.size
    loss, sig = _bce_terms(zc, tc, True, with_grad)
    if reduction != "none":
        total = loss.sum(dtype=np.float64)
        with np.errstate(all="ignore"):
            loss = _scalar(total / n if reduction == "mean" else total, zc.dtype)
    grad = None
    if with_grad:
        grad = np.subtract(sig, tc, out=sig)
        if reduction == "mean" and n:
            grad *= _scalar(1.0 / n, zc.dtype)
        grad = grad.astype(dt, copy=False)
    return loss.astype(dt, copy=False), grad


def bce_with_logits_backward(
    z: np.ndarray, t: np.ndarray, reduction: str, gy: np.ndarray
) -> np.ndarray:
    dt, zc, tc = _bce_inputs(z, t, reduction, f"{_BCE} backward")
    _check_bce_gy(gy, reduction, zc.shape)
    cd = zc.dtype
    g = np.asarray(gy, dtype=cd)
    if reduction != "none":
        g = g.reshape(())
        if reduction == "mean" and zc.size:
            g = g * _scalar(1.0 / zc.size, cd)
    _, sig = _bce_terms(zc, tc, False, True)
    np.subtract(sig, tc, out=sig)
    np.multiply(sig, g, out=sig)
    return sig.astype(dt, copy=False)


# ---------------------------------------------------------------------------------------------
# optimizers (in place, PyTorch formulas; see kernels/optimizers.cu)


def _check_group(op: str, params, grads, states: list) -> None:
    n = len(params)
    if len(grads) != n or any(len(s) != n for s in states):
        raise ValueError(
            f"{op}: got {n} params, {len(grads)} grads and state lists of lengths "
            f"{[len(s) for s in states]}; all must match"
        )
    for i, p in enumerate(params):
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


def _acc_view(a: np.ndarray) -> np.ndarray:
    """The array itself for float32/64, else a float32 copy to be written back with ``_store``."""
    return a if a.dtype in _NATIVE else a.astype(np.float32)


def _store(dst: np.ndarray, src: np.ndarray) -> None:
    if src is not dst:
        dst[...] = src


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
    use_buf = momentum != 0
    _check_group("sgd_step", params, grads, [momentum_bufs] if use_buf else [])
    for i, p in enumerate(params):
        pa = _acc_view(p)
        cd = pa.dtype
        d = np.asarray(grads[i], dtype=cd)  # never written: the grads stay intact
        if weight_decay != 0:
            d = d + _scalar(weight_decay, cd) * pa
        if use_buf:
            b = momentum_bufs[i]
            ba = _acc_view(b)
            if first_step:
                ba[...] = d
            else:
                ba *= _scalar(momentum, cd)
                ba += d * _scalar(1 - dampening, cd)
            _store(b, ba)
            d = d + ba * _scalar(momentum, cd) if nesterov else ba
        pa -= d * _scalar(lr, cd)
        _store(p, pa)


def _adam_bias_terms(step: int, lr: float, beta1: float, beta2: float) -> tuple[float, float]:
    """Adam's host-side scalars for ``step`` (checked): ``(lr / (1 - beta1^step),
    sqrt(1 - beta2^step))``, shared by this twin and the CUDA launcher so both get the same
    float64 values."""
    if int(step) != step or step < 1:
        raise ValueError(f"adam_step: step must be an integer >= 1, got {step!r}")
    return lr / (1 - beta1**step), (1 - beta2**step) ** 0.5


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
    step_size, bc2_sqrt = _adam_bias_terms(step, lr, beta1, beta2)
    w1 = 1 - beta1
    for i, p in enumerate(params):
        pa, ma, va = _acc_view(p), _acc_view(exp_avgs[i]), _acc_view(exp_avg_sqs[i])
        cd = pa.dtype
        d = np.asarray(grads[i], dtype=cd)
        if decoupled:
            if lr * weight_decay != 0:
                pa *= _scalar(1 - lr * weight_decay, cd)
        elif weight_decay != 0:
            d = d + _scalar(weight_decay, cd) * pa
        tmp = np.subtract(d, ma, out=np.empty_like(pa))  # one scratch buffer for the whole update
        if w1 < 0.5:  # torch.lerp's two branches, so m matches PyTorch to the rounding
            ma += np.multiply(tmp, _scalar(w1, cd), out=tmp)
        else:
            np.subtract(d, np.multiply(tmp, _scalar(1 - w1, cd), out=tmp), out=ma)
        va *= _scalar(beta2, cd)
        va += np.multiply(np.multiply(d, _scalar(1 - beta2, cd), out=tmp), d, out=tmp)
        np.sqrt(va, out=tmp)
        tmp /= _scalar(bc2_sqrt, cd)
        tmp += _scalar(eps, cd)
        np.divide(ma, tmp, out=tmp)
        tmp *= _scalar(step_size, cd)
        pa -= tmp
        _store(p, pa)
        _store(exp_avgs[i], ma)
        _store(exp_avg_sqs[i], va)
