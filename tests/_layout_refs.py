"""NumPy references (float64) and layer wrappers for the memory-layout tests: the ``Arg`` shapes
they share, reference losses and normalisations, and small functions that run an ``nn`` layer,
an in-place update or ``t[idx] = v`` on given tensors (``_layout_cases`` lists the ops)."""

from __future__ import annotations

import math
import warnings

import numpy as np
from _layouts import Arg, Case

import gpugrad as gg
import gpugrad.functional as F
from gpugrad import nn

A34 = Arg((3, 4))
POS34 = Arg((3, 4), low=0.5, high=2.0)
A234 = Arg((2, 3, 4))
KINK34 = Arg((3, 4), avoid=(0.0,))
erf_ref = np.vectorize(math.erf, otypes=[np.float64])
_SQRT2PI = math.sqrt(2 / math.pi)


def softmax_ref(x, axis):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def lse_ref(x, axis=None, keepdims=False):
    m = x.max(axis=axis, keepdims=True)
    out = np.log(np.exp(x - m).sum(axis=axis, keepdims=True)) + m
    return out if keepdims else np.squeeze(out, axis=axis)


def gelu_ref(x):
    return 0.5 * x * (1 + erf_ref(x / math.sqrt(2)))


def gelu_tanh_ref(x):
    return 0.5 * x * (1 + np.tanh(_SQRT2PI * (x + 0.044715 * x**3)))


def reduce_ref(v, reduction, denom=None):
    if reduction == "none":
        return v
    with np.errstate(invalid="ignore"):  # every row ignored: 0/0, a NaN mean (as PyTorch)
        return v.sum() / (v.size if denom is None else denom) if reduction == "mean" else v.sum()


def ce_ref(x, y, reduction="mean", ignore=-100, weight=None, smoothing=0.0):
    logp = x - lse_ref(x, axis=1, keepdims=True)
    c = x.shape[1]
    keep = y != ignore
    cols = np.where(keep, y, 0)
    w = np.ones(c) if weight is None else weight
    nll = -w[cols] * logp[np.arange(len(y)), cols]
    loss = (1 - smoothing) * nll - smoothing / c * (logp * w).sum(axis=1)
    loss = np.where(keep, loss, 0.0)
    return reduce_ref(loss, reduction, np.where(keep, w[cols], 0).sum())


def nll_ref(logp, y, reduction="mean", ignore=-100, weight=None):
    keep = y != ignore
    cols = np.where(keep, y, 0)
    w = np.ones(logp.shape[1]) if weight is None else weight
    loss = np.where(keep, -w[cols] * logp[np.arange(len(y)), cols], 0.0)
    return reduce_ref(loss, reduction, np.where(keep, w[cols], 0).sum())


def bce_logits_ref(z, t, reduction="mean", weight=None, pos_weight=None):
    sp_neg = np.logaddexp(0, -z)  # softplus(-z)
    pw = 1.0 if pos_weight is None else pos_weight
    loss = (1 - t) * z + (1 + (pw - 1) * t) * sp_neg
    return reduce_ref(loss if weight is None else loss * weight, reduction)


def bce_ref(p, t, reduction="mean"):
    return reduce_ref(-(t * np.log(p) + (1 - t) * np.log1p(-p)), reduction)


def layer_norm_ref(x, w=None, b=None, k=1):
    axes = tuple(range(x.ndim - k, x.ndim))
    y = (x - x.mean(axis=axes, keepdims=True)) / np.sqrt(x.var(axis=axes, keepdims=True) + 1e-5)
    return y * (1 if w is None else w) + (0 if b is None else b)


def batch_norm_ref(x, w, b):
    axes = (0,) + tuple(range(2, x.ndim))
    shape = (1, -1) + (1,) * (x.ndim - 2)
    y = (x - x.mean(axis=axes, keepdims=True)) / np.sqrt(x.var(axis=axes, keepdims=True) + 1e-5)
    return y * w.reshape(shape) + b.reshape(shape)


def moment_ref(x, axis, std=False):
    v = x.var(axis=axis, ddof=1)
    return np.sqrt(v) if std else v


def quiet(ref):
    """``ref`` without NumPy's warnings (the mean of nothing is NaN)."""

    def wrapped(*arrays):
        with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return ref(*arrays)

    return wrapped


def unary(name, fn, ref, arg=A34, exact=True, fused=False):
    return Case(name, fn, ref, (arg,), exact=exact, fused=fused)


def linear_layer(x, w, b):
    layer = nn.Linear(4, 5, device=x.device, dtype=x.dtype)
    layer.weight, layer.bias = w, b
    return layer(x)


def layer_norm_layer(x, w, b):
    layer = nn.LayerNorm(4, device=x.device, dtype=x.dtype)
    layer.weight, layer.bias = w, b
    return layer(x)


def batch_norm_layer(x, w, b, train=True):
    layer = nn.BatchNorm1d(x.shape[1], device=x.device, dtype=x.dtype)
    layer.weight, layer.bias = w, b
    if not train:
        layer.eval()
    y = layer(x)
    return y, layer.running_mean, layer.running_var


def batch_norm_layer_ref(x, w, b):
    n = x.size // x.shape[1]
    axes = (0,) + tuple(range(2, x.ndim))
    return (batch_norm_ref(x, w, b), 0.1 * x.mean(axis=axes),
            0.9 + 0.1 * x.var(axis=axes) * n / (n - 1))


def embedding_layer(idx, w):
    layer = nn.Embedding(6, 4, device=w.device, dtype=w.dtype)
    layer.weight = w
    return layer(idx)


def dropout_train(x):
    gg.manual_seed(7)  # the mask is a function of the key and the shape, not of the layout
    return F.dropout(x, p=0.4, training=True)


def dropout_eval_layer(x):
    layer = nn.Dropout(0.5)
    layer.eval()
    return layer(x) * 1.0  # eval returns its input itself: a node to differentiate through


def setitem_slices(x, v):
    y = x * 1.0
    y[1:, ::2] = v
    return y


def setitem_ref(x, v):
    y = x.copy()
    y[1:, ::2] = v
    return y


def setitem_mask(x, m):
    y = x * 1.0
    y[m] = 0.5
    return y


def inplace_updates(x, b):
    y = x * 1.0
    y += b
    y.mul_(2.0)
    y.sub_(b, alpha=0.5)
    y /= 1.5
    return y


def copy_into(x):
    y = gg.zeros(x.shape[1], x.shape[0], dtype=x.dtype, device=x.device)
    y.copy_(x.T)
    return y


def batch_norm_running(x, m, v):
    """Training-mode batch norm that moves the given running statistics (updated in place, so
    returned as outputs; the input arrays themselves must not change)."""
    y = F.batch_norm(x, m, v, training=True, momentum=0.2)
    return y, m, v


def batch_norm_running_ref(x, m, v):
    n = x.shape[0]
    y = (x - x.mean(axis=0)) / np.sqrt(x.var(axis=0) + 1e-5)
    return y, 0.8 * m + 0.2 * x.mean(axis=0), 0.8 * v + 0.2 * x.var(axis=0) * n / (n - 1)
