"""The statistical reductions (var std prod norm cumsum): forward against float64 NumPy on every
device, gradients against finite differences, second derivatives, and PyTorch where its semantics
are the rule; bad axes for every one of these that takes one."""

from __future__ import annotations

import math

import numpy as np
import pytest
from _helpers import T, assert_close, check_grad, hsettings, rand, seeds, shape_and_axis
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import gpugrad as gg

shapes_axes = shape_and_axis(min_dims=1, max_dims=3, max_side=4)


def _count(shape, axis):
    axes = range(len(shape)) if axis is None else (axis,) if isinstance(axis, int) else axis
    return math.prod(shape[a] for a in axes)


def _second(fn):
    """x -> d(sum fn(x))/dx, recorded (create_graph=True) so it can be differentiated again."""
    return lambda t: gg.grad(fn(t).sum(), [t], create_graph=True)[0]


def _torch():
    return pytest.importorskip("torch")


# -- var / std -----------------------------------------------------------------------------------
@pytest.mark.parametrize("op", ["var", "std"])
@hsettings(20)
@given(sa=shapes_axes, keepdims=st.booleans(), correction=st.sampled_from([0, 1, 2]),
       seed=seeds)
def test_var_std(device, op, sa, keepdims, correction, seed):
    shape, axis = sa
    if _count(shape, axis) <= correction:
        correction = 0
    x = rand(shape, seed)
    fn = getattr(gg, op)
    ref = getattr(np, op)(x, axis=axis, keepdims=keepdims, ddof=correction)
    y = fn(T(x, device), axis, keepdims, correction=correction)
    assert_close(y, ref, rtol=1e-10, atol=1e-12, dtype=np.float64)
    y32 = fn(T(x, device, dtype=gg.float32), axis=axis, keepdims=keepdims, correction=correction)
    assert_close(y32, ref, rtol=1e-4, atol=1e-5, dtype=np.float32)
    if op == "std" and np.any(ref == 0):  # one element, correction 0: the kink at std = 0
        return
    check_grad(lambda t: fn(t, axis=axis, keepdims=keepdims, correction=correction), [x], device)


def test_var_std_match_torch(device):
    torch = _torch()
    x = rand((3, 4, 5), 3)
    for op in ("var", "std"):
        for kw in ({}, {"axis": 1}, {"axis": (0, 2), "keepdims": True}, {"axis": -1,
                                                                          "correction": 0},
                   {"axis": (1, 2), "correction": 2}):
            t = T(x, device, requires_grad=True)
            y = getattr(gg, op)(t, **kw)
            (y * T(np.ones(y.shape) * 0.5, device)).sum().backward()
            r = torch.tensor(x, requires_grad=True)
            tkw = {"dim": kw.get("axis"), "keepdim": kw.get("keepdims", False),
                   "correction": kw.get("correction", 1)}
            ry = getattr(torch, op)(r, **tkw)
            (ry * 0.5).sum().backward()
            assert_close(y, ry.detach().numpy(), rtol=1e-12, atol=1e-14)
            assert_close(t.grad, r.grad.numpy(), rtol=1e-10, atol=1e-14)
    # std of a constant row: 0 with a 0 gradient (PyTorch's choice at the kink), not NaN
    c = np.array([[2.0, 2.0, 2.0], [1.0, 2.0, 4.0]])
    t = T(c, device, requires_grad=True)
    gg.std(t, axis=1).sum().backward()
    r = torch.tensor(c, requires_grad=True)
    torch.std(r, dim=1).sum().backward()
    assert_close(t.grad, r.grad.numpy(), rtol=1e-12)
    assert np.all(t.grad.numpy()[0] == 0)


def test_var_too_few_elements_is_inf_or_nan_like_torch(device):
    torch = _torch()
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch warns about degrees of freedom <= 0
        for x, c in (([1.5], 1), ([1.0, 2.0], 3), ([1.0, 1.0], 2)):
            got = gg.var(T(np.array(x), device), correction=c).item()
            want = torch.var(torch.tensor(x, dtype=torch.float64), correction=c).item()
            assert (math.isnan(got) and math.isnan(want)) or got == want, (x, c, got, want)


@pytest.mark.parametrize("op", ["var", "std"])
def test_var_std_second_derivative(device, op):
    fn = getattr(gg, op)
    check_grad(_second(lambda t: fn(t, axis=1)), [rand((2, 4), 1)], device)
    check_grad(_second(lambda t: fn(t, correction=0)), [rand((3,), 2)], device)


# -- prod ----------------------------------------------------------------------------------------
@hsettings(20)
@given(sa=shapes_axes, keepdims=st.booleans(), seed=seeds)
def test_prod(device, sa, keepdims, seed):
    shape, axis = sa
    x = rand(shape, seed, 0.5, 1.5) * np.where(rand(shape, seed + 1) > 0, 1, -1)
    y = gg.prod(T(x, device), axis=axis, keepdims=keepdims)
    assert_close(y, np.prod(x, axis=axis, keepdims=keepdims), rtol=1e-12, dtype=np.float64)
    check_grad(lambda t: t.prod(axis=axis, keepdims=keepdims), [x], device)
    # with zeros: prod is multilinear, so central differences are exact there too
    z = x.copy().reshape(-1)
    z[seed % z.size] = 0.0
    check_grad(lambda t: gg.prod(t, axis=axis, keepdims=keepdims), [z.reshape(shape)], device)
    z[(seed + 1) % z.size] = 0.0
    check_grad(lambda t: gg.prod(t, axis=axis, keepdims=keepdims), [z.reshape(shape)], device)


