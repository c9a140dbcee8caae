"""Float64 NumPy references of torch.optim's update rules (one parameter, all steps), shared by
the optimizer tests."""

from __future__ import annotations

import math

import numpy as np

import gpugrad as gg


def stepped(opt_cls, device, dtype, p0, grad_steps, **kw):
    """Parameters made from the arrays ``p0`` on ``device``, and an ``opt_cls(**kw)`` that has
    taken one step per entry of ``grad_steps`` (a list of per-parameter gradient arrays)."""
    params = [gg.tensor(p, dtype=dtype, device=device, requires_grad=True) for p in p0]
    opt = opt_cls(params, **kw)
    for grads in grad_steps:
        for p, g in zip(params, grads):
            p.grad = gg.tensor(g, dtype=dtype, device=device)
        opt.step()
    return params, opt


def lerp(a, b, w):
    return a + w * (b - a) if w < 0.5 else b - (b - a) * (1 - w)


# -- float64 references of torch.optim's update rules (one parameter, all steps) ---------------
def ref_sgd(p, grads, lr, momentum=0.0, dampening=0.0, nesterov=False, weight_decay=0.0,
            maximize=False):
    p, buf = p.copy(), None
    for g in grads:
        g = -g if maximize else g
        d = g + weight_decay * p
        if momentum:
            buf = d.copy() if buf is None else momentum * buf + (1 - dampening) * d
            d = d + momentum * buf if nesterov else buf
        p = p - lr * d
    return p


def ref_adam(p, grads, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
             amsgrad=False, maximize=False, decoupled=False):
    p, m, v, vmax = p.copy(), np.zeros_like(p), np.zeros_like(p), np.zeros_like(p)
    b1, b2 = betas
    for step, g in enumerate(grads, 1):
        g = -g if maximize else g
        if decoupled:
            p = p * (1 - lr * weight_decay)
        else:
            g = g + weight_decay * p
        m = lerp(m, g, 1 - b1)
        v = b2 * v + (1 - b2) * g * g
        vmax = np.maximum(vmax, v)
        denom = np.sqrt(vmax if amsgrad else v) / math.sqrt(1 - b2**step) + eps
        p = p - lr / (1 - b1**step) * m / denom
    return p


def ref_rmsprop(p, grads, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0,
                centered=False, maximize=False):
    p, v, gavg, buf = p.copy(), np.zeros_like(p), np.zeros_like(p), np.zeros_like(p)
    for g in grads:
        g = -g if maximize else g
        g = g + weight_decay * p
        v = alpha * v + (1 - alpha) * g * g
        if centered:
            gavg = lerp(gavg, g, 1 - alpha)
            avg = np.sqrt(v - gavg * gavg) + eps
        else:
            avg = np.sqrt(v) + eps
        if momentum > 0:
            buf = momentum * buf + g / avg
            p = p - lr * buf
        else:
            p = p - lr * g / avg
    return p


def ref_adagrad(p, grads, lr=1e-2, lr_decay=0.0, weight_decay=0.0,
                initial_accumulator_value=0.0, eps=1e-10, maximize=False):
    p, s = p.copy(), np.full_like(p, initial_accumulator_value)
    for step, g in enumerate(grads, 1):
        g = -g if maximize else g
        g = g + weight_decay * p
        s = s + g * g
        p = p - lr / (1 + (step - 1) * lr_decay) * g / (np.sqrt(s) + eps)
    return p
