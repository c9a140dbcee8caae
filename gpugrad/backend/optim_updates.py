"""The optimizer updates, written once against the array module (NumPy or CuPy, picked from the
arrays): ``torch.optim``'s formulas, in place, with every option -- including the ones the CUDA
kernels (``kernels/optimizers.cu``) do not implement (``maximize``, Adam's ``amsgrad``).

They are the reference implementation of the fused optimizer steps: ``fused_reference.sgd_step``
and ``adam_step`` (the kernels' signatures) run them, on the CPU always and on a GPU when the
fused kernels are switched off (``GPUGRAD_FUSED=0``). Hyper-parameters are Python floats, turned
into scalars of the computation's dtype once per step, so both devices round alike. Half-precision
parameters are updated in float32 and rounded once, at the end.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .numerics import acc_view, array_module, store

_F32, _F64 = np.dtype(np.float32), np.dtype(np.float64)


def lerp_(a: Any, b: Any, w: Any) -> None:
    """``a = lerp(a, b, w)`` in place with torch.lerp's two branches (exact at w = 1, where the
    one-line form a + w·(b − a) is not); ``w`` a Python float or a scalar of a's dtype."""
    if float(w) < 0.5:
        a += (b - a) * w
    else:
        a[...] = b - (b - a) * (1 - w)


def adam_bias_terms(step: int, lr: float, beta1: float, beta2: float) -> tuple[float, float]:
    """Adam's host-side scalars for ``step`` (checked): ``(lr / (1 - beta1^step),
    sqrt(1 - beta2^step))``, shared by the reference and the CUDA launcher so both get the same
    float64 values."""
    if int(step) != step or step < 1:
        raise ValueError(f"adam_step: step must be an integer >= 1, got {step!r}")
    return lr / (1 - beta1**step), (1 - beta2**step) ** 0.5


def sgd_update(params: list, grads: list, momentum_bufs: list, *, lr: float, momentum: float,
               dampening: float, nesterov: bool, weight_decay: float, first_step: bool,
               maximize: bool = False) -> None:
    """torch.optim.SGD: g = -g (maximize); d = g + wd·p; b = d (first step) or
    momentum·b + (1 - dampening)·d; d = d + momentum·b (nesterov) or b; p -= lr·d."""
    if momentum == 0 and weight_decay == 0 and not maximize:
        plain_sgd_update(params, grads, lr)
        return
    use_buf = momentum != 0
    scalars: dict[Any, tuple] = {}  # compute dtype -> the hyper-parameters as its scalars
    for i, p in enumerate(params):
        pa = acc_view(p)
        dt = pa.dtype
        k = scalars.get(dt)
        if k is None:
            cd = dt.type
            k = scalars[dt] = (cd(lr), cd(weight_decay), cd(momentum), cd(1 - dampening))
        lr_c, wd_c, momentum_c, undamped_c = k
        d = grads[i]
        if d.dtype != dt:  # never written: the grads stay intact
            d = array_module(p).asarray(d, dtype=dt)
        if maximize:
            d = -d
        if weight_decay != 0:
            d = d + wd_c * pa
        if use_buf:
            b = momentum_bufs[i]
            ba = acc_view(b)
            if first_step:
                ba[...] = d
            else:
                ba *= momentum_c
                ba += d * undamped_c
            store(b, ba)
            d = d + ba * momentum_c if nesterov else ba
        pa -= d * lr_c
        store(p, pa)


def plain_sgd_update(params: list, grads: list, lr: float) -> None:
    """``p -= lr·g``: ``sgd_update`` without momentum, weight decay or maximize (the same
    operations), in the least Python per parameter -- on a small model that is the step's cost."""
    lr32, lr64 = np.float32(lr), np.float64(lr)
    for p, d in zip(params, grads):
        dt = p.dtype
        if d.dtype is dt and (dt is _F32 or dt is _F64):  # identity: the usual case, cheaply
            p -= d * (lr32 if dt is _F32 else lr64)
            continue
        pa = acc_view(p)  # half precision: in float32, rounded once
        # never written: the grads stay intact
        pa -= array_module(p).asarray(d, dtype=pa.dtype) * pa.dtype.type(lr)
        store(p, pa)


def adam_update(params: list, grads: list, exp_avgs: list, exp_avg_sqs: list,
                max_exp_avg_sqs: list | None = None, *, step: int, lr: float, beta1: float,
                beta2: float, eps: float, weight_decay: float, decoupled: bool,
                maximize: bool = False) -> None:
    """torch.optim.Adam (``decoupled=False``: wd·p added to the gradient) or AdamW (p *= 1 -
    lr·wd first). ``max_exp_avg_sqs`` (amsgrad) normalises by the running maximum of v."""
    step_size, bc2_sqrt = adam_bias_terms(step, lr, beta1, beta2)
    w1 = 1 - beta1
    scalars: dict[Any, tuple] = {}  # compute dtype -> the step's numbers as its scalars
    for i, p in enumerate(params):
        xp = array_module(p)
        pa, ma, va = acc_view(p), acc_view(exp_avgs[i]), acc_view(exp_avg_sqs[i])
        k = scalars.get(pa.dtype)
        if k is None:
            cd = pa.dtype.type
            k = scalars[pa.dtype] = (
                cd(1 - lr * weight_decay), cd(weight_decay), cd(w1), cd(1 - w1), cd(beta2),
                cd(1 - beta2), cd(bc2_sqrt), cd(eps), cd(step_size))
        decay_c, wd_c, w1_c, keep1_c, beta2_c, w2_c, bc2_sqrt_c, eps_c, step_size_c = k
        d = grads[i]
        if d.dtype != pa.dtype:
            d = xp.asarray(d, dtype=pa.dtype)
        if maximize:
            d = -d
        if decoupled:
            if lr * weight_decay != 0:
                pa *= decay_c
        elif weight_decay != 0:
            d = d + wd_c * pa
        tmp = xp.subtract(d, ma, out=xp.empty_like(pa))  # one scratch buffer for the update
        if w1 < 0.5:  # torch.lerp's two branches (see lerp_), with the scratch buffer
            ma += xp.multiply(tmp, w1_c, out=tmp)
        else:
            xp.subtract(d, xp.multiply(tmp, keep1_c, out=tmp), out=ma)
        va *= beta2_c
        va += xp.multiply(xp.multiply(d, w2_c, out=tmp), d, out=tmp)
        v = va
        if max_exp_avg_sqs is not None:
            vmax = acc_view(max_exp_avg_sqs[i])
            v = xp.maximum(vmax, va, out=vmax)
            store(max_exp_avg_sqs[i], vmax)
        xp.sqrt(v, out=tmp)
        tmp /= bc2_sqrt_c
        tmp += eps_c
        xp.divide(ma, tmp, out=tmp)
        tmp *= step_size_c
        pa -= tmp
        store(p, pa)
        store(exp_avgs[i], ma)
        store(exp_avg_sqs[i], va)
