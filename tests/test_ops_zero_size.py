"""Every op on zero-size inputs (shapes with a 0 drawn by hypothesis): the forward matches NumPy in
float64, backward gives gradients of the input's shape (zeros where an operand broadcast into an
empty result), and reductions with no identity over an empty axis are a clear ValueError. Also
``gg.linear`` with an empty 1-D input and ``layer_norm`` over ``normalized_shape=(0,)``, both as
in PyTorch."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from _helpers import hsettings
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import gpugrad as gg
import gpugrad.functional as F

EMPTY_SHAPES = hnp.array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=3).filter(
    lambda s: 0 in s)


def _leaf(shape, device, low=0.5, high=2.0, seed=0):
    host = np.random.default_rng(seed).uniform(low, high, size=shape)
    return host, gg.tensor(host, dtype="float64", device=device, requires_grad=True)


UNARY = {
    "exp": (gg.exp, np.exp), "log": (gg.log, np.log), "sqrt": (gg.sqrt, np.sqrt),
    "abs": (gg.abs, np.abs), "sin": (gg.sin, np.sin), "cos": (gg.cos, np.cos),
    "tanh": (gg.tanh, np.tanh), "neg": (lambda x: -x, np.negative),
    "sigmoid": (gg.sigmoid, lambda x: 1 / (1 + np.exp(-x))),
    "relu": (gg.relu, lambda x: np.maximum(x, 0)),
    "leaky_relu": (gg.leaky_relu, lambda x: np.where(x > 0, x, 0.01 * x)),
    "gelu": (gg.gelu, None), "erf": (gg.erf, None), "sign": (gg.sign, np.sign),
    "log1p": (gg.log1p, np.log1p), "expm1": (gg.expm1, np.expm1),
    "square": (gg.square, np.square), "reciprocal": (gg.reciprocal, np.reciprocal),
    "silu": (gg.silu, None), "elu": (gg.elu, None), "softplus": (gg.softplus, None),
    "clip": (lambda x: gg.clip(x, 0.7, 1.5), lambda x: np.clip(x, 0.7, 1.5)),
    "softmax": (lambda x: gg.softmax(x, axis=-1), None),
    "log_softmax": (lambda x: gg.log_softmax(x, axis=-1), None),
    "cumsum": (lambda x: gg.cumsum(x, axis=0), lambda x: np.cumsum(x, axis=0)),
    "flatten": (gg.flatten, np.ravel), "flip": (gg.flip, np.flip),
    "transpose": (lambda x: x.T, lambda x: x.T),
    "reshape": (lambda x: gg.reshape(x, (-1,)), lambda x: x.reshape(-1)),
    "unsqueeze": (lambda x: gg.unsqueeze(x, 0), lambda x: x[None]),
    "tile": (lambda x: gg.tile(x, 2), lambda x: np.tile(x, 2)),
    "repeat": (lambda x: gg.repeat(x, 2, axis=0), lambda x: np.repeat(x, 2, axis=0)),
    "pad": (lambda x: gg.pad(x, 1), lambda x: np.pad(x, 1)),
    "getitem": (lambda x: x[..., :1], lambda x: x[..., :1]),
    "clone": (lambda x: x.clone(), lambda x: x.copy()),
}


def _check_backward(y, leaves):
    y.sum().backward()
    for _host, t in leaves:
        assert t.grad is not None and t.grad.shape == t.shape
        assert np.all(np.isfinite(t.grad.numpy()))


@pytest.mark.parametrize("name", sorted(UNARY))
@hsettings(max_examples=6)
@given(shape=EMPTY_SHAPES)
def test_unary_and_shape_ops_on_empty_inputs(device, name, shape):
    fn, ref = UNARY[name]
    host, x = _leaf(shape, device)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no NumPy warnings either
        y = fn(x)
        if ref is not None:
            want = ref(host)
            assert y.shape == want.shape
            np.testing.assert_array_equal(y.numpy(), want)
        _check_backward(y, [(host, x)])


BINARY = {
    "add": (lambda a, b: a + b, np.add), "sub": (lambda a, b: a - b, np.subtract),
    "mul": (lambda a, b: a * b, np.multiply), "div": (lambda a, b: a / b, np.divide),
    "pow": (lambda a, b: a ** b, np.power), "maximum": (gg.maximum, np.maximum),
    "minimum": (gg.minimum, np.minimum), "logaddexp": (gg.logaddexp, np.logaddexp),
    "where": (lambda a, b: gg.where(a > 1, a, b), lambda a, b: np.where(a > 1, a, b)),
}


@pytest.mark.parametrize("name", sorted(BINARY))
@hsettings(max_examples=6)
@given(shape=EMPTY_SHAPES, broadcast=st.booleans())
def test_binary_ops_on_empty_inputs(device, name, shape, broadcast):
    fn, ref = BINARY[name]
    host_a, a = _leaf(shape, device)
    other = shape[1:] if broadcast else shape  # may be non-empty: its gradient must be zeros
    host_b, b = _leaf(other, device, seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = fn(a, b)
        np.testing.assert_array_equal(y.numpy(), ref(host_a, host_b))
        _check_backward(y, [(host_a, a), (host_b, b)])
    assert not np.any(b.grad.numpy())


REDUCTIONS = {
    "sum": (gg.sum, np.sum), "mean": (gg.mean, None), "prod": (gg.prod, np.prod),
    "logsumexp": (gg.logsumexp, None), "norm": (gg.norm, None),
    "var": (gg.var, None), "std": (gg.std, None),
}


@pytest.mark.parametrize("name", sorted(REDUCTIONS))
@hsettings(max_examples=6)
@given(shape=EMPTY_SHAPES, data=st.data())
def test_reductions_on_empty_inputs(device, name, shape, data):
    fn, ref = REDUCTIONS[name]
    axis = data.draw(st.sampled_from([None, *range(len(shape))]))
    host, x = _leaf(shape, device)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = fn(x, axis=axis)
        if name == "mean":  # sum / count, NaN where nothing is averaged (as torch)
            count = host.size if axis is None else host.shape[axis]
            with np.errstate(invalid="ignore"):
                np.testing.assert_array_equal(y.numpy(), np.sum(host, axis=axis) / count)
        elif ref is not None:
            np.testing.assert_array_equal(y.numpy(), ref(host, axis=axis))
        assert y.shape == np.sum(host, axis=axis).shape
        _check_backward(y, [(host, x)])


@pytest.mark.parametrize("name", ["max", "min", "argmax", "argmin"])
def test_reductions_without_identity_over_an_empty_axis_are_value_errors(device, name):
    x = gg.zeros(2, 0, dtype="float64", device=device)
    fn = getattr(gg, name)
    with pytest.raises(ValueError, match=name):
        fn(x, axis=1)
    with pytest.raises(ValueError, match=name):
        fn(x)
    assert fn(x, axis=0).shape == (0,)  # reducing a non-empty axis of an empty tensor is fine


@hsettings(max_examples=8)
@given(m=st.integers(0, 3), k=st.integers(0, 3), n=st.integers(0, 3), batch=st.booleans())
def test_matmul_and_linear_with_zero_dims(device, m, k, n, batch):
    lead = (2,) if batch else ()
    host_a, a = _leaf(lead + (m, k), device)
    host_w, w = _leaf((n, k), device, seed=1)
    host_b, b = _leaf((n,), device, seed=2)
    y = a @ w.T
    np.testing.assert_allclose(y.numpy(), host_a @ host_w.T)
    _check_backward(y, [(host_a, a), (host_w, w)])
    for t in (a, w):
        t.grad = None
    z = F.linear(a, w, b)
    np.testing.assert_allclose(z.numpy(), host_a @ host_w.T + host_b)
    _check_backward(z, [(host_a, a), (host_w, w), (host_b, b)])
    np.testing.assert_array_equal(b.grad.numpy(), np.full(n, m * (2 if batch else 1), float))


def test_linear_with_an_empty_1d_input(device):
    x = gg.zeros(0, dtype="float64", device=device, requires_grad=True)
    w = gg.zeros(3, 0, dtype="float64", device=device, requires_grad=True)
    b = gg.ones(3, dtype="float64", device=device, requires_grad=True)
    y = F.linear(x, w, b)
    assert y.tolist() == [1.0, 1.0, 1.0]
    y.sum().backward()
    assert x.grad.shape == (0,) and w.grad.shape == (3, 0) and b.grad.tolist() == [1.0] * 3


def test_layer_norm_over_an_empty_normalized_shape(device):
    x = gg.ones(2, 0, dtype="float64", device=device, requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = F.layer_norm(x, (0,))
        assert y.shape == (2, 0)
        y.sum().backward()
        assert x.grad.shape == (2, 0)
        module = gg.nn.LayerNorm(0, device=device, dtype="float64")
        assert module(x).shape == (2, 0) and module.weight.shape == (0,)
    with pytest.raises(ValueError, match="normalized_shape"):
        F.layer_norm(x, (-1,))


def test_concatenate_and_stack_with_empty_parts(device):
    host_a, a = _leaf((0, 3), device)
    host_b, b = _leaf((2, 3), device, seed=1)
    y = gg.concatenate([a, b], axis=0)
    np.testing.assert_array_equal(y.numpy(), np.concatenate([host_a, host_b]))
    _check_backward(y, [(host_a, a), (host_b, b)])
    assert b.grad.tolist() == np.ones((2, 3)).tolist()
    host_c, c = _leaf((0, 3), device, seed=2)
    s = gg.stack([a, c])
    assert s.shape == (2, 0, 3)


def test_fp_warnings_are_silent_inside_ops(device):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert gg.exp(gg.tensor(1000.0, device=device)).item() == float("inf")
        x = gg.tensor([0.0, 1000.0, -1.0], dtype="float64", device=device, requires_grad=True)
        y = gg.log(x) + gg.exp(x) + gg.sqrt(x) + 1 / x
        y.sum().backward()
        assert np.isnan(x.grad.numpy()[2]) and np.isinf(x.grad.numpy()[1])
    # ...and only inside ops: the user's own NumPy code keeps NumPy's settings
    with pytest.warns(RuntimeWarning):
        np.exp(np.float64(1000.0))


EMPTY_BATCH = {
    "cross_entropy": lambda x, r: F.cross_entropy(x, _labels(x), reduction=r),
    "cross_entropy_smoothed": lambda x, r: F.cross_entropy(x, _labels(x), reduction=r,
                                                           label_smoothing=0.1),
    "nll_loss": lambda x, r: F.nll_loss(gg.log_softmax(x, axis=1), _labels(x), reduction=r),
    "mse_loss": lambda x, r: F.mse_loss(x, gg.zeros_like(x), reduction=r),
    "bce": lambda x, r: F.binary_cross_entropy(gg.sigmoid(x), gg.zeros_like(x), reduction=r),
    "bce_with_logits": lambda x, r: F.binary_cross_entropy_with_logits(x, gg.zeros_like(x),
                                                                         reduction=r),
}


def _labels(x):
    return gg.zeros(0, dtype="int64", device=x.device)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("name", sorted(EMPTY_BATCH))
def test_losses_on_an_empty_batch(device, name, reduction):
    x = gg.zeros(0, 3, dtype="float64", device=device, requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss = EMPTY_BATCH[name](x, reduction)
        loss.backward()
    value = loss.item()
    assert np.isnan(value) if reduction == "mean" else value == 0.0  # torch's values
    assert x.grad.shape == (0, 3)


@pytest.mark.parametrize("name, fn", [
    ("swapaxes", lambda x: gg.swapaxes(x, 0, 1)),
    ("broadcast_to", lambda x: gg.broadcast_to(x, (2, 0, 3))),
    ("split", lambda x: gg.split(x, 1, axis=1)[0]),
    ("chunk", lambda x: gg.chunk(x, 3, axis=1)[1]),
    ("gather", lambda x: gg.gather(x, 1, gg.zeros(0, 3, dtype="int64", device=x.device))),
    ("take_along_axis", lambda x: gg.take_along_axis(
        x, gg.zeros(0, 1, dtype="int64", device=x.device), axis=1)),
    ("dropout", lambda x: F.dropout(x, 0.5)),
    ("index_array", lambda x: x[gg.zeros(0, dtype="int64", device=x.device)]),
    ("mask", lambda x: x[x > 0]),
    ("logsumexp_over_empty", lambda x: gg.logsumexp(x, axis=0)),
])
def test_more_ops_on_an_empty_batch(device, name, fn):
    x = gg.zeros(0, 3, dtype="float64", device=device, requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = fn(x)
        y.sum().backward()
    assert x.grad.shape == (0, 3)
