"""The tape rules: reverse recording order, iterative walk, accumulation, retain_graph and freed
buffers, create_graph (higher order), gg.grad, detach, leaves (grad modes: test_grad_mode.py)."""

from __future__ import annotations

import gc
import math
import weakref

import numpy as np
import pytest
from _helpers import T, assert_close, rand

import gpugrad as gg
from gpugrad.autograd import FREED


class Tag(gg.Function):
    """Identity that logs when its backward runs."""

    log: list = []

    def forward(self, x, tag=None):
        self.tag = tag
        return x.copy()

    def backward(self, ops, g):
        Tag.log.append(self.tag)
        return (g,)


def test_backward_walks_in_reverse_recording_order(device):
    Tag.log = []
    x = T([1.0, 2.0], device, requires_grad=True)
    a = Tag.apply(x, tag="a")
    b = Tag.apply(a * 2, tag="b")
    c = Tag.apply(a, tag="c")
    d = Tag.apply(b + c * 3, tag="d")
    d.sum().backward()
    # latest first; "a" runs once, after both of its consumers delivered their gradient
    assert Tag.log == ["d", "c", "b", "a"]
    assert_close(x.grad, [5.0, 5.0])


def test_nodes_not_leading_to_leaves_are_skipped(device):
    Tag.log = []
    x = T([1.0], device, requires_grad=True)
    const = Tag.apply(T([3.0], device), tag="const")  # no grad: not recorded at all
    y = Tag.apply(x, tag="y") * const
    y.sum().backward()
    assert Tag.log == ["y"]
    assert_close(x.grad, [3.0])


def test_long_chain_is_iterative(device):
    x = T(np.array([1.0]), device, requires_grad=True)
    y = x
    for _ in range(30_000):
        y = y * 1.00001
    y.sum().backward()  # a recursive walk would hit RecursionError long before this depth
    assert_close(x.grad, [1.00001**30_000], rtol=1e-9)
    z = x
    for _ in range(30_000):
        z = -z
    assert gg.grad(z.sum(), x)[0].item() == 1.0
    del y, z
    gc.collect()  # tearing the chain down must not recurse either


def test_gradient_accumulates_for_reused_tensor(device):
    x = T([1.0, -2.0, 3.0], device, requires_grad=True)
    y = x * x + x
    y.sum().backward()
    assert_close(x.grad, 2 * np.array([1.0, -2.0, 3.0]) + 1)
    # a second, separate graph adds into .grad
    (x * 3).sum().backward()
    assert_close(x.grad, 2 * np.array([1.0, -2.0, 3.0]) + 4)
    x.grad = None
    (x * 3).sum().backward()
    assert_close(x.grad, [3.0, 3.0, 3.0])


def test_leaf_grads_do_not_alias(device):
    a = T([1.0, 2.0], device, requires_grad=True)
    b = T([3.0, 4.0], device, requires_grad=True)
    seed = T([1.0, 1.0], device)
    (a + b).backward(gradient=seed)
    a.grad[0] = 5.0  # an in-place edit of one gradient (e.g. zero_grad(set_to_none=False))
    assert b.grad.numpy().tolist() == [1.0, 1.0]
    assert seed.numpy().tolist() == [1.0, 1.0]


def test_retain_graph_allows_second_backward(device):
    x = T([2.0, 3.0], device, requires_grad=True)
    y = (gg.exp(x) * x).sum()
    y.backward(retain_graph=True)
    first = x.grad.numpy()
    y.backward()
    assert_close(x.grad, 2 * first)
    assert_close(first, np.exp([2.0, 3.0]) * (1 + np.array([2.0, 3.0])))


def test_second_backward_through_freed_buffers_raises(device):
    x = T([2.0, 3.0], device, requires_grad=True)
    y = (x * x).sum()
    y.backward()
    with pytest.raises(RuntimeError, match="retain_graph"):
        y.backward()
    # gg.grad frees too (retain_graph defaults to create_graph)
    z = (gg.sin(x) * 2).sum()
    gg.grad(z, x)
    with pytest.raises(RuntimeError, match="second time"):
        gg.grad(z, x)


def test_backward_twice_through_nodes_without_saved_arrays(device):
    x = T([1.0, 2.0], device, requires_grad=True)
    y = (x + 1).sum()
    y.backward()
    y.backward()  # add and sum save nothing: nothing was freed
    assert_close(x.grad, [2.0, 2.0])


