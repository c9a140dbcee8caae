"""Edge cases of the core ops: selects instead of mask products (ReLU, maximum/minimum) so an
inf/NaN upstream gradient never leaks into a dead or losing input, float16 mean/sum accumulation,
empty reductions and 0-d softmax, NumPy-scalar bounds, integer sigmoid, and error messages that
name the op. Compared with PyTorch where it is installed, else with float64 NumPy."""

from __future__ import annotations

import numpy as np
import pytest

import gpugrad as gg

INF, NAN = float("inf"), float("nan")


def _np(t) -> np.ndarray:
    return t.numpy() if isinstance(t, gg.Tensor) else np.asarray(t)


# -- 1. ReLU: a select, not g * mask --------------------------------------------------------
@pytest.mark.filterwarnings("ignore:divide by zero")
def test_relu_sqrt_grad_matches_torch(device):
    torch = pytest.importorskip("torch")
    x = gg.tensor([-1.0, 0.0, 4.0], device=device, requires_grad=True)
    gg.sqrt(gg.relu(x)).sum().backward()
    t = torch.tensor([-1.0, 0.0, 4.0], requires_grad=True)
    torch.sqrt(torch.relu(t)).sum().backward()
    np.testing.assert_array_equal(_np(x.grad), t.grad.numpy())


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_relu_nonfinite_upstream_is_zero_at_dead_units(device, dtype):
    rng = np.random.default_rng(0)
    xs = rng.standard_normal((37, 53)).astype(dtype)
    g = rng.standard_normal((37, 53)).astype(dtype)
    g[::3, ::2] = np.inf
    g[1::4, 1::3] = -np.inf
    g[2::5] = np.nan
    x = gg.tensor(xs, device=device, requires_grad=True)
    gg.relu(x).backward(gradient=gg.tensor(g, device=device))
    want = np.where(xs > 0, g, 0).astype(dtype)
    assert x.grad.dtype == dtype
    np.testing.assert_array_equal(_np(x.grad), want)


def test_relu_select_keeps_non_contiguous_and_graph_mode(device):
    # a transposed (non-contiguous) upstream gradient, and create_graph=True (the Tensor path)
    xs = np.array([[-1.0, 2.0, 0.0], [3.0, -4.0, 5.0]], np.float32)
    x = gg.tensor(xs, device=device, requires_grad=True)
    y = gg.relu(x.T)
    g = np.array([[INF, 1.0], [2.0, NAN], [NAN, 3.0]], np.float32)
    y.backward(gradient=gg.tensor(g, device=device))
    np.testing.assert_array_equal(_np(x.grad), np.where(xs.T > 0, g, 0).T)
    x2 = gg.tensor(xs, device=device, requires_grad=True)
    (gx,) = gg.grad(gg.relu(x2).sum(), [x2], create_graph=True)
    np.testing.assert_array_equal(_np(gx), (xs > 0).astype(np.float32))


# -- 2. maximum / minimum: each side from its own mask ----------------------------------------
@pytest.mark.filterwarnings("ignore:divide by zero", "ignore:invalid value")
@pytest.mark.parametrize("name", ["maximum", "minimum"])
def test_extremum_grads_match_torch_with_nonfinite_upstream(device, name):
    torch = pytest.importorskip("torch")
    av = [0.0, 4.0, 2.0, 1.0, -3.0, 0.0]  # max(0, -1) and min(0, 1) are 0: inf upstream there
    bv = [-1.0, 1.0, 2.0, 5.0, 0.0, 1.0]
    a = gg.tensor(av, device=device, requires_grad=True)
    b = gg.tensor(bv, device=device, requires_grad=True)
    gg.sqrt(gg.abs(getattr(gg, name)(a, b))).sum().backward()  # inf upstream at 0
    ta = torch.tensor(av, requires_grad=True)
    tb = torch.tensor(bv, requires_grad=True)
    torch.sqrt(torch.abs(getattr(torch, name)(ta, tb))).sum().backward()
    np.testing.assert_array_equal(_np(a.grad), ta.grad.numpy())
    np.testing.assert_array_equal(_np(b.grad), tb.grad.numpy())