def test_prod_gradient_with_zeros_matches_torch(device):
    torch = _torch()
    x = np.array([[2.0, 0.0, 3.0, 4.0],    # one zero: only the zero gets 2·3·4
                  [0.0, 5.0, 0.0, 1.0],    # two zeros: all 0
                  [1.5, -2.0, 0.5, 3.0]])  # none: prod / x
    for axis in (1, None, 0):
        t = T(x, device, requires_grad=True)
        gg.prod(t, axis=axis).sum().backward()
        r = torch.tensor(x, requires_grad=True)
        (r.prod() if axis is None else r.prod(dim=axis)).sum().backward()
        assert_close(t.grad, r.grad.numpy(), rtol=1e-12, atol=0)
    assert_close(gg.prod(T(x, device), axis=1), np.prod(x, axis=1), rtol=1e-12)


def test_prod_second_derivative_and_integers(device):
    check_grad(_second(lambda t: gg.prod(t, axis=0)), [rand((3, 2), 4, 0.5, 2.0)], device)
    i = gg.prod(T(np.array([[2, 3], [4, 5]]), device), axis=1)
    assert i.dtype.kind == "i"
    np.testing.assert_array_equal(i.numpy(), [6, 20])


# -- norm ----------------------------------------------------------------------------------------
def _norm_ref(x, ord, axis, keepdims):
    a = np.abs(x)
    if ord == 2:
        return np.sqrt(np.sum(a * a, axis=axis, keepdims=keepdims))
    if ord == 1:
        return np.sum(a, axis=axis, keepdims=keepdims)
    return (np.max if ord == math.inf else np.min)(a, axis=axis, keepdims=keepdims)


@pytest.mark.parametrize("ord", [2, 1, math.inf, -math.inf])
@hsettings(15)
@given(sa=shapes_axes, keepdims=st.booleans(), seed=seeds)
def test_norm(device, ord, sa, keepdims, seed):
    shape, axis = sa
    n = math.prod(shape)  # distinct magnitudes, away from 0: no ties, no kinks
    rng = np.random.default_rng(seed)
    x = ((rng.permutation(n) + 1) * 0.3 * rng.choice([-1, 1], n)).reshape(shape)
    y = gg.norm(T(x, device), ord, axis, keepdims)
    assert_close(y, _norm_ref(x, ord, axis, keepdims), rtol=1e-12, dtype=np.float64)
    y32 = T(x, device, dtype=gg.float32).norm(ord, axis=axis, keepdims=keepdims)
    assert_close(y32, _norm_ref(x, ord, axis, keepdims), rtol=1e-5, dtype=np.float32)
    check_grad(lambda t: gg.norm(t, ord, axis=axis, keepdims=keepdims), [x], device)


def test_norm_matches_torch_with_zeros_and_ties(device):
    torch = _torch()
    x = np.array([[3.0, -3.0, 1.0], [0.0, 0.0, 0.0], [0.5, -2.0, 2.0]])
    for ord in (2, 1, math.inf, -math.inf):
        for axis in (1, None):
            t = T(x, device, requires_grad=True)
            gg.norm(t, ord, axis).sum().backward()
            r = torch.tensor(x, requires_grad=True)
            torch.linalg.vector_norm(r, ord, dim=axis).sum().backward()
            assert_close(t.grad, r.grad.numpy(), rtol=1e-12, atol=0)


def test_norm_second_derivative_and_errors(device):
    check_grad(_second(lambda t: gg.norm(t, axis=1)), [rand((2, 3), 5, away_from=0.0)], device)
    x = T(np.ones((2, 3)), device)
    with pytest.raises(ValueError, match=r"norm: ord must be 1, 2, inf or -inf.*\(2, 3\)"):
        gg.norm(x, 3)
    with pytest.raises(TypeError, match="norm: expected a floating-point tensor.*int64"):
        gg.norm(T(np.array([1, 2]), device))
    # float16 squares are summed in float32: 300² + 300² overflows float16 (max 65504)
    h = gg.norm(T(np.array([300.0, 300.0]), device, dtype=gg.float16))
    assert h.dtype == np.float16 and np.isclose(h.item(), 300 * math.sqrt(2), rtol=1e-3)
    s = gg.std(T(np.array([300.0, -300.0]), device, dtype=gg.float16))  # var 180000: not a half
    assert s.dtype == np.float16 and np.isclose(s.item(), 300 * math.sqrt(2), rtol=1e-3)


# -- cumsum --------------------------------------------------------------------------------------
@hsettings(15)
@given(shape=hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=4), seed=seeds,
       data=st.data())
