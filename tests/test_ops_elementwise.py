"""Elementwise ops: forward against float64 NumPy, gradients against finite differences, on every
device; broadcasting, Python scalars on either side, dtype promotion, comparisons."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from _helpers import (
    T,
    assert_close,
    check_grad,
    check_unary,
    hsettings,
    pair_shapes,
    rand,
    seeds,
    shapes,
)
from hypothesis import given

import gpugrad as gg

_erf = np.vectorize(math.erf, otypes=[np.float64])
_K = math.sqrt(2 / math.pi)


def _sigmoid(x):
    e = np.exp(-np.abs(x))  # stable on both sides
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


# name: (gpugrad function, float64 reference, input domain as rand() kwargs)
UNARY = {
    "neg": (lambda x: -x, lambda x: -x, {}),
    "exp": (gg.exp, np.exp, {}),
    "log": (gg.log, np.log, {"low": 0.2, "high": 3.0}),
    "sqrt": (gg.sqrt, np.sqrt, {"low": 0.2, "high": 3.0}),
    "abs": (gg.abs, np.abs, {"away_from": 0.0}),
    "sin": (gg.sin, np.sin, {"low": -4, "high": 4}),
    "cos": (gg.cos, np.cos, {"low": -4, "high": 4}),
    "tanh": (gg.tanh, np.tanh, {}),
    "erf": (gg.erf, _erf, {}),
    "sigmoid": (gg.sigmoid, _sigmoid, {"low": -6, "high": 6}),
    "relu": (gg.relu, lambda x: np.maximum(x, 0), {"away_from": 0.0}),
    "leaky_relu": (gg.leaky_relu, lambda x: np.where(x > 0, x, 0.01 * x), {"away_from": 0.0}),
    "leaky_relu_0.2": (lambda x: gg.leaky_relu(x, 0.2), lambda x: np.where(x > 0, x, 0.2 * x),
                       {"away_from": 0.0}),
    "gelu": (gg.gelu, lambda x: 0.5 * x * (1 + _erf(x / math.sqrt(2))), {"low": -4, "high": 4}),
    "gelu_tanh": (lambda x: gg.gelu(x, approximate="tanh"),
                  lambda x: 0.5 * x * (1 + np.tanh(_K * (x + 0.044715 * x**3))),
                  {"low": -4, "high": 4}),
    "method_exp": (lambda x: x.exp(), np.exp, {}),
    "method_abs": (lambda x: abs(x), np.abs, {"away_from": 0.0}),
    "clip": (lambda x: gg.clip(x, -0.5, 1.0), lambda x: np.clip(x, -0.5, 1.0),
             {"away_from": -0.5, "gap": 0.1}),
    "clip_min": (lambda x: gg.clip(x, min=0.3), lambda x: np.maximum(x, 0.3),
                 {"away_from": 0.3}),
    "clip_max": (lambda x: x.clip(max=0.3), lambda x: np.minimum(x, 0.3), {"away_from": 0.3}),
}


@pytest.mark.parametrize("name", list(UNARY))
@hsettings(15)
@given(shape=shapes, seed=seeds)
def test_unary(device, name, shape, seed):
    fn, ref, domain = UNARY[name]
    x = rand(shape, seed, **domain)
    if name == "clip":  # keep off both bounds
        x = np.where(np.abs(x - 1.0) < 0.1, 1.3, x)
    check_unary(fn, ref, x, device, rtol64=1e-10, atol64=1e-12)


def test_erf_matches_math_erf(device):
    x = np.linspace(-5, 5, 41)
    assert_close(gg.erf(T(x, device)), [math.erf(v) for v in x], rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("name", ["sigmoid", "tanh", "gelu", "gelu_tanh", "relu", "leaky_relu"])
def test_no_overflow_warnings_at_extremes(device, name):
    fn, ref, _ = UNARY[name]
    x = np.array([-1000.0, -100.0, -1.0, 0.5, 100.0, 1000.0])
    for dtype in (gg.float32, gg.float64):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            t = T(x, device, dtype=dtype, requires_grad=True)
            y = fn(t)
            y.sum().backward()
        with np.errstate(all="ignore"):
            expected = ref(x)
        assert_close(y, expected, rtol=1e-6, atol=1e-6)
        grad = t.grad.numpy()
        assert np.all(np.isfinite(grad)), grad
    if name == "sigmoid":
        np.testing.assert_array_equal(y.numpy()[[0, -1]], [0.0, 1.0])
        np.testing.assert_array_equal(grad[[0, -1]], [0.0, 0.0])


@pytest.mark.parametrize("fused", [True, False])
def test_sigmoid_fused_and_composite_agree(device, fused):
    x = rand((3, 4), 1, -8, 8)
    prev = gg.fused_enabled()
    gg.set_fused(fused)
    try:
        t = T(x, device, dtype=gg.float32, requires_grad=True)
        y = gg.sigmoid(t)
        y.backward(gradient=T(np.ones((3, 4)), device, dtype=gg.float32))
        s = _sigmoid(x)
        assert_close(y, s, rtol=1e-5, atol=1e-6, dtype=np.float32)
        assert_close(t.grad, s * (1 - s), rtol=1e-5, atol=1e-6, dtype=np.float32)
        check_grad(gg.sigmoid, [x], device)
    finally:
        gg.set_fused(prev)


# -- binary ops with broadcasting --------------------------------------------------------------
BINARY = {
    "add": (lambda a, b: a + b, np.add, {}, {}),
    "sub": (lambda a, b: a - b, np.subtract, {}, {}),
    "mul": (lambda a, b: a * b, np.multiply, {}, {}),
    "div": (lambda a, b: a / b, np.divide, {}, {"away_from": 0.0, "gap": 0.3}),
    "pow": (lambda a, b: a**b, np.power, {"low": 0.3, "high": 2.5}, {}),
    "maximum": (gg.maximum, np.maximum, {}, {}),
    "minimum": (gg.minimum, np.minimum, {}, {}),
    "gg.add": (gg.add, np.add, {}, {}) if hasattr(gg, "add") else None,
}
BINARY = {k: v for k, v in BINARY.items() if v is not None}


@pytest.mark.parametrize("name", list(BINARY))
@hsettings(20)
@given(shapes=pair_shapes(), seed=seeds)
def test_binary_broadcasting(device, name, shapes, seed):
    fn, ref, dom_a, dom_b = BINARY[name]
    sa, sb = shapes
    a, b = rand(sa, seed, **dom_a), rand(sb, seed + 1, **dom_b)
    if name in ("maximum", "minimum"):  # keep clear of ties (tested on their own below)
        a, b = np.round(a * 2) / 2 + 0.25, np.round(b * 2) / 2  # |a - b| >= 0.25
    out_shape = np.broadcast_shapes(sa, sb)
    y = fn(T(a, device, dtype=gg.float32), T(b, device, dtype=gg.float32))
    assert y.shape == out_shape and y.dtype == np.float32
    assert_close(y, ref(a.astype(np.float32).astype(np.float64), b.astype(np.float32)),
                 rtol=2e-5, atol=2e-6)
    assert_close(fn(T(a, device), T(b, device)), ref(a, b), rtol=1e-12, atol=1e-12)
    check_grad(fn, [a, b], device)
    # gradients are summed back to each input's own shape
    ta, tb = T(a, device, requires_grad=True), T(b, device, requires_grad=True)
    fn(ta, tb).sum().backward()
    assert ta.grad.shape == sa and tb.grad.shape == sb


def test_broadcast_gradient_is_summed(device):
    a = T(np.ones((3, 1)), device, requires_grad=True)
    b = T(np.arange(4.0), device, requires_grad=True)
    (a * b).sum().backward()
    assert_close(a.grad, np.full((3, 1), 6.0))
    assert_close(b.grad, np.full(4, 3.0))


@pytest.mark.parametrize("op", ["maximum", "minimum"])
def test_maximum_minimum_split_ties_evenly(device, op):
    a = T([1.0, 2.0, 3.0, -1.0], device, requires_grad=True)
    b = T([1.0, 0.0, 5.0, -1.0], device, requires_grad=True)
    getattr(gg, op)(a, b).sum().backward()
    wins = [0.5, 1.0, 0.0, 0.5] if op == "maximum" else [0.5, 0.0, 1.0, 0.5]
    assert_close(a.grad, wins)
    assert_close(b.grad, 1 - np.array(wins))
    # against a Python scalar: the scalar takes its half of a tie, the tensor keeps the other
    c = T([0.0, 1.0, -1.0], device, requires_grad=True)
    getattr(gg, op)(c, 0.0).sum().backward()
    assert_close(c.grad, [0.5, 1.0, 0.0] if op == "maximum" else [0.5, 0.0, 1.0])


# -- Python scalars on either side -------------------------------------------------------------
SCALAR_CASES = {
    "t+2": (lambda t: t + 2, lambda x: x + 2, lambda x: np.ones_like(x)),
    "2+t": (lambda t: 2 + t, lambda x: 2 + x, lambda x: np.ones_like(x)),
    "t-2": (lambda t: t - 2, lambda x: x - 2, lambda x: np.ones_like(x)),
    "2-t": (lambda t: 2 - t, lambda x: 2 - x, lambda x: -np.ones_like(x)),
    "t*3": (lambda t: t * 3, lambda x: x * 3, lambda x: np.full_like(x, 3)),
    "3*t": (lambda t: 3 * t, lambda x: 3 * x, lambda x: np.full_like(x, 3)),
    "t/3": (lambda t: t / 3, lambda x: x / 3, lambda x: np.full_like(x, 1 / 3)),
    "3/t": (lambda t: 3 / t, lambda x: 3 / x, lambda x: -3 / x**2),
    "t**2": (lambda t: t**2, lambda x: x**2, lambda x: 2 * x),
    "t**3 (negative base)": (lambda t: (-t) ** 3, lambda x: (-x) ** 3, lambda x: -3 * x**2),
    "t**0.5": (lambda t: t**0.5, np.sqrt, lambda x: 0.5 / np.sqrt(x)),
    "t**-1": (lambda t: t**-1, lambda x: 1 / x, lambda x: -1 / x**2),
    "2**t": (lambda t: 2**t, lambda x: 2.0**x, lambda x: np.log(2) * 2.0**x),
    "0.5**t": (lambda t: 0.5**t, lambda x: 0.5**x, lambda x: np.log(0.5) * 0.5**x),
}


@pytest.mark.parametrize("case", list(SCALAR_CASES))
def test_python_scalars_on_either_side(device, case):
    fn, ref, dref = SCALAR_CASES[case]
    x = np.array([[0.5, 1.5, 2.0], [0.7, 1.1, 3.0]])
    t = T(x, device, dtype=gg.float32, requires_grad=True)
    y = fn(t)
    assert y.dtype == np.float32 and y.shape == x.shape
    assert_close(y, ref(x), rtol=1e-5)
    y.sum().backward()
    assert t.grad.dtype == np.float32
    assert_close(t.grad, dref(x), rtol=1e-5)
    check_grad(fn, [x], device)


def test_pow_tensor_exponent(device):
    a, b = np.array([0.5, 2.0, 3.0]), np.array([2.0, -1.0, 0.5])
    ta, tb = T(a, device, requires_grad=True), T(b, device, requires_grad=True)
    (ta**tb).sum().backward()
    assert_close(ta.grad, b * a ** (b - 1), rtol=1e-12)
    assert_close(tb.grad, a**b * np.log(a), rtol=1e-12)
    # d(a^b)/db at a base <= 0 is taken as 0 (log undefined), and stays finite
    ta, tb = T([0.0, -2.0], device, requires_grad=True), T([2.0, 2.0], device, requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        (ta**tb).sum().backward()
    assert_close(tb.grad, [0.0, 0.0])
    assert_close(ta.grad, [0.0, -4.0])


def test_neg_and_pos(device):
    t = T([1.0, -2.0], device, requires_grad=True)
    (-t).sum().backward()
    assert_close(t.grad, [-1.0, -1.0])
    assert (+t) is t


# -- where --------------------------------------------------------------------------------------
@hsettings(20)
@given(shapes=pair_shapes(3), seed=seeds)
def test_where_broadcasting(device, shapes, seed):
    sc, sa, sb = shapes
    cond = np.random.default_rng(seed).random(sc) > 0.5
    a, b = rand(sa, seed), rand(sb, seed + 1)
    c = T(cond, device)
    assert c.dtype == np.bool_
    y = gg.where(c, T(a, device), T(b, device))
    assert_close(y, np.where(cond, a, b), rtol=0, atol=0)
    check_grad(lambda a, b: gg.where(c, a, b), [a, b], device)
    ta, tb = T(a, device, requires_grad=True), T(b, device, requires_grad=True)
    gg.where(c, ta, tb).sum().backward()
    full = np.broadcast_shapes(sc, sa, sb)
    expect_a = np.broadcast_to(cond, full).astype(float)
    assert ta.grad.shape == sa and tb.grad.shape == sb
    assert np.isclose(ta.grad.numpy().sum(), expect_a.sum())
    assert np.isclose(tb.grad.numpy().sum(), (1 - expect_a).sum())


def test_where_with_scalars_and_comparison_condition(device):
    x = np.array([-1.0, 2.0, -3.0, 4.0])
    t = T(x, device, dtype=gg.float32, requires_grad=True)
    y = gg.where(t > 0, t, 0.0)
    assert y.dtype == np.float32
    y.sum().backward()
    assert_close(y, np.where(x > 0, x, 0))
    assert_close(t.grad, (x > 0).astype(float), dtype=np.float32)
    z = gg.where(t > 0, 1.0, t)
    assert_close(z, np.where(x > 0, 1.0, x))


# -- dtype promotion -----------------------------------------------------------------------------
def test_dtype_promotion_like_numpy(device):
    f16 = T(np.array([1.0, 2.0]), device, dtype=gg.float16, requires_grad=True)
    f32 = T(np.array([1.0, 2.0]), device, dtype=gg.float32, requires_grad=True)
    f64 = T(np.array([3.0, 4.0]), device, dtype=gg.float64, requires_grad=True)
    i64 = T(np.array([1, 2]), device)
    assert i64.dtype == np.int64
    assert (f32 + f64).dtype == np.float64
    assert (f64 * f32).dtype == np.float64
    assert (i64 * 0.5).dtype == np.float64
    assert (i64 / 2).dtype == np.float64
    assert (i64 + 1).dtype == np.int64
    assert (i64 * i64).dtype == np.int64
    assert (i64 + f32).dtype == np.float64  # like NumPy: int64 with float32 needs float64
    assert (f32 + 1.5).dtype == np.float32
    assert (2.5 * f32).dtype == np.float32
    assert (f32**2).dtype == np.float32
    assert (f16 + 1.0).dtype == np.float16
    assert (f16 * f16).dtype == np.float16
    assert gg.exp(f16).dtype == np.float16
    assert (f16 + f32).dtype == np.float32
    for expr in (lambda: (f32 + f64).sum(), lambda: (f16 * f32 + f64).sum(),
                 lambda: (f16 * 2.0 + f16).sum(), lambda: (i64 * f32).sum()):
        f16.grad = f32.grad = f64.grad = None
        expr().backward()
        for t in (f16, f32, f64):
            if t.grad is not None:
                assert t.grad.dtype == t.dtype, (t.dtype, t.grad.dtype)
    f32.grad = None
    (f32 + f64).sum().backward()
    assert_close(f32.grad, [1.0, 1.0], dtype=np.float32)


HALF_OPS = dict(UNARY, **{
    "t**2": (lambda t: t**2, lambda x: x**2, {}),
    "2**t": (lambda t: 2**t, lambda x: 2.0**x, {}),
    "1/t": (lambda t: 1 / t, lambda x: 1 / x, {"away_from": 0.0, "gap": 0.3}),
    "sum": (lambda t: t.sum(axis=-1), lambda x: x.sum(axis=-1), {}),
    "mean": (lambda t: gg.mean(t, axis=0), lambda x: x.mean(axis=0), {}),
    "max": (lambda t: gg.max(t, axis=1), lambda x: x.max(axis=1), {}),
    "softmax": (gg.softmax, lambda x: np.exp(x) / np.exp(x).sum(-1, keepdims=True), {}),
    "logsumexp": (lambda t: gg.logsumexp(t, axis=1),
                  lambda x: np.log(np.exp(x).sum(axis=1)), {}),
    "matmul": (lambda t: t @ t.T, lambda x: x @ x.T, {}),
    "getitem": (lambda t: t[[0, 0, 2]], lambda x: x[[0, 0, 2]], {}),
    "where": (lambda t: gg.where(t > 0, t, 0.0), lambda x: np.where(x > 0, x, 0.0), {}),
})


@pytest.mark.parametrize("name", list(HALF_OPS))
def test_float16_stays_float16(device, name):
    fn, ref, domain = HALF_OPS[name]
    x = rand((3, 3), 5, **domain).astype(np.float16).astype(np.float64)
    t = T(x, device, dtype=gg.float16, requires_grad=True)
    y = fn(t)
    assert y.dtype == np.float16
    assert_close(y, ref(x), rtol=5e-3, atol=5e-3)
    y.sum().backward()
    assert t.grad.dtype == np.float16 and t.grad.shape == x.shape


# -- comparisons ---------------------------------------------------------------------------------
COMPARISONS = {
    "<": (lambda a, b: a < b, np.less),
    "<=": (lambda a, b: a <= b, np.less_equal),
    ">": (lambda a, b: a > b, np.greater),
    ">=": (lambda a, b: a >= b, np.greater_equal),
    "==": (lambda a, b: a == b, np.equal),
    "!=": (lambda a, b: a != b, np.not_equal),
}


@pytest.mark.parametrize("op", list(COMPARISONS))
def test_comparisons_return_bool_without_grad(device, op):
    fn, ref = COMPARISONS[op]
    a = np.array([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]])
    b = np.array([2.0, 2.0, 2.0])
    ta = T(a, device, requires_grad=True)
    tb = T(b, device, requires_grad=True)
    for got, want in ((fn(ta, tb), ref(a, b)), (fn(ta, 2.0), ref(a, 2.0)),
                      (fn(2.0, ta), ref(2.0, a)), (fn(ta, b), ref(a, b))):
        assert got.dtype == np.bool_
        assert not got.requires_grad and got.grad_fn is None
        np.testing.assert_array_equal(got.numpy(), want)


def test_logical_ops(device):
    a = T(np.array([True, True, False, False]), device)
    b = T(np.array([True, False, True, False]), device)
    np.testing.assert_array_equal((a & b).numpy(), [True, False, False, False])
    np.testing.assert_array_equal((a | b).numpy(), [True, True, True, False])
    np.testing.assert_array_equal((a ^ b).numpy(), [False, True, True, False])
    np.testing.assert_array_equal((~a).numpy(), [False, False, True, True])
