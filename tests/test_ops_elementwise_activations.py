"""log1p, expm1, square, reciprocal, logaddexp and the softplus/silu/elu activations: forward
against float64 NumPy on every device, gradients against finite differences, second derivatives
through ``create_graph=True``, and PyTorch where its semantics are the reference."""

from __future__ import annotations

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


def _softplus(x, beta=1.0, threshold=20.0):
    z = beta * x
    with np.errstate(over="ignore"):
        return np.where(z > threshold, x, np.log1p(np.exp(np.minimum(z, threshold))) / beta)


def _sigmoid(x):
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


# name: (gpugrad function, float64 reference, input domain as rand() kwargs)
UNARY = {
    "log1p": (gg.log1p, np.log1p, {"low": -0.7, "high": 3.0}),
    "expm1": (gg.expm1, np.expm1, {}),
    "square": (gg.square, np.square, {}),
    "reciprocal": (gg.reciprocal, np.reciprocal, {"away_from": 0.0, "gap": 0.3}),
    "method_log1p": (lambda t: t.log1p(), np.log1p, {"low": -0.5, "high": 2.0}),
    "method_expm1": (lambda t: t.expm1(), np.expm1, {}),
    "method_square": (lambda t: t.square(), np.square, {}),
    "method_reciprocal": (lambda t: t.reciprocal(), np.reciprocal, {"low": 0.3, "high": 3.0}),
    "logaddexp_scalar": (lambda t: gg.logaddexp(t, 0.5), lambda x: np.logaddexp(x, 0.5), {}),
    "scalar_logaddexp": (lambda t: gg.logaddexp(-1.0, t), lambda x: np.logaddexp(-1.0, x), {}),
}


@pytest.mark.parametrize("name", list(UNARY))
@hsettings(10)
@given(shape=shapes, seed=seeds)
def test_unary(device, name, shape, seed):
    fn, ref, domain = UNARY[name]
    x = rand(shape, seed, **domain)
    check_unary(fn, ref, x, device)
    y16 = fn(T(x, device, dtype=gg.float16))
    assert y16.dtype == np.float16


def test_log1p_expm1_exact_near_zero(device):
    x = np.array([1e-12, -3e-10, 2e-8])
    for fn, ref in ((gg.log1p, np.log1p), (gg.expm1, np.expm1)):
        t = T(x, device, requires_grad=True)
        y = fn(t)
        assert_close(y, ref(x), rtol=1e-14, atol=0)  # log(1 + x) would lose every digit here
        y.sum().backward()
        assert_close(t.grad, 1 / (1 + x) if fn is gg.log1p else np.exp(x), rtol=1e-14, atol=0)


@hsettings(15)
@given(shapes=pair_shapes(), seed=seeds)
def test_logaddexp_broadcasting(device, shapes, seed):
    sa, sb = shapes
    a, b = rand(sa, seed, -4, 4), rand(sb, seed + 1, -4, 4)
    y = gg.logaddexp(T(a, device), T(b, device))
    assert_close(y, np.logaddexp(a, b), rtol=1e-12, atol=1e-13, dtype=np.float64)
    check_grad(gg.logaddexp, [a, b], device)
    ta, tb = T(a, device, requires_grad=True), T(b, device, requires_grad=True)
    ta.logaddexp(tb).sum().backward()
    assert ta.grad.shape == sa and tb.grad.shape == sb