@pytest.mark.parametrize("name", ["maximum", "minimum"])
def test_extremum_grads_match_torch_nan_ties_broadcast(device, name):
    torch = pytest.importorskip("torch")
    av = np.array([[1.0, NAN, 2.0], [3.0, 3.0, -1.0]], np.float32)
    bv = np.array([3.0, 0.0, 2.0], np.float32)
    g = np.array([[INF, 1.0, 2.0], [NAN, 4.0, 5.0]], np.float32)
    a = gg.tensor(av, device=device, requires_grad=True)
    b = gg.tensor(bv, device=device, requires_grad=True)
    getattr(gg, name)(a, b).backward(gradient=gg.tensor(g, device=device))
    ta = torch.tensor(av, requires_grad=True)
    tb = torch.tensor(bv, requires_grad=True)
    getattr(torch, name)(ta, tb).backward(torch.tensor(g))
    np.testing.assert_array_equal(_np(a.grad), ta.grad.numpy())
    np.testing.assert_array_equal(_np(b.grad), tb.grad.numpy())


def test_maximum_with_scalar_and_second_order(device):
    x = gg.tensor([-1.0, 0.0, 2.0], device=device, requires_grad=True)
    y = gg.maximum(x, 0.0) ** 2
    (gx,) = gg.grad(y.sum(), [x], create_graph=True)
    np.testing.assert_allclose(_np(gx), [0.0, 0.0, 4.0])
    gx.sum().backward()
    np.testing.assert_allclose(_np(x.grad), [0.0, 0.5, 2.0])  # the tie at 0 gets half


# -- 3. float16 mean -------------------------------------------------------------------------
def test_float16_mean_grad_large_count(device):
    torch = pytest.importorskip("torch")
    x = gg.zeros(256, 256, dtype=np.float16, device=device, requires_grad=True)
    gg.mean(x).backward()
    t = torch.zeros(256, 256, dtype=torch.float16, requires_grad=True)
    t.mean().backward()
    assert x.grad.dtype == np.float16
    np.testing.assert_array_equal(_np(x.grad), t.grad.numpy())


def test_float16_mean_grad_over_axis(device):
    x = gg.zeros(70000, 2, dtype=np.float16, device=device, requires_grad=True)
    gg.mean(x, axis=0).backward(gradient=gg.tensor([1.0, 2.0], dtype=np.float16, device=device))
    want = (np.array([1.0, 2.0]) / 70000).astype(np.float16)
    np.testing.assert_array_equal(_np(x.grad)[0], want)
    assert (_np(x.grad) != 0).all()


# -- 4. float16 sums accumulate in float32 ---------------------------------------------------
def _f16_data(shape=(4096, 4)):
    rng = np.random.default_rng(0)
    return np.abs(rng.standard_normal(shape)).astype(np.float16)


def test_float16_sum_over_strided_axis(device):
    up = _f16_data()
    ref = up.astype(np.float64).sum(0)
    out = gg.sum(gg.tensor(up, device=device), axis=0)
    assert out.dtype == np.float16
    np.testing.assert_allclose(_np(out).astype(np.float64), ref, rtol=2e-3)


def test_float16_broadcast_gradient_sums_in_float32(device):
    g = _f16_data()
    ref = g.astype(np.float64).sum(0, keepdims=True)
    b = gg.zeros(1, 4, dtype=np.float16, device=device, requires_grad=True)
    a = gg.zeros(4096, 4, dtype=np.float16, device=device)
    (a + b).backward(gradient=gg.tensor(g, device=device))
    assert b.grad.dtype == np.float16
    np.testing.assert_allclose(_np(b.grad).astype(np.float64), ref, rtol=2e-3)


