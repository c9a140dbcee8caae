"""gg.gradcheck: passes on correct gradients, raises GradcheckError with a useful message on a
wrong one."""

from __future__ import annotations

import numpy as np
import pytest
from _helpers import T, rand

import gpugrad as gg


class WrongSquare(gg.Function):
    """x**2 with a deliberately wrong derivative (3x instead of 2x)."""

    save_inputs = (0,)

    def forward(self, x):
        return x * x

    def backward(self, ops, g, x):
        return (g * 3 * x,)


class RightSquare(WrongSquare):
    def backward(self, ops, g, x):
        return (g * 2 * x,)


def test_gradcheck_passes_on_correct_functions(device):
    x = T(rand((2, 3), 0), device, requires_grad=True)
    y = T(rand((3,), 1), device, requires_grad=True)
    assert gg.gradcheck(lambda a, b: gg.tanh(a * b).sum(axis=0), [x, y]) is True
    assert gg.gradcheck(lambda a: RightSquare.apply(a), x)
    # float32 inputs are checked in float64
    x32 = T(rand((3,), 2), device, dtype=gg.float32, requires_grad=True)
    assert gg.gradcheck(lambda a: gg.exp(a) * a, [x32])
    assert x32.dtype == np.float32 and x32.grad is None  # inputs are left alone


def test_gradcheck_with_constant_inputs(device):
    x = T(rand((3,), 0), device, requires_grad=True)
    c = T(rand((3,), 1), device)
    assert gg.gradcheck(lambda a, b, k: a * b + k, [x, c, 2.0])
    with pytest.raises(ValueError, match="no input requires grad"):
        gg.gradcheck(lambda b: b * 2, [c])


def test_gradcheck_catches_a_wrong_backward(device):
    x = T(np.array([1.0, -2.0, 0.5]), device, requires_grad=True)
    with pytest.raises(gg.GradcheckError) as info:
        gg.gradcheck(lambda a: WrongSquare.apply(a), [x])
    msg = str(info.value)
    assert "input 0" in msg and "(3,)" in msg
    assert "analytical" in msg and "numerical" in msg
    assert "3 of 3 elements" in msg
    assert isinstance(info.value, RuntimeError)
    assert gg.gradcheck(lambda a: WrongSquare.apply(a), [x], raise_exception=False) is False


def test_gradcheck_names_the_wrong_input(device):
    x = T(rand((2,), 0), device, requires_grad=True)
    y = T(rand((2,), 1), device, requires_grad=True)
    with pytest.raises(gg.GradcheckError, match="input 1"):
        gg.gradcheck(lambda a, b: a * 2 + WrongSquare.apply(b), [x, y])


def test_gradcheck_detects_missing_gradient(device):
    class Detached(gg.Function):
        def forward(self, x):
            return x * 2

        def backward(self, ops, g):
            return (None,)

    x = T(rand((2,), 0), device, requires_grad=True)
    with pytest.raises(gg.GradcheckError, match="analytical 0 vs numerical -?[0-9]"):
        gg.gradcheck(lambda a: Detached.apply(a), [x])


def test_gradcheck_of_a_gradient_function(device):
    x = T(rand((3,), 0), device, requires_grad=True)

    def first_derivative(a):  # calls gg.grad itself: gradcheck must not turn grad mode off
        return gg.grad((a**3).sum(), a, create_graph=True)[0]

    assert gg.gradcheck(first_derivative, [x])


@pytest.mark.parametrize("layout", ["F", "T", "swap", "rows", "neg", "bcast"])
def test_gradcheck_on_inputs_of_any_layout(device, layout):
    """Fortran-ordered, transposed, strided and broadcast inputs: the numerical gradient is
    filled in (it was written through a flat reshape of an array in the input's order, a copy
    for these, so it stayed 0 and every check failed), and a wrong backward is still caught."""
    from _layouts import broadcast_values, place

    values = rand((2, 3, 4), 0)
    values = broadcast_values(values) if layout == "bcast" else values
    arr, _ = place(values, layout, gg.device(device))
    x = gg.Tensor._wrap(arr, gg.device(device)).requires_grad_()
    assert gg.gradcheck(lambda a: gg.tanh(a) * a, [x])
    assert gg.gradcheck(lambda a: RightSquare.apply(a), [x])
    assert gg.gradcheck(lambda a: WrongSquare.apply(a), [x], raise_exception=False) is False
    np.testing.assert_array_equal(x.numpy(), values)  # the input is left alone