def test_logaddexp_extremes_and_errors(device):
    a = np.array([1000.0, -1000.0, 0.0, 800.0])
    b = np.array([999.0, -1001.0, -800.0, 800.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ta, tb = T(a, device, requires_grad=True), T(b, device, requires_grad=True)
        y = gg.logaddexp(ta, tb)
        y.sum().backward()
    assert_close(y, np.logaddexp(a, b), rtol=1e-14)
    wa = 1 / (1 + np.exp(b - a))  # softmax weight of a
    assert_close(ta.grad, wa, rtol=1e-12, atol=1e-300)
    assert_close(tb.grad, 1 - wa, rtol=1e-12, atol=1e-300)
    check_grad(lambda s: gg.grad(gg.logaddexp(s, 0.3).sum(), [s], create_graph=True)[0],
               [np.array([-1.0, 0.2, 2.0])], device)
    with pytest.raises(ValueError, match=r"logaddexp.*\(3,\).*\(2,\)"):
        gg.logaddexp(T(np.ones(3), device), T(np.ones(2), device))
    with pytest.raises(TypeError, match="logaddexp: expected floating-point.*int64"):
        gg.logaddexp(T(np.ones(3), device), T(np.array([1, 2, 3]), device))


@pytest.mark.parametrize("name", ["log1p", "expm1", "reciprocal"])
def test_float_only_ops_reject_integers(device, name):
    with pytest.raises(TypeError, match=f"{name}: expected a floating-point tensor.*int64"):
        getattr(gg, name)(T(np.array([1, 2]), device))


def test_square_of_integers_stays_integer(device):
    y = gg.square(T(np.array([-3, 2]), device))
    assert y.dtype == np.int64
    np.testing.assert_array_equal(y.numpy(), [9, 4])


def test_pow_matches_torch_at_zero_base_and_zero_exponent(device):
    """d(a^b)/da at b = 0 is 0 (PyTorch), not 0·a^-1 = NaN at a = 0; likewise for ``t ** 0``."""
    torch = pytest.importorskip("torch")
    a = np.array([0.0, 0.0, 0.0, 2.0, 1.5, 0.0])
    b = np.array([0.0, 2.0, 1.0, 0.0, -1.0, 0.5])
    ta, tb = T(a, device, requires_grad=True), T(b, device, requires_grad=True)
    with np.errstate(divide="ignore"):  # 0^-0.5 in the rule for 0^0.5: +inf, as in PyTorch
        (ta**tb).sum().backward()
    ra, rb = torch.tensor(a, requires_grad=True), torch.tensor(b, requires_grad=True)
    (ra**rb).sum().backward()
    assert_close(ta.grad, ra.grad.numpy(), rtol=1e-12)  # includes +inf at 0^0.5
    assert_close(tb.grad, rb.grad.numpy(), rtol=1e-12)
    for e in (0, 0.0, 1, 2, 3):
        t = T([0.0, 1.5, -2.0], device, requires_grad=True)
        (t**e).sum().backward()
        r = torch.tensor([0.0, 1.5, -2.0], requires_grad=True, dtype=torch.float64)
        (r**e).sum().backward()
        assert_close(t.grad, r.grad.numpy(), rtol=1e-12)
    # second derivative of x**1 at 0 goes through d(x^0)/dx: 0, not NaN
    t = T([0.0, 2.0], device, requires_grad=True)
    (g,) = gg.grad((t**1).sum(), [t], create_graph=True)
    (gg_,) = gg.grad(g.sum(), [t])
    assert_close(gg_, [0.0, 0.0])


ACTIVATIONS = {
    "softplus": (gg.softplus, _softplus, {"low": -5, "high": 5}),
    "softplus_beta": (lambda t: gg.softplus(t, beta=2.5, threshold=3.0),
                      lambda x: _softplus(x, 2.5, 3.0), {"away_from": 1.2, "gap": 0.1}),
    "silu": (gg.silu, lambda x: x * _sigmoid(x), {"low": -6, "high": 6}),
    "elu": (gg.elu, lambda x: np.where(x > 0, x, np.expm1(x)), {"away_from": 0.0}),
    "elu_alpha": (lambda t: gg.elu(t, alpha=0.4), lambda x: np.where(x > 0, x, 0.4 * np.expm1(x)),
                  {"away_from": 0.0}),
    "method_silu": (lambda t: t.silu(), lambda x: x * _sigmoid(x), {}),
}


@pytest.mark.parametrize("name", list(ACTIVATIONS))
@hsettings(10)
@given(shape=shapes, seed=seeds)
def test_activation(device, name, shape, seed):
    fn, ref, domain = ACTIVATIONS[name]
    check_unary(fn, ref, rand(shape, seed, **domain), device)


@pytest.mark.parametrize("name", ["softplus", "softplus_beta", "silu", "elu_alpha"])
def test_activation_second_derivative(device, name):
    """The backward rules are themselves differentiable: gradcheck the gradient function."""
    fn, _, domain = ACTIVATIONS[name]
    x = rand((2, 3), 7, **domain)

    def first(t):
        return gg.grad(fn(t).sum(), [t], create_graph=True)[0]

    check_grad(first, [x], device)


@pytest.mark.parametrize("name", ["softplus", "silu", "elu"])
def test_activation_no_overflow_at_extremes(device, name):
    fn, ref, _ = ACTIVATIONS[name]
    x = np.array([-1000.0, -30.0, -1.0, 0.5, 30.0, 1000.0])
    for dtype in (gg.float16, gg.float32, gg.float64):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            t = T(x, device, dtype=dtype, requires_grad=True)
            y = fn(t)
            y.sum().backward()
        assert y.dtype == dtype and t.grad.dtype == dtype
        if dtype != gg.float16:  # 1000 is not a float16
            with np.errstate(over="ignore"):
                assert_close(y, ref(x), rtol=1e-6, atol=1e-6)
        assert np.all(np.isfinite(t.grad.numpy()))


def test_activations_match_torch(device):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    # x*beta on both sides of the threshold, and exactly at it (not above: the log1p branch)
    x = np.array([-50.0, -3.0, -0.2, 0.0, 0.3, 4.0, 7.9, 8.0, 8.1, 12.0, 40.0])
    cases = [
        (lambda t: gg.softplus(t), lambda t: F.softplus(t)),
        (lambda t: gg.softplus(t, beta=2.5, threshold=20), lambda t: F.softplus(t, 2.5, 20)),
        (lambda t: gg.softplus(t, beta=0.5, threshold=1.5), lambda t: F.softplus(t, 0.5, 1.5)),
        (gg.silu, F.silu),
        (gg.elu, F.elu),
        (lambda t: gg.elu(t, alpha=0.3), lambda t: F.elu(t, alpha=0.3)),
        (lambda t: gg.elu(t, alpha=2.0), lambda t: F.elu(t, alpha=2.0)),
    ]
    for ours, theirs in cases:
        t = T(x, device, requires_grad=True)
        y = ours(t)
        y.backward(gradient=T(np.linspace(0.5, 1.5, x.size), device))
        r = torch.tensor(x, requires_grad=True)
        ry = theirs(r)
        ry.backward(torch.tensor(np.linspace(0.5, 1.5, x.size)))
        assert_close(y, ry.detach().numpy(), rtol=1e-12, atol=1e-14)
        assert_close(t.grad, r.grad.numpy(), rtol=1e-12, atol=1e-14)


def test_activations_reject_integer_input(device):
    i = T(np.array([1, -2, 3]), device)
    for fn, name in ((gg.softplus, "softplus"), (gg.silu, "silu"), (gg.elu, "elu")):
        with pytest.raises(TypeError, match=f"{name}: expected a floating-point tensor.*int64"):
            fn(i)
    with pytest.raises(ValueError, match="softplus: beta"):
        gg.softplus(T(np.ones(2), device), beta=0)