def test_float16_linear_bias_gradient(device):
    g = _f16_data()
    x = gg.zeros(4096, 3, dtype=np.float16, device=device)
    w = gg.zeros(4, 3, dtype=np.float16, device=device, requires_grad=True)
    b = gg.zeros(4, dtype=np.float16, device=device, requires_grad=True)
    gg.linear(x, w, b).backward(gradient=gg.tensor(g, device=device))
    assert b.grad.dtype == np.float16
    np.testing.assert_allclose(_np(b.grad).astype(np.float64), g.astype(np.float64).sum(0),
                               rtol=2e-3)


# -- 5. empty inputs and 0-d softmax ---------------------------------------------------------
@pytest.mark.parametrize("name", ["max", "min"])
def test_extremum_over_non_empty_axis_of_empty_tensor(device, name):
    x = gg.zeros(0, 3, device=device, requires_grad=True)
    y = getattr(gg, name)(x, axis=1)
    assert y.shape == (0,)
    y.sum().backward()
    assert x.grad.shape == (0, 3)
    assert getattr(gg, name)(x, axis=1, keepdims=True).shape == (0, 1)


@pytest.mark.parametrize("name", ["max", "min", "argmax", "argmin"])
@pytest.mark.parametrize("axis", [0, None, (0, 1)])
def test_extremum_over_empty_axis_names_op_axis_shape(device, name, axis):
    if axis == (0, 1) and name.startswith("arg"):
        pytest.skip("argmax/argmin take one axis")
    with pytest.raises(ValueError, match=rf"{name}: .*axis 0 of length 0.*\(0, 3\)"):
        getattr(gg, name)(gg.zeros(0, 3, device=device), axis=axis)


@pytest.mark.parametrize("keepdims", [False, True])
def test_logsumexp_empty_axis_is_minus_inf(device, keepdims):
    torch = pytest.importorskip("torch")
    x = gg.zeros(4, 0, device=device, requires_grad=True)
    y = gg.logsumexp(x, axis=1, keepdims=keepdims)
    want = torch.logsumexp(torch.zeros(4, 0), 1, keepdim=keepdims).numpy()
    assert y.shape == want.shape and y.dtype == np.float32
    np.testing.assert_array_equal(_np(y), want)
    y.sum().backward()
    assert x.grad.shape == (4, 0)
    full = gg.logsumexp(gg.zeros(0, 3, device=device))
    assert full.shape == () and _np(full) == -np.inf


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_softmax_empty_axis(device, name):
    torch = pytest.importorskip("torch")
    x = gg.zeros(4, 0, device=device, requires_grad=True)
    y = getattr(gg, name)(x, axis=1)
    assert y.shape == tuple(getattr(torch, name)(torch.zeros(4, 0), 1).shape) == (4, 0)
    y.sum().backward()
    assert x.grad.shape == (4, 0)
    assert getattr(gg, name)(gg.zeros(0, 3, device=device), axis=1).shape == (0, 3)


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
@pytest.mark.parametrize("axis", [0, -1])
def test_softmax_0d_matches_torch(device, name, axis):
    torch = pytest.importorskip("torch")
    x = gg.tensor(2.5, device=device, requires_grad=True)
    y = getattr(gg, name)(x, axis=axis)
    t = torch.tensor(2.5, requires_grad=True)
    ty = getattr(torch, name)(t, axis)
    assert y.shape == () and y.dtype == np.float32
    np.testing.assert_array_equal(_np(y), ty.detach().numpy())
    (y * 3).backward()
    (ty * 3).backward()
    np.testing.assert_array_equal(_np(x.grad), t.grad.numpy())
    with pytest.raises(ValueError, match=name):
        getattr(gg, name)(x, axis=1)


# -- 6. NumPy-scalar bounds / slope, tensor bounds -------------------------------------------
@pytest.mark.parametrize("lo,hi", [(np.float64(1.0), 2.5), (None, np.float64(2.5)),
                                   (np.float32(1.0), np.array(2.5)), (1, np.int64(2))])
