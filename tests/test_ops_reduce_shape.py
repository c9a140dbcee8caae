"""Reductions, the softmax family, shape ops, matmul and linear, dtype and arg ops: forward
against float64 NumPy, gradients against finite differences, on every device (indexing is in
test_ops_getitem.py)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from _helpers import T, assert_close, check_grad, hsettings, rand, seeds, shape_and_axis, shapes
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import gpugrad as gg


def distinct(shape, seed) -> np.ndarray:
    """Values at least 0.4 apart, so max/min have a unique winner (for finite differences)."""
    rng = np.random.default_rng(seed)
    n = int(np.prod(shape))
    return ((rng.permutation(n) - n / 2) * 0.5 + rng.uniform(-0.05, 0.05, n)).reshape(shape)


REDUCTIONS = {
    "sum": (gg.sum, np.sum),
    "mean": (gg.mean, np.mean),
    "max": (gg.max, np.max),
    "min": (gg.min, np.min),
    "method_sum": (lambda x, **kw: x.sum(**kw), np.sum),
    "method_max": (lambda x, **kw: x.max(**kw), np.max),
}


@pytest.mark.parametrize("name", list(REDUCTIONS))
@hsettings(25)
@given(sa=shape_and_axis(), keepdims=st.booleans(), seed=seeds)
def test_reductions(device, name, sa, keepdims, seed):
    fn, ref = REDUCTIONS[name]
    shape, axis = sa
    x = distinct(shape, seed)
    y = fn(T(x, device, dtype=gg.float32), axis=axis, keepdims=keepdims)
    want = ref(x.astype(np.float32).astype(np.float64), axis=axis, keepdims=keepdims)
    assert y.dtype == np.float32
    assert_close(y, want, rtol=1e-5, atol=1e-5)
    check_grad(lambda t: fn(t, axis=axis, keepdims=keepdims), [x], device)
    t = T(x, device, dtype=gg.float32, requires_grad=True)
    fn(t, axis=axis, keepdims=keepdims).sum().backward()
    assert t.grad.shape == shape and t.grad.dtype == np.float32


@pytest.mark.parametrize("op", ["max", "min"])
def test_max_min_split_ties_evenly(device, op):
    x = np.array([[1.0, 3.0, 3.0], [2.0, 2.0, 2.0], [5.0, -1.0, 0.0]])
    if op == "min":
        x = -x
    t = T(x, device, requires_grad=True)
    y = getattr(gg, op)(t, axis=1)
    assert_close(y, getattr(np, op)(x, axis=1))
    y.sum().backward()
    assert_close(t.grad, [[0, 0.5, 0.5], [1 / 3, 1 / 3, 1 / 3], [1, 0, 0]], rtol=1e-12)
    t.grad = None
    getattr(t, op)().backward()  # over everything: the two global extrema share
    assert_close(t.grad, [[0, 0, 0], [0, 0, 0], [1, 0, 0]])
    t2 = T([[4.0, 1.0], [4.0, 4.0]], device, requires_grad=True)
    (gg.max if op == "max" else lambda a, **kw: -gg.min(-a, **kw))(t2, axis=0).sum().backward()
    assert_close(t2.grad, [[0.5, 0], [0.5, 1]])
    # the same every time (deterministic)
    grads = []
    for _ in range(3):
        t.grad = None
        getattr(gg, op)(t, axis=(0, 1)).backward()
        grads.append(t.grad.numpy())
    assert all(np.array_equal(grads[0], g) for g in grads)


def test_reduce_empty_max_raises(device):
    with pytest.raises(ValueError, match="max"):
        gg.max(T(np.zeros((0, 3)), device))


# -- softmax family ------------------------------------------------------------------------------
def _lse(x, axis=None, keepdims=False):
    m = np.max(x, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0)
    with np.errstate(divide="ignore"):
        out = np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True)) + m
    return out if keepdims else np.squeeze(out, axis=axis) if axis is not None else out.reshape(())


def _log_softmax(x, axis):
    return x - _lse(x, axis=axis, keepdims=True)


SOFTMAX = {
    "softmax": (lambda t, axis: gg.softmax(t, axis=axis),
                lambda x, axis: np.exp(_log_softmax(x, axis))),
    "log_softmax": (lambda t, axis: gg.log_softmax(t, axis=axis), _log_softmax),
    "logsumexp": (lambda t, axis: gg.logsumexp(t, axis=axis), lambda x, axis: _lse(x, axis)),
    "logsumexp_keep": (lambda t, axis: t.logsumexp(axis=axis, keepdims=True),
                       lambda x, axis: _lse(x, axis, keepdims=True)),
}


@pytest.mark.parametrize("name", list(SOFTMAX))
@hsettings(20)
@given(sa=shape_and_axis(min_dims=1), seed=seeds)
def test_softmax_family(device, name, sa, seed):
    fn, ref = SOFTMAX[name]
    shape, axis = sa
    if name.startswith("log_softmax") or name == "softmax":
        axis = -1 if axis is None or isinstance(axis, tuple) else axis
    x = rand(shape, seed, -3, 3)
    y = fn(T(x, device, dtype=gg.float32), axis)
    assert y.dtype == np.float32
    assert_close(y, ref(x.astype(np.float32).astype(np.float64), axis), rtol=1e-5, atol=1e-5)
    check_grad(lambda t: fn(t, axis), [x], device)


def test_softmax_sums_to_one_and_method(device):
    x = rand((3, 4), 3)
    y = T(x, device).softmax(axis=0)
    assert_close(gg.sum(y, axis=0), np.ones(4))
    assert_close(T(x, device).log_softmax(), _log_softmax(x, -1))


EXTREME = np.array([[1000.0, -1000.0, 0.0, 999.0],
                    [-np.inf, 1.0, 2.0, -np.inf],
                    [-1000.0, -1000.0, -1000.0, -1000.0],
                    [1000.0, 1000.0, 1000.0, 1000.0]])


@pytest.mark.parametrize("name", ["softmax", "log_softmax", "logsumexp"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_softmax_family_stable_at_extremes(device, name, dtype):
    fn, ref = SOFTMAX[name]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        t = T(EXTREME, device, dtype=dtype, requires_grad=True)
        y = fn(t, 1)
        g = rand(y.shape, 7)
        y.backward(gradient=T(g, device, dtype=dtype))
    want = ref(EXTREME, 1)
    got = y.numpy()
    finite = np.isfinite(want)
    assert np.array_equal(np.isfinite(got), finite)
    np.testing.assert_allclose(got[finite], want[finite], rtol=1e-6, atol=1e-5)
    grad = t.grad.numpy()
    assert np.all(np.isfinite(grad)), grad
    if name == "softmax":
        sm = np.exp(_log_softmax(EXTREME, 1))
        want_grad = sm * (g - (g * sm).sum(axis=1, keepdims=True))
    elif name == "log_softmax":
        want_grad = g - np.exp(_log_softmax(EXTREME, 1)) * g.sum(axis=1, keepdims=True)
    else:
        want_grad = g[:, None] * np.exp(_log_softmax(EXTREME, 1))
    # float32 keeps ~7 digits of an output near 1000, so exp(x - y) is only good to ~1e-4
    tol = 1e-4 if dtype == "float32" else 1e-9
    np.testing.assert_allclose(grad, want_grad, rtol=tol, atol=tol)
    if name != "log_softmax":  # a -inf entry has probability 0: exactly no gradient
        assert grad[1, 0] == 0 and grad[1, 3] == 0


def test_logsumexp_all_neg_inf_row(device):
    x = np.array([[-np.inf, -np.inf], [0.0, 0.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = gg.logsumexp(T(x, device), axis=1)
    assert_close(y, [-np.inf, np.log(2)])


# -- shape ops -----------------------------------------------------------------------------------
@hsettings(20)
@given(shape=shapes, seed=seeds, data=st.data())
def test_reshape(device, shape, seed, data):
    x = rand(shape, seed)
    n = x.size
    target = data.draw(st.sampled_from([(-1,), (n,), (1, n), (n, 1, -1), (1, -1, 1), ()
                                        if n == 1 else (-1, 1)]))
    y = gg.reshape(T(x, device), target)
    assert_close(y, x.reshape(target), rtol=0, atol=0)
    assert_close(T(x, device).reshape(*target), x.reshape(target), rtol=0, atol=0)
    check_grad(lambda t: gg.reshape(t, target) * T(rand(y.shape, 1), device), [x], device)


@hsettings(20)
@given(shape=hnp.array_shapes(min_dims=1, max_dims=4, max_side=3), seed=seeds, data=st.data())
def test_transpose_permute(device, shape, seed, data):
    x = rand(shape, seed)
    perm = tuple(data.draw(st.permutations(range(len(shape)))))
    w = rand(x.transpose(perm).shape, 2)
    assert_close(gg.transpose(T(x, device), perm), x.transpose(perm), rtol=0, atol=0)
    assert_close(gg.permute(T(x, device), *perm), x.transpose(perm), rtol=0, atol=0)
    assert_close(T(x, device).T, x.T, rtol=0, atol=0)
    assert_close(T(x, device).transpose(), x.transpose(), rtol=0, atol=0)
    check_grad(lambda t: gg.transpose(t, perm) * T(w, device), [x], device)
    check_grad(lambda t: t.T * T(w.reshape(-1)[: x.size].reshape(x.T.shape) if w.size == x.size
                                 else np.ones(x.T.shape), device), [x], device)


def test_swapaxes_squeeze_unsqueeze(device):
    x = rand((2, 1, 3), 0)
    assert_close(gg.swapaxes(T(x, device), 0, -1), np.swapaxes(x, 0, -1), rtol=0, atol=0)
    check_grad(lambda t: gg.swapaxes(t, 0, 2) * T(rand((3, 1, 2), 1), device), [x], device)
    assert gg.squeeze(T(x, device)).shape == (2, 3)
    assert T(x, device).squeeze(1).shape == (2, 3)
    assert gg.squeeze(T(x, device), -2).shape == (2, 3)
    cases = ((0, (1, 2, 1, 3)), (-1, (2, 1, 3, 1)), (3, (2, 1, 3, 1)), (1, (2, 1, 1, 3)))
    for axis, shape in cases:
        assert gg.unsqueeze(T(x, device), axis).shape == shape
        assert_close(gg.unsqueeze(T(x, device), axis), np.expand_dims(x, axis))
    check_grad(lambda t: gg.squeeze(t, 1) * T(rand((2, 3), 2), device), [x], device)
    check_grad(lambda t: gg.unsqueeze(t, -1) * T(rand((2, 1, 3, 1), 2), device), [x], device)
    with pytest.raises(ValueError, match="squeeze"):
        gg.squeeze(T(x, device), 0)


@hsettings(20)
@given(shape=shapes, seed=seeds, data=st.data())
def test_broadcast_to(device, shape, seed, data):
    x = rand(shape, seed)
    target = data.draw(hnp.broadcastable_shapes(shape, min_dims=len(shape), max_dims=4,
                                                max_side=3).map(lambda s: np.broadcast_shapes(s,
                                                                                         shape)))
    y = gg.broadcast_to(T(x, device), target)
    assert_close(y, np.broadcast_to(x, target), rtol=0, atol=0)
    w = rand(target, 3)
    check_grad(lambda t: gg.broadcast_to(t, target) * T(w, device), [x], device)
    t = T(x, device, requires_grad=True)
    T(x, device).broadcast_to(target)  # method form
    gg.broadcast_to(t, target).sum().backward()
    assert_close(t.grad, np.full(shape, np.prod(target) / max(x.size, 1)))


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_concatenate(device, axis):
    shapes = [(2, 3), (2, 3), (2, 3)]
    shapes = [tuple(n + i if d == axis % 2 else n for d, n in enumerate(s))
              for i, s in enumerate(shapes)]
    xs = [rand(s, i) for i, s in enumerate(shapes)]
    y = gg.concatenate([T(x, device) for x in xs], axis=axis)
    want = np.concatenate(xs, axis=axis)
    assert_close(y, want, rtol=0, atol=0)
    w = rand(want.shape, 9)
    check_grad(lambda *ts: gg.concatenate(ts, axis=axis) * T(w, device), xs, device)
    # a constant among the inputs gets no gradient; the rest get their slice
    ts = [T(x, device, requires_grad=i != 1) for i, x in enumerate(xs)]
    (gg.cat(ts, axis=axis) * T(w, device)).sum().backward()
    splits = np.cumsum([s[axis] for s in shapes])[:-1]
    for t, wpart in zip(ts, np.split(w, splits, axis=axis)):
        if t.requires_grad:
            assert_close(t.grad, wpart)
        else:
            assert t.grad is None


@pytest.mark.parametrize("axis", [0, 1, 2, -1])
def test_stack(device, axis):
    xs = [rand((2, 3), i) for i in range(3)]
    want = np.stack(xs, axis=axis)
    assert_close(gg.stack([T(x, device) for x in xs], axis=axis), want, rtol=0, atol=0)
    w = rand(want.shape, 5)
    check_grad(lambda *ts: gg.stack(ts, axis=axis) * T(w, device), xs, device)


def test_concatenate_stack_grad_dtype(device):
    a = T(np.ones(2), device, dtype=gg.float32, requires_grad=True)
    b = T(np.ones(2), device, dtype=gg.float64, requires_grad=True)
    for op in (gg.concatenate, gg.stack):
        a.grad = b.grad = None
        y = op([a, b])
        assert y.dtype == np.float64
        y.sum().backward()
        assert a.grad.dtype == np.float32 and b.grad.dtype == np.float64


# -- matmul and linear ---------------------------------------------------------------------------
MATMUL_SHAPES = [
    ((3,), (3,)),
    ((3,), (3, 4)),
    ((2, 3), (3,)),
    ((2, 3), (3, 4)),
    ((5, 2, 3), (3, 4)),
    ((2, 3), (5, 3, 4)),
    ((2, 1, 2, 3), (4, 3, 2)),
    ((3,), (2, 3, 4)),
    ((2, 2, 3), (3,)),
    ((1, 2, 3), (4, 3, 2)),
    ((3, 2, 3), (1, 3, 4)),
    ((1, 2, 3), (2, 1, 3, 4)),
]


@pytest.mark.parametrize("sa,sb", MATMUL_SHAPES, ids=[f"{a}@{b}" for a, b in MATMUL_SHAPES])
def test_matmul(device, sa, sb):
    a, b = rand(sa, 1), rand(sb, 2)
    want = np.matmul(a, b)
    y = T(a, device, dtype=gg.float32) @ T(b, device, dtype=gg.float32)
    assert y.dtype == np.float32
    assert_close(y, want, rtol=1e-5, atol=1e-5)
    assert_close(gg.matmul(T(a, device), T(b, device)), want, rtol=1e-12, atol=1e-12)
    check_grad(gg.matmul, [a, b], device)
    ta = T(a, device, dtype=gg.float32, requires_grad=True)
    tb = T(b, device, dtype=gg.float32, requires_grad=True)
    (ta @ tb).sum().backward()
    assert ta.grad.shape == sa and tb.grad.shape == sb
    assert ta.grad.dtype == tb.grad.dtype == np.float32


def test_matmul_mixed_dtype_grad_dtype(device):
    a = T(np.ones((2, 3)), device, dtype=gg.float32, requires_grad=True)
    b = T(np.ones((3, 2)), device, dtype=gg.float64, requires_grad=True)
    y = a @ b
    assert y.dtype == np.float64
    y.sum().backward()
    assert a.grad.dtype == np.float32 and b.grad.dtype == np.float64
    x = T(np.ones((2, 2)), device, dtype=gg.float32, requires_grad=True)
    bias = T(np.ones(3), device, dtype=gg.float64, requires_grad=True)
    w = T(np.ones((3, 2)), device, dtype=gg.float32, requires_grad=True)
    y = gg.linear(x, w, bias)
    assert y.dtype == np.float64
    assert_close(y, np.full((2, 3), 3.0))
    y.sum().backward()
    assert x.grad.dtype == w.grad.dtype == np.float32 and bias.grad.dtype == np.float64
    assert_close(bias.grad, [2.0, 2.0, 2.0])


@pytest.mark.parametrize("xs", [(3,), (2, 3), (2, 5, 3)])
@pytest.mark.parametrize("bias", [True, False])
def test_linear(device, xs, bias):
    x, w, b = rand(xs, 1), rand((4, 3), 2), rand((4,), 3)
    want = x @ w.T + (b if bias else 0)
    args = [x, w, b] if bias else [x, w]
    y = gg.linear(*[T(a, device, dtype=gg.float32) for a in args])
    assert y.dtype == np.float32 and y.shape == want.shape
    assert_close(y, want, rtol=1e-5, atol=1e-5)
    check_grad(gg.linear, args, device)
    # only some inputs requiring grad
    tx = T(x, device)
    tw = T(w, device, requires_grad=True)
    gg.linear(tx, tw, None).sum().backward()
    assert_close(tw.grad, np.ones(want.shape).reshape(-1, 4).T @ x.reshape(-1, 3))


# -- dtype and arg ops ---------------------------------------------------------------------------
def test_astype_round_trip_grads(device):
    x = rand((2, 3), 4)
    t = T(x, device, dtype=gg.float32, requires_grad=True)
    y = t.astype(gg.float64)
    assert y.dtype == np.float64 and y.requires_grad
    z = (y * 3).astype("float32")
    assert z.dtype == np.float32
    (z * z).sum().backward()
    assert t.grad.dtype == np.float32
    assert_close(t.grad, 18 * x.astype(np.float32), rtol=1e-5)
    assert gg.astype(t, gg.float32) is t
    h = T(x, device, dtype=gg.float16, requires_grad=True)
    h.astype(gg.float32).sum().backward()
    assert h.grad.dtype == np.float16
    # finite differences through a float32 cast need a step float32 can resolve
    x64 = T(x, device, requires_grad=True)
    assert gg.gradcheck(lambda a: (a.astype(gg.float32) * 2.0).astype(gg.float64) ** 2, [x64],
                        eps=1e-2, atol=1e-3, rtol=1e-3)


def test_astype_to_integer_is_not_differentiable(device):
    t = T([1.5, 2.5], device, requires_grad=True)
    i = t.astype(gg.int64)
    assert i.dtype == np.int64
    assert not i.requires_grad


@pytest.mark.parametrize("op", ["argmax", "argmin"])
def test_argmax_argmin(device, op):
    x = distinct((3, 4, 2), 1)
    t = T(x, device, requires_grad=True)
    for axis in (None, 0, 1, -1):
        for keepdims in (False, True):
            got = getattr(gg, op)(t, axis=axis, keepdims=keepdims)
            want = getattr(np, op)(x, axis=axis, keepdims=keepdims)
            assert got.dtype == np.int64 and not got.requires_grad
            np.testing.assert_array_equal(got.numpy(), want)
    assert getattr(t, op)().item() == getattr(np, op)(x)