def test_saved_arrays_are_freed_after_backward(device):
    x = T(rand((64, 64), 0), device, requires_grad=True)
    h = gg.exp(x)
    fn_exp = h.grad_fn
    y = (h * 2).sum()
    fn_mul = y.grad_fn.edges[0]
    assert fn_exp.saved is not FREED and len(fn_exp.saved) == 1
    try:
        ref = weakref.ref(h.data)
    except TypeError:  # an array type without weakref support: rely on the marker alone
        ref = None
    del h
    y.backward()
    assert fn_exp.saved is FREED and fn_mul.saved is FREED
    gc.collect()
    if ref is not None:
        assert ref() is None, "the intermediate array is still referenced after backward"


def test_retain_graph_keeps_saved_arrays(device):
    x = T([1.0, 2.0], device, requires_grad=True)
    h = gg.exp(x)
    h.sum().backward(retain_graph=True)
    assert h.grad_fn.saved is not FREED
    h.sum().backward()
    assert h.grad_fn.saved is FREED


# -- higher order --------------------------------------------------------------------------------
def test_second_derivative_of_cube_and_sin(device):
    x = T([0.5, -1.0, 2.0], device, requires_grad=True)
    (g,) = gg.grad((x**3).sum(), x, create_graph=True)
    assert g.requires_grad
    assert_close(g, 3 * x.numpy() ** 2)
    (gg2,) = gg.grad(g.sum(), x)
    assert_close(gg2, 6 * x.numpy())
    # and through .backward(create_graph=True)
    y = gg.sin(x).sum()
    y.backward(create_graph=True)
    g = x.grad
    assert_close(g, np.cos(x.numpy()))
    x.grad = None
    g.sum().backward()
    assert_close(x.grad, -np.sin(x.numpy()))


def test_third_derivative(device):
    x = T([0.7], device, requires_grad=True)
    y = x**4
    (d1,) = gg.grad(y.sum(), x, create_graph=True)
    (d2,) = gg.grad(d1.sum(), x, create_graph=True)
    (d3,) = gg.grad(d2.sum(), x)
    assert_close(d3, 24 * np.array([0.7]))


def _first(v):
    return v


# f(x) -> tensor, shape of x, domain (rand kwargs)
SECOND_ORDER = {
    "exp": (gg.exp, (3,), {}),
    "log": (gg.log, (3,), {"low": 0.5, "high": 2}),
    "sqrt": (gg.sqrt, (3,), {"low": 0.5, "high": 2}),
    "tanh": (gg.tanh, (2, 3), {}),
    "sigmoid": (gg.sigmoid, (2, 3), {}),
    "sin_cos": (lambda x: gg.sin(x) * gg.cos(x), (3,), {}),
    "div": (lambda x: 1 / (x * x + 1), (3,), {}),
    "pow_tensor": (lambda x: x**x, (3,), {"low": 0.5, "high": 2}),
    "softmax": (lambda x: gg.softmax(x, axis=-1), (2, 3), {}),
    "log_softmax": (lambda x: gg.log_softmax(x, axis=0), (2, 3), {}),
    "logsumexp": (lambda x: gg.logsumexp(x, axis=1), (2, 3), {}),
    "gelu": (gg.gelu, (4,), {}),
    "gelu_tanh": (lambda x: gg.gelu(x, approximate="tanh"), (4,), {}),
    "matmul": (lambda x: x @ x.T @ x, (2, 3), {}),
    "matmul_vec": (lambda x: (x @ x) * x, (3,), {}),
    "getitem": (lambda x: x[[0, 0, 1], 1:] ** 2, (2, 3), {}),
    "mean_max": (lambda x: gg.mean(x**2, axis=0) * gg.max(x, axis=0), (2, 3), {}),
    "broadcast_sum": (lambda x: (x.reshape(3, 1) * x).sum(axis=0) ** 2, (3,), {}),
    "where": (lambda x: gg.where(x > 0, x**2, x**3), (4,), {"away_from": 0.0}),
    "concat_stack": (lambda x: gg.stack([x**2, gg.concatenate([x[1:], x[:1]]) ** 3]), (3,), {}),
    "linear": (lambda x: gg.linear(x, x.T @ x, x[0]) ** 2, (3, 3), {}),
    "astype": (lambda x: x.astype(gg.float32).astype(gg.float64) * x, (3,), {}),
}