def test_clip_numpy_scalar_bounds_keep_dtype(device, lo, hi):
    xs = np.array([0.5, 2.0, 3.0], np.float32)
    x = gg.tensor(xs, device=device, requires_grad=True)
    y = gg.clip(x, lo, hi)
    y.sum().backward()
    assert y.dtype == np.float32 and x.grad.dtype == np.float32
    lo_, hi_ = (None if v is None else float(v) for v in (lo, hi))
    np.testing.assert_array_equal(_np(y), np.clip(xs, lo_, hi_))
    inside = (xs >= (-np.inf if lo_ is None else lo_)) & (xs <= (np.inf if hi_ is None else hi_))
    np.testing.assert_array_equal(_np(x.grad), inside.astype(np.float32))


def test_clip_nonfinite_upstream_is_zero_outside(device):
    x = gg.tensor([0.5, 2.0, 3.0], device=device, requires_grad=True)
    gg.clip(x, 1.0, 2.5).backward(gradient=gg.tensor([INF, NAN, INF], device=device))
    got = _np(x.grad)
    assert got[0] == 0 and np.isnan(got[1]) and got[2] == 0


def test_clip_tensor_bounds_raise_type_error(device):
    with pytest.raises(TypeError, match="clip"):
        gg.clip(gg.ones(3, device=device), gg.zeros(3, device=device), gg.ones(3, device=device))
    with pytest.raises(TypeError, match="clip: max"):
        gg.clip(gg.ones(3, device=device), 0.0, [1.0, 2.0, 3.0])


def test_leaky_relu_numpy_scalar_slope_keeps_dtype(device):
    torch = pytest.importorskip("torch")
    xs = np.array([-2.0, 0.0, 3.0], np.float32)
    x = gg.tensor(xs, device=device, requires_grad=True)
    y = gg.leaky_relu(x, np.float64(0.2))
    y.sum().backward()
    t = torch.tensor(xs, requires_grad=True)
    ty = torch.nn.functional.leaky_relu(t, 0.2)
    ty.sum().backward()
    assert y.dtype == np.float32 and x.grad.dtype == np.float32
    np.testing.assert_array_equal(_np(y), ty.detach().numpy())
    np.testing.assert_array_equal(_np(x.grad), t.grad.numpy())


# -- 7. sigmoid on integer tensors -----------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.int16, np.int8, np.bool_])
def test_sigmoid_int_like_exp_on_both_paths(device, fused, dtype):
    xs = np.array([1, 0, 1], dtype) if dtype == np.bool_ else np.array([1, 2, -3], dtype)
    y = gg.sigmoid(gg.tensor(xs, device=device))
    want_dtype = gg.exp(gg.tensor(xs, device=device)).dtype
    assert y.dtype == want_dtype
    ref = 1 / (1 + np.exp(-xs.astype(np.float64)))
    tol = 1e-3 if want_dtype == np.float16 else 1e-6
    np.testing.assert_allclose(_np(y).astype(np.float64), ref, rtol=tol)


# -- 8. error messages -----------------------------------------------------------------------
@pytest.mark.parametrize("op", ["__lt__", "__le__", "__gt__", "__ge__", "__eq__", "__ne__"])
def test_comparison_shape_mismatch_names_op(device, op):
    a, b = gg.ones(2, 3, device=device), gg.ones(4, 5, device=device)
    with pytest.raises(ValueError, match=r"shapes \(2, 3\) and \(4, 5\) cannot be broadcast"):
        getattr(a, op)(b)


def test_logical_shape_mismatch_names_op(device):
    a = gg.ones(2, 3, device=device) > 0
    b = gg.ones(4, 5, device=device) > 0
    with pytest.raises(ValueError, match=r"logical_and.*\(2, 3\) and \(4, 5\)"):
        a & b
    with pytest.raises(ValueError, match=r"logical_or.*\(2, 3\) and \(4, 5\)"):
        a | b