def test_cumsum(device, shape, seed, data):
    axis = data.draw(st.one_of(st.none(), st.integers(-len(shape), len(shape) - 1)))
    x = rand(shape, seed)
    y = gg.cumsum(T(x, device), axis)
    assert_close(y, np.cumsum(x, axis=axis), rtol=1e-12, atol=1e-13, dtype=np.float64)
    check_grad(lambda t: t.cumsum(axis), [x], device)
    assert gg.cumsum(T(x, device, dtype=gg.float16), axis).dtype == np.float16


def test_cumsum_matches_torch_and_double_backward(device):
    torch = _torch()
    x = rand((3, 4), 6)
    for axis in (0, 1, -1):
        t = T(x, device, requires_grad=True)
        (gg.cumsum(t, axis) ** 2).sum().backward()
        r = torch.tensor(x, requires_grad=True)
        (torch.cumsum(r, axis) ** 2).sum().backward()
        assert_close(t.grad, r.grad.numpy(), rtol=1e-12)
    check_grad(_second(lambda t: gg.cumsum(t, 1) ** 3), [x], device)
    s = gg.cumsum(T(np.array(2.5), device), 0)  # a 0-d tensor has axis 0 (torch)
    assert s.shape == () and s.item() == 2.5


# -- errors shared by the axis-taking ops ----------------------------------------------------------
AXIS_OPS = {
    "var": lambda x: gg.var(x, axis=2),
    "std": lambda x: gg.std(x, axis=(0, -3)),
    "prod": lambda x: gg.prod(x, axis=5),
    "norm": lambda x: gg.norm(x, axis=-3),
    "cumsum": lambda x: gg.cumsum(x, 2),
    "flatten": lambda x: gg.flatten(x, 0, 2),
    "split": lambda x: gg.split(x, 1, axis=2),
    "chunk": lambda x: gg.chunk(x, 2, axis=-3),
    "flip": lambda x: gg.flip(x, 2),
    "repeat": lambda x: gg.repeat(x, 2, axis=2),
    "gather": lambda x: gg.gather(x, 2, np.zeros((2, 3), np.int64)),
    "take_along_axis": lambda x: gg.take_along_axis(x, np.zeros((2, 3), np.int64), 2),
}


@pytest.mark.parametrize("name", list(AXIS_OPS))
def test_bad_axis_is_value_error_naming_op_and_shape(device, name):
    with pytest.raises(ValueError, match=rf"^{name}: .*\(2, 3\)"):
        AXIS_OPS[name](T(np.ones((2, 3)), device))


# ops that take exactly one axis: a tuple (or list, or None) names the op, the axis and the shape
# instead of failing to unpack it
ONE_AXIS_OPS = {
    "cumsum": (lambda x: gg.cumsum(x, (0, 1)), r"axis must be a single int, got \(0, 1\)"),
    "flatten": (lambda x: gg.flatten(x, (0, 1)),
                r"start_axis must be a single int, got \(0, 1\)"),
    "flatten-end": (lambda x: gg.flatten(x, 0, (1,)),
                    r"end_axis must be a single int, got \(1,\)"),
    "split": (lambda x: gg.split(x, 1, axis=(0, 1)), r"axis must be a single int, got \(0, 1\)"),
    "chunk": (lambda x: gg.chunk(x, 2, axis=None), r"axis must be a single int, got None"),
    "repeat": (lambda x: gg.repeat(x, 2, axis=[1]), r"axis must be a single int, got \[1\]"),
    "gather": (lambda x: gg.gather(x, (0, 1), np.zeros((2, 3), np.int64)),
               r"axis must be a single int, got \(0, 1\)"),
    "take_along_axis": (lambda x: gg.take_along_axis(x, np.zeros((2, 3), np.int64), (0,)),
                        r"axis must be a single int, got \(0,\)"),
}


@pytest.mark.parametrize("name", list(ONE_AXIS_OPS))
def test_tuple_axis_for_a_one_axis_op_is_type_error_naming_op_axis_and_shape(device, name):
    fn, msg = ONE_AXIS_OPS[name]
    op = name.split("-")[0]
    with pytest.raises(TypeError, match=rf"^{op}: {msg} \(tensor shape \(2, 3\)\)$"):
        fn(T(np.ones((2, 3)), device))


def test_zero_d_one_axis_ops_allow_only_axis_0_and_minus_1(device):
    s = T(np.array(2.5), device)
    for fn in (lambda a: gg.cumsum(s, a), lambda a: gg.flatten(s, a),
               lambda a: gg.flatten(s, 0, a)):
        assert fn(0).size == fn(-1).size == 1
        with pytest.raises(ValueError, match="out of range for a 0-d tensor"):
            fn(1)
        with pytest.raises(TypeError, match=r"a single int, got \(0,\) \(tensor shape \(\)\)"):
            fn((0,))


@pytest.mark.parametrize("name", ["var", "std", "norm"])
def test_float_only_reductions_reject_integers(device, name):
    with pytest.raises(TypeError, match=f"{name}: expected a floating-point tensor.*int64"):
        getattr(gg, name)(T(np.array([1, 2, 3]), device))