@pytest.mark.parametrize("name", list(SECOND_ORDER))
def test_second_order_gradcheck(device, name):
    f, shape, dom = SECOND_ORDER[name]
    x = rand(shape, 3, **dom)
    probe = f(T(x, device))
    w = T(rand(probe.shape, 4), device)

    def grad_fn(t):
        return gg.grad((f(t) * w).sum(), t, create_graph=True)[0]

    tol = {"atol": 1e-3, "rtol": 1e-3} if name == "astype" else {}
    if name == "astype":  # float32 steps: finite differences need a larger eps
        assert gg.gradcheck(grad_fn, [T(x, device, requires_grad=True)], eps=1e-3, **tol)
    else:
        assert gg.gradcheck(grad_fn, [T(x, device, requires_grad=True)])


def test_second_order_mixed_partials(device):
    a, b = rand((2, 3), 1), rand((3, 2), 2)

    def both(p, q):
        ga, gb = gg.grad((gg.tanh(p @ q) ** 2).sum(), [p, q], create_graph=True)
        return gg.concatenate([ga.reshape(-1), gb.reshape(-1)])

    assert gg.gradcheck(both, [T(a, device, requires_grad=True), T(b, device, requires_grad=True)])


# -- gg.grad -------------------------------------------------------------------------------------
def test_grad_returns_tuple_and_leaves_dot_grad_alone(device):
    x = T([1.0, 2.0], device, requires_grad=True)
    out = gg.grad((x * x).sum(), x)
    assert isinstance(out, tuple) and len(out) == 1
    assert_close(out[0], [2.0, 4.0])
    assert x.grad is None
    x2 = T([3.0], device, requires_grad=True)
    ga, gb = gg.grad((x * x2).sum(), [x, x2])
    assert_close(ga, [3.0, 3.0])
    assert_close(gb, [3.0])
    assert x.grad is None and x2.grad is None


def test_grad_wrt_non_leaf_and_unused(device):
    x = T([1.0, 2.0], device, requires_grad=True)
    y = x * 2
    z = (y**2).sum()
    gy, gx = gg.grad(z, [y, x])
    assert_close(gy, 2 * y.numpy())
    assert_close(gx, 8 * x.numpy())
    unused = T([1.0], device, requires_grad=True)
    (g_unused,) = gg.grad((x * 2).sum(), unused)
    assert g_unused is None
    with pytest.raises(RuntimeError, match="does not require grad"):
        gg.grad((x * 2).sum(), T([1.0], device))


def test_grad_outputs(device):
    x = T([1.0, 2.0, 3.0], device, requires_grad=True)
    v = np.array([0.5, -1.0, 2.0])
    (g,) = gg.grad(x * 3, x, grad_outputs=T(v, device))
    assert_close(g, 3 * v)
    y1, y2 = x * 2, x**2
    (g,) = gg.grad([y1, y2], x, grad_outputs=[T(v, device), T(np.ones(3), device)])
    assert_close(g, 2 * v + 2 * x.numpy())
    (g,) = gg.grad(x * 3, x, grad_outputs=[v.tolist()])
    assert_close(g, 3 * v)
    with pytest.raises(RuntimeError, match="scalar"):
        gg.grad(x * 3, x)


def test_backward_argument_checks(device):
    x = T([1.0, 2.0], device, requires_grad=True)
    with pytest.raises(RuntimeError, match="scalar"):
        (x * 2).backward()
    with pytest.raises(ValueError, match=r"shape"):
        (x * 2).backward(gradient=T(np.ones(3), device))
    with pytest.raises(RuntimeError, match="does not require grad"):
        T([1.0], device).sum().backward()
    (x * 2).backward(gradient=T([1.0, 0.5], device))
    assert_close(x.grad, [2.0, 1.0])
    x.grad = None
    (x * 2).backward(gradient=[1.0, 1.0])
    assert_close(x.grad, [2.0, 2.0])


# -- leaves, detach, requires_grad_ --------------------------------------------------------------
def test_detach(device):
    x = T([1.0, 2.0], device, requires_grad=True)
    d = x.detach()
    assert not d.requires_grad and d.is_leaf and d.grad_fn is None
    assert_close(d, x.numpy())
    (x.detach() * x).sum().backward()  # no gradient flows through the detached factor
    assert_close(x.grad, [1.0, 2.0])
    y = x * 3
    yd = y.detach()
    assert yd.is_leaf and not yd.requires_grad
    if device == "cpu":
        assert np.shares_memory(np.asarray(yd), np.asarray(y.data))