@pytest.mark.parametrize("shape", [(-2, -3), (-2, 3), (6, -4)])
def test_reshape_below_minus_one_names_reshape(device, shape):
    with pytest.raises(ValueError, match=r"reshape: invalid shape .*\(2, 3\)"):
        gg.ones(2, 3, device=device).reshape(*shape)


@pytest.mark.parametrize("axis", [(0, 1), (0, -1), (1,), [2, 0]])
def test_unsqueeze_tuple_axis_like_expand_dims(device, axis):
    xs = np.arange(6.0, dtype=np.float32).reshape(2, 3)
    x = gg.tensor(xs, device=device, requires_grad=True)
    y = gg.unsqueeze(x, axis)
    want = np.expand_dims(xs, tuple(axis))
    assert y.shape == want.shape
    np.testing.assert_array_equal(_np(y), want)
    y.sum().backward()
    assert x.grad.shape == (2, 3)
    with pytest.raises(ValueError, match="unsqueeze"):
        gg.unsqueeze(x, (0, 0))


@pytest.mark.parametrize("name", ["argmax", "argmin"])
def test_argmax_bad_axis_names_op_and_shape(device, name):
    x = gg.ones(2, 3, device=device)
    with pytest.raises(ValueError, match=rf"{name}: .*axis 4.*\(2, 3\)"):
        getattr(gg, name)(x, axis=4)
    with pytest.raises(TypeError, match=name):
        getattr(gg, name)(x, axis=(0, 1))
    assert getattr(gg, name)(x, axis=-1).shape == (2,)
    assert _np(getattr(gg, name)(gg.tensor([1.0, 3.0, 2.0], device=device))) == \
        (1 if name == "argmax" else 0)


def test_int_negative_power_names_pow(device):
    x = gg.tensor([1, 2], device=device)
    with pytest.raises(ValueError, match="pow: integers to negative integer powers"):
        x ** -1
    with pytest.raises(ValueError, match="pow"):
        x ** np.int64(-2)
    with pytest.raises(ValueError, match="pow"):
        2 ** gg.tensor([-1, 1], device=device) if device == "cpu" else x ** -3
    np.testing.assert_array_equal(_np(x ** 2), [1, 4])
    np.testing.assert_allclose(_np(x ** -1.0), [1.0, 0.5])
    np.testing.assert_allclose(_np(gg.tensor([1.0, 2.0], device=device) ** -1), [1.0, 0.5])


def test_int_negative_array_power_names_pow():  # NumPy checks array exponents (CPU only)
    with pytest.raises(ValueError, match="pow: integers to negative integer powers"):
        gg.tensor([1, 2]) ** gg.tensor([-1, 1])


@pytest.mark.parametrize("dtype", [np.int64, np.float32, np.uint8])
def test_logical_ops_reject_non_bool(device, dtype):
    x = gg.tensor(np.array([1, 2], dtype), device=device)
    m = gg.tensor([True, False], device=device)
    with pytest.raises(TypeError, match="logical_not"):
        _ = ~x
    with pytest.raises(TypeError, match="logical_and"):
        x & m
    with pytest.raises(TypeError, match="logical_or"):
        m | x
    with pytest.raises(TypeError, match="logical_xor"):
        x ^ x
    with pytest.raises(TypeError, match="logical_and"):
        m & 1


def test_logical_ops_on_bools_still_work(device):
    m = gg.tensor([True, False, True], device=device)
    n = gg.tensor([True, True, False], device=device)
    np.testing.assert_array_equal(_np(m & n), [True, False, False])
    np.testing.assert_array_equal(_np(m | n), [True, True, True])
    np.testing.assert_array_equal(_np(m ^ n), [False, True, True])
    np.testing.assert_array_equal(_np(~m), [False, True, False])
    np.testing.assert_array_equal(_np(m & True), [True, False, True])
    np.testing.assert_array_equal(_np(False | m), [True, False, True])
