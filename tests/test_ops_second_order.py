"""Second derivatives that used to be silently wrong (``a ** b`` at b = 0, ``prod`` with zeros),
a Hessian-symmetry property test over random twice-differentiable graphs, and (where torch is
installed) a random-graph differential test against PyTorch, first and second order, float64."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from _helpers import hsettings
from hypothesis import example, given
from hypothesis import strategies as st

import gpugrad as gg


def scalar(value, device):
    return gg.tensor(float(value), dtype="float64", device=device, requires_grad=True)


# -- A. pow at a zero exponent -----------------------------------------------------------------
def test_pow_mixed_second_derivative_at_zero_exponent(device):
    a, b = scalar(1.5, device), scalar(0.0, device)
    ga, gb = gg.grad(a ** b, [a, b], create_graph=True)
    assert ga.item() == 0.0  # PyTorch's first-order value where the exponent is 0
    assert gg.grad(ga, [b], retain_graph=True)[0].item() == pytest.approx(1 / 1.5, rel=1e-12)
    assert gg.grad(gb, [a])[0].item() == pytest.approx(1 / 1.5, rel=1e-12)


def test_pow_in_a_graph_at_zero_exponent(device):
    x0, x2 = scalar(1.0, device), scalar(0.0, device)
    f = (x0 * x0 + 0.5) ** gg.tanh(x2)
    (g0,) = gg.grad(f, [x0], create_graph=True)
    (mixed,) = gg.grad(g0, [x2])
    assert mixed.item() == pytest.approx(2.0 / 1.5, rel=1e-12)  # 2·x0 / (x0² + 0.5)


def test_pow_zero_base_and_zero_exponent_stay_finite(device):
    a, b = scalar(0.0, device), scalar(0.0, device)
    ga, gb = gg.grad(a ** b, [a, b], create_graph=True)
    assert ga.item() == 0.0 and gb.item() == 0.0
    for h in gg.grad(ga, [a, b]):
        assert h is None or np.isfinite(h.item())


# -- B. prod with zeros ------------------------------------------------------------------------
def prod_hessian_reference(x):
    n = len(x)
    h = np.zeros((n, n))
    for i, j in itertools.permutations(range(n), 2):
        h[i, j] = np.prod([x[k] for k in range(n) if k not in (i, j)])
    return h


def hessian(f, x):
    (g,) = gg.grad(f(x), [x], create_graph=True)
    rows = [gg.grad(g[i], [x], retain_graph=True)[0].numpy() for i in range(x.shape[0])]
    return g.numpy(), np.stack(rows)


@pytest.mark.parametrize("values", [
    (1.0, 0.5, 0.0), (1.0, 0.0, 0.0), (0.0, 0.0, 0.0), (2.0, 0.0, -3.0, 0.5),
    (0.0, 1.5, 0.0, -2.0, 0.0), (1.5, -0.5, 2.0, 3.0),
])
def test_prod_hessian_is_exact_with_any_number_of_zeros(device, values):
    x = gg.tensor(np.array(values), dtype="float64", device=device, requires_grad=True)
    g, h = hessian(gg.prod, x)
    want_g = [np.prod([v for k, v in enumerate(values) if k != i]) for i in range(len(values))]
    np.testing.assert_allclose(g, want_g, rtol=1e-12, atol=0)
    np.testing.assert_allclose(h, prod_hessian_reference(values), rtol=1e-12, atol=0)


def test_prod_hessian_along_an_axis(device):
    host = np.array([[1.0, 0.0, 2.0], [0.0, 0.0, 3.0], [1.5, 2.0, -1.0]])
    x = gg.tensor(host, dtype="float64", device=device, requires_grad=True)
    weights = gg.tensor([1.0, 2.0, 3.0], dtype="float64", device=device)
    (g,) = gg.grad((gg.prod(x, axis=1) * weights).sum(), [x], create_graph=True)
    for r in range(3):
        for c in range(3):
            (row,) = gg.grad(g[r, c], [x], retain_graph=True)
            want = np.zeros((3, 3))
            want[r] = prod_hessian_reference(host[r])[c] * (r + 1)
            np.testing.assert_allclose(row.numpy(), want, rtol=1e-12, atol=0)


def test_prod_third_derivative_with_zeros(device):
    x = gg.tensor([0.0, 2.0, 0.0, 3.0], dtype="float64", device=device, requires_grad=True)
    (g,) = gg.grad(gg.prod(x), [x], create_graph=True)
    (h0,) = gg.grad(g[0], [x], create_graph=True)  # row 0: Π of the others but 0 and j
    (t,) = gg.grad(h0[2], [x])  # ∂³/∂x0∂x2∂xk = Π_{m ∉ {0, 2, k}} x_m
    np.testing.assert_allclose(t.numpy(), [0.0, 3.0, 0.0, 2.0], rtol=1e-12)


# -- random twice-differentiable graphs ------------------------------------------------------
LEAF_VALUES = st.sampled_from([0.0, 0.5, 1.0, 1.5, -0.7, 2.0]) | st.floats(-2, 2)
STEP = st.tuples(st.sampled_from(["add", "mul", "sub", "div", "pow", "tanh", "sin", "exp",
                                  "sigmoid", "square", "prod"]),
                 st.integers(0, 100), st.integers(0, 100), st.integers(0, 100))


def build(lib, leaves, steps, pow_shift=0.0):
    """A graph over ``leaves`` from ``steps`` (op, operand picks), written once for gpugrad and
    torch: both expose these names and operators. ``pow_shift`` moves the exponents off 0."""
    nodes = list(leaves)
    for op, i, j, k in steps:
        a, b, c = nodes[i % len(nodes)], nodes[j % len(nodes)], nodes[k % len(nodes)]
        if op == "add":
            out = a + b
        elif op == "mul":
            out = a * b
        elif op == "sub":
            out = a - b
        elif op == "div":
            out = a / (1.0 + b * b)
        elif op == "pow":
            out = (a * a + 0.5) ** (lib.tanh(b) + pow_shift)  # exponent exactly 0 where b is
        elif op == "prod":
            out = lib.prod(lib.stack([a, b, c]))
        elif op == "square":
            out = a * a
        else:
            out = getattr(lib, op)(lib.tanh(a) if op == "exp" else a)
        nodes.append(out)
    return sum(nodes[len(leaves):], nodes[0] * 0.0) if len(nodes) > len(leaves) else nodes[0]


def _value(grad) -> float:
    """A scalar gradient's value; an unused input's (None) is 0."""
    return 0.0 if grad is None else grad.item()


@hsettings(max_examples=40)
@given(values=st.lists(LEAF_VALUES, min_size=3, max_size=3),
       steps=st.lists(STEP, min_size=1, max_size=8))
@example(values=[1.5, 0.0, 1.0], steps=[("pow", 0, 1, 0)])  # an exponent exactly 0
@example(values=[1.0, 0.5, 0.0], steps=[("prod", 0, 1, 2)])  # a product with one zero
def test_hessians_of_random_graphs_are_symmetric(device, values, steps):
    leaves = [scalar(v, device) for v in values]
    f = build(gg, leaves, steps)
    grads = gg.grad(f, leaves, create_graph=True, allow_unused=True)
    h = np.zeros((3, 3))
    for i, g in enumerate(grads):
        if g is None or not g.requires_grad:
            continue
        second = gg.grad(g, leaves, retain_graph=True, allow_unused=True)
        h[i] = [_value(s) for s in second]
    if np.all(np.isfinite(h)):  # overflowing graphs have nothing to compare
        np.testing.assert_allclose(h, h.T, rtol=1e-9, atol=1e-12)


@hsettings(max_examples=60)
@given(values=st.lists(LEAF_VALUES, min_size=3, max_size=3),
       steps=st.lists(STEP, min_size=1, max_size=8))
def test_random_graphs_match_torch_to_second_order(device, values, steps):
    torch = pytest.importorskip("torch")
    ours = [scalar(v, device) for v in values]
    theirs = [torch.tensor(float(v), dtype=torch.float64, requires_grad=True) for v in values]
    # torch drops d2(a**b)/da db where b is exactly 0 (its base gradient is masked to 0 there);
    # gpugrad is exact (the symmetric-Hessian test checks it), so no exponent is 0 here
    f, tf = build(gg, ours, steps, 0.25), build(torch, theirs, steps, 0.25)
    np.testing.assert_allclose(f.item(), tf.item(), rtol=1e-10, atol=1e-12)
    g = gg.grad(f, ours, create_graph=True, allow_unused=True)
    tg = torch.autograd.grad(tf, theirs, create_graph=True, allow_unused=True)
    for i, (a, b) in enumerate(zip(g, tg)):
        np.testing.assert_allclose(_value(a), _value(b), rtol=1e-9, atol=1e-12,
                                   err_msg=f"d/dx{i}")
        if a is None or b is None or not a.requires_grad or not b.requires_grad:
            continue
        h = gg.grad(a, ours, retain_graph=True, allow_unused=True)
        th = torch.autograd.grad(b, theirs, retain_graph=True, allow_unused=True)
        for j, (x, y) in enumerate(zip(h, th)):
            np.testing.assert_allclose(_value(x), _value(y), rtol=1e-9, atol=1e-12,
                                       err_msg=f"d2/dx{i}dx{j}")