def test_requires_grad_and_is_leaf(device):
    x = T([1.0, 2.0], device)
    assert x.is_leaf and not x.requires_grad
    assert x.requires_grad_() is x and x.requires_grad
    y = x * 2
    assert not y.is_leaf and y.requires_grad
    with pytest.raises(RuntimeError, match="leaf"):
        y.requires_grad_()
    with pytest.raises(TypeError, match="floating"):
        T([1, 2], device).requires_grad_()
    with pytest.raises(TypeError):
        gg.tensor([1, 2], device=device, requires_grad=True)
    c = T([1.0], device) * 2  # made from constants: a leaf that needs no grad
    assert c.is_leaf and not c.requires_grad
    x.requires_grad_(False)
    assert not (x * 2).requires_grad


# -- fixes from a review against torch ------------------------------------------------------
def test_0d_leaf_gradients_are_arrays_that_clipping_can_scale(device):
    w = T(np.ones(2), device, requires_grad=True)
    log_t = T(np.array(0.5), device, requires_grad=True)
    (w * w * gg.exp(log_t)).sum().backward()
    assert log_t.grad.shape == () and not isinstance(log_t.grad.data, np.generic)
    before = log_t.grad.item()
    total = gg.nn.utils.clip_grad_norm_([w, log_t], 1.0)
    assert log_t.grad.item() == pytest.approx(before / total.item(), rel=1e-6)
    gg.nn.utils.clip_grad_value_([log_t], 0.1)
    assert log_t.grad.item() == pytest.approx(min(0.1, before / total.item()))
    (g,) = gg.grad(gg.exp(log_t), [log_t])
    g.data[...] = 0  # an array one can write into, not a NumPy scalar


def test_grad_outputs_must_match_outputs(device):
    x = T([1.0, 2.0], device, requires_grad=True)
    with pytest.raises(ValueError, match="grad: got 2 outputs but 1 grad_outputs"):
        gg.grad([x * 2, x * 3], [x], grad_outputs=[gg.ones(2, device=device)])
    (g,) = gg.grad(x * 2, [x], grad_outputs=np.full(2, 3.0))  # one array is one gradient
    np.testing.assert_allclose(g.numpy(), [6.0, 6.0])


def test_create_graph_keeps_grad_outputs_in_the_graph(device):
    """The double-VJP trick: d/dv of vᵀJ is Jᵀ... here J = diag(2x), so d(Σ vᵀJ)/dv = 2x."""
    x = T([1.0, 2.0], device, requires_grad=True)
    v = T([1.0, 1.0], device, requires_grad=True)
    (g,) = gg.grad(x * x, x, grad_outputs=v, create_graph=True)
    gx, gv = gg.grad(g.sum(), [x, v])
    np.testing.assert_allclose(gv.numpy(), [2.0, 4.0])
    np.testing.assert_allclose(gx.numpy(), [2.0, 2.0])


def test_backward_seed_is_cast_and_copied(device):
    x = T(np.array([1.0, 2.0], dtype=np.float32), device, requires_grad=True)
    gg.exp(x).backward(gradient=T(np.ones(2), device))  # float64 seed, float32 output
    assert x.grad.dtype == np.float32
    seed = np.ones(2, dtype=np.float32)
    y = T(np.array([1.0, 2.0], dtype=np.float32), "cpu", requires_grad=True)
    (y * 1).backward(gradient=seed)
    seed[0] = 100.0  # the caller's array: the gradient must not change with it
    np.testing.assert_array_equal(y.grad.numpy(), [1.0, 1.0])


def test_erf_of_integers_is_float64_on_every_device(device):
    y = gg.erf(T(np.array([1, 2]), device))
    assert y.dtype == np.float64
    np.testing.assert_allclose(y.numpy(), [math.erf(1), math.erf(2)], rtol=1e-15)


def test_explain_sums_the_local_derivative_of_an_input_used_twice():
    a = gg.tensor(2.0, requires_grad=True)
    a.name = "a"
    table = str(gg.explain(a * a))
    assert "∂v0/∂a = 4" in table
