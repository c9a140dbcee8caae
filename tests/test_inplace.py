"""In-place ops (``+= -= *= /=``, ``add_ sub_ mul_ div_ zero_ fill_ copy_``, ``t[i] = v``): the
same Tensor object is updated, autograd's rules follow PyTorch's, and no write ever reaches an
array that backward still needs. Plus the PyTorch-spelled conveniences (clone, view, numel, ...)."""

from __future__ import annotations

import numpy as np
import pytest

import gpugrad as gg


def _t(x, device, **kw):
    return gg.tensor(np.asarray(x, dtype=np.float64), device=device, **kw)


def test_manual_sgd_step_under_no_grad_updates_the_same_parameter(device):
    w = _t([1.0, -2.0, 3.0], device, requires_grad=True)
    model_view = [w]  # what a Module or an optimizer holds
    (w * w).sum().backward()
    with gg.no_grad():
        w -= 0.1 * w.grad
    assert model_view[0] is w and w.is_leaf and w.requires_grad
    np.testing.assert_allclose(w.numpy(), [0.8, -1.6, 2.4], rtol=1e-15)
    w.grad = None
    (w * w).sum().backward()  # the updated leaf still trains
    np.testing.assert_allclose(w.grad.numpy(), [1.6, -3.2, 4.8], rtol=1e-15)


@pytest.mark.parametrize("update", [lambda w: w.__iadd__(1.0), lambda w: w.mul_(2.0),
                                    lambda w: w.zero_(), lambda w: w.fill_(3.0),
                                    lambda w: w.copy_(gg.zeros(2))])
def test_leaf_requiring_grad_cannot_change_in_grad_mode(device, update):
    w = _t([1.0, 2.0], device, requires_grad=True)
    with pytest.raises(RuntimeError, match=r"leaf tensor that requires grad \(shape \(2,\)\).*"
                                           r"no_grad"):
        update(w)
    np.testing.assert_array_equal(w.numpy(), [1.0, 2.0])


def test_non_leaf_update_is_recorded(device):
    x = _t([1.0, 2.0], device, requires_grad=True)
    y = x * 2
    y += x  # 3x
    y *= x  # 3x²
    y -= 1.0
    y /= 2.0  # (3x² - 1) / 2
    y.sum().backward()
    np.testing.assert_allclose(y.numpy(), (3 * np.array([1.0, 2.0]) ** 2 - 1) / 2)
    np.testing.assert_allclose(x.grad.numpy(), [3.0, 6.0])  # d/dx = 3x


def test_a_constant_tensor_joins_the_graph_when_updated_with_one_that_requires_grad(device):
    w = _t([1.0, 2.0], device, requires_grad=True)
    acc = gg.zeros(2, dtype=gg.float64, device=device)
    acc += w * w
    acc.add_(w, alpha=3.0)
    assert acc.requires_grad and not acc.is_leaf
    acc.sum().backward()
    np.testing.assert_allclose(w.grad.numpy(), [5.0, 7.0])  # 2w + 3


MUTATIONS = {
    "+=": lambda x: x.__iadd__(1.0),
    "sub_": lambda x: x.sub_(1.0, alpha=2.0),
    "mul_": lambda x: x.mul_(-3.0),
    "div_": lambda x: x.div_(4.0),
    "zero_": lambda x: x.zero_(),
    "fill_": lambda x: x.fill_(7.0),
    "copy_": lambda x: x.copy_([9.0, 9.0, 9.0]),
    "setitem": lambda x: x.__setitem__(0, 5.0),
}


@pytest.mark.parametrize("name", list(MUTATIONS))
def test_values_saved_for_backward_are_never_overwritten(device, name):
    """PyTorch raises here (version counters); gpugrad keeps the saved values instead."""
    x = _t([1.0, 2.0, 3.0], device)
    w = _t([1.0, 1.0, 1.0], device, requires_grad=True)
    y = (x * w).sum()  # Mul saves x's array for d/dw
    before = x.numpy()
    MUTATIONS[name](x)
    assert not np.array_equal(x.numpy(), before)
    y.backward()
    np.testing.assert_array_equal(w.grad.numpy(), before)


def test_setitem_writes_in_place_unless_the_array_is_shared(device):
    t = gg.zeros(5, dtype=gg.float64, device=device)
    address = id(t.data)  # an id, not a reference: holding the array would make it shared
    t[1] = 2.0
    t[2:4] = _t([3.0, 4.0], device)
    assert id(t.data) == address  # nobody else held it: written in place, no copy
    d = t.detach()  # shares the array: the write goes to a private copy
    t[0] = 9.0
    np.testing.assert_array_equal(t.numpy(), [9.0, 2.0, 3.0, 4.0, 0.0])
    np.testing.assert_array_equal(d.numpy(), [0.0, 2.0, 3.0, 4.0, 0.0])
    v = t[1:3]  # a view of t's memory: writing into it leaves t alone
    v[0] = -1.0
    np.testing.assert_array_equal(t.numpy(), [9.0, 2.0, 3.0, 4.0, 0.0])
    np.testing.assert_array_equal(v.numpy(), [-1.0, 3.0])


def test_fill_copy_and_zero(device):
    t = gg.ones(2, 3, device=device)
    assert t.fill_(2.5) is t and t.dtype == np.float32
    np.testing.assert_array_equal(t.numpy(), np.full((2, 3), 2.5))
    t.fill_(gg.tensor(4.0, device=device))
    np.testing.assert_array_equal(t.numpy(), np.full((2, 3), 4.0))
    t.copy_(gg.tensor([1.0, -0.0, 3.0], dtype=gg.float64))  # broadcast, cast, from the CPU
    assert t.dtype == np.float32 and t.device == gg.device(device)
    np.testing.assert_array_equal(t.numpy(), [[1.0, -0.0, 3.0]] * 2)
    assert np.signbit(t.numpy()[0, 1])  # a copy keeps the sign of zero
    t.zero_()
    np.testing.assert_array_equal(t.numpy(), np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"fill_: value must be a number or a 0-d tensor.*\(2,\)"):
        t.fill_(gg.ones(2, device=device))
    with pytest.raises(ValueError, match="broadcast"):
        t.copy_(gg.ones(4, device=device))


def test_copy_is_differentiable_with_respect_to_the_source(device):
    src = _t([1.0, 2.0], device, requires_grad=True)
    dst = gg.zeros(3, 2, dtype=gg.float64, device=device)
    dst.copy_(src * src)
    dst.sum().backward()
    np.testing.assert_allclose(src.grad.numpy(), [6.0, 12.0])  # 3 rows of 2·src


def test_fill_in_grad_mode_cuts_the_old_graph(device):
    x = _t([1.0, 2.0], device, requires_grad=True)
    y = x * 5
    y.fill_(1.0)  # y no longer depends on x
    assert not y.requires_grad
    (y * x).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [1.0, 1.0])


def test_shape_dtype_and_device_rules(device):
    t = gg.zeros(3, device=device)
    with pytest.raises(ValueError, match=r"\+=: the result has shape \(2, 3\) but the tensor "
                                         r"has shape \(3,\)"):
        t += gg.ones(2, 3, device=device)
    i = gg.tensor([1, 2], device=device)
    with pytest.raises(TypeError, match=r"\+=: the result's dtype float.* cannot be stored in the "
                                        r"tensor's dtype int64"):
        i += 0.5
    i += 3
    np.testing.assert_array_equal(i.numpy(), [4, 5])
    t += gg.ones(3, dtype=gg.float64, device=device)  # same kind: cast back, like torch
    assert t.dtype == np.float32
    np.testing.assert_array_equal(t.numpy(), [1.0, 1.0, 1.0])
    if gg.cuda.is_available():
        other = "cpu" if device != "cpu" else "cuda"
        with pytest.raises(gg.DeviceError):
            t += gg.ones(3, device=other)


def test_optimizer_keeps_working_after_an_in_place_update(device):
    w = _t([1.0, 2.0], device, requires_grad=True)
    opt = gg.optim.SGD([w], lr=0.5, momentum=0.9)
    for _ in range(2):
        opt.zero_grad()
        (w * w).sum().backward()
        opt.step()
        with gg.no_grad():
            w.mul_(0.5)  # e.g. a manual rescale between steps
    assert opt.state[w]["momentum_buffer"] is not None
    # by hand: b1 = 2w0; w = (w0 - 0.5 b1)/2 = 0; then g = 0, b2 = 0.9 b1, w = (0 - 0.45 b1) / 2
    np.testing.assert_allclose(w.numpy(), -0.225 * 2 * np.array([1.0, 2.0]))


def test_torch_spelled_conveniences(device):
    t = gg.arange(6, device=device)
    assert t.numel() == 6 and t.dim() == 1
    m = t.view(2, 3)
    assert m.size == 6 and m.size() == (2, 3) and m.size(0) == 2 and m.size(-1) == 3
    assert type(m.size + 0) is int  # arithmetic gives plain ints (NumPy's attribute)
    with pytest.raises(IndexError, match=r"size: dim 2 is out of range.*\(2, 3\)"):
        m.size(2)
    assert t.view(2, 3).shape == (2, 3) and t.view((3, -1)).shape == (3, 2)
    assert t.float().dtype == np.float32 and t.double().dtype == np.float64
    assert t.half().dtype == np.float16 and t.double().long().dtype == np.int64
    x = _t([-0.0, 1.5], device, requires_grad=True)
    c = x.clone()
    assert c.data is not x.data and np.signbit(c.numpy()[0])
    (c * 3).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [3.0, 3.0])


@pytest.mark.parametrize("make", [lambda ps: gg.optim.SGD(ps, lr=0.1, momentum=0.9),
                                  lambda ps: gg.optim.Adam(ps, lr=0.1),
                                  lambda ps: gg.optim.Adam(ps, lr=0.1, amsgrad=True),
                                  lambda ps: gg.optim.RMSprop(ps, lr=0.1),
                                  lambda ps: gg.optim.Adagrad(ps, lr=0.1)],
                         ids=["sgd", "adam", "adam-amsgrad", "rmsprop", "adagrad"])
def test_an_optimizer_step_never_changes_values_a_graph_saved(device, make):
    """A step between a forward pass and its backward (as in GAN loops): PyTorch raises at
    backward; here the graph keeps the values it was built with."""
    w = _t([1.0, -2.0], device, requires_grad=True)
    opt = make([w])
    y = (w * w).sum()  # saves w for d/dw = 2w
    w.grad = _t([1.0, 1.0], device)
    opt.step()
    assert not np.array_equal(w.numpy(), [1.0, -2.0])  # the parameter did move
    w.grad = None
    y.backward()
    np.testing.assert_array_equal(w.grad.numpy(), [2.0, -4.0])


def test_load_state_dict_and_init_never_change_values_a_graph_saved(device):
    lin = gg.nn.Linear(2, 1, bias=False).to(device)
    x = gg.ones(3, 2, device=device, requires_grad=True)
    y = lin(x).sum()  # d/dx saves the weight
    w_before = lin.weight.numpy()
    lin.load_state_dict({"weight": np.full((1, 2), 5.0, dtype=np.float32)})
    gg.nn.init.zeros_(lin.weight)
    y.backward()
    np.testing.assert_array_equal(x.grad.numpy(), np.repeat(w_before, 3, axis=0))


def test_setitem_with_a_value_that_requires_grad_is_recorded(device):
    w = _t([1.0, 2.0], device, requires_grad=True)
    x = gg.zeros(4, dtype=gg.float64, device=device)
    x[1:3] = w * 3
    assert x.requires_grad and x.grad_fn is not None
    (x * _t([1.0, 2.0, 3.0, 4.0], device)).sum().backward()
    np.testing.assert_allclose(w.grad.numpy(), [6.0, 9.0])


def test_setitem_on_a_non_leaf_passes_gradient_where_the_old_values_survive(device):
    a = _t([1.0, 2.0, 3.0], device, requires_grad=True)
    y = a * 2
    y[_t([True, False, True], device).astype(bool)] = 0.0
    y.sum().backward()
    np.testing.assert_allclose(y.numpy(), [0.0, 4.0, 0.0])
    np.testing.assert_allclose(a.grad.numpy(), [0.0, 2.0, 0.0])


def test_setitem_gradcheck_and_second_order(device):
    def fn(x, v):
        out = x * 1.0
        out[0, 1:] = v * v  # v broadcasts over the row slice
        return out * x

    x = _t(np.arange(6.0).reshape(2, 3) + 1, device, requires_grad=True)
    v = _t([0.5], device, requires_grad=True)
    assert gg.gradcheck(fn, [x, v])
    (g,) = gg.grad(fn(x, v).sum(), v, create_graph=True)
    (h,) = gg.grad(g.sum(), v)
    np.testing.assert_allclose(g.numpy(), [2 * 0.5 * (2.0 + 3.0)])  # d/dv Σ v²·x[0,1:]
    np.testing.assert_allclose(h.numpy(), [2 * (2.0 + 3.0)])


def test_setitem_on_a_leaf_that_requires_grad(device):
    w = _t([1.0, 2.0], device, requires_grad=True)
    with gg.no_grad():
        w[0] = 5.0  # e.g. fixing a padding row by hand
    assert w.is_leaf and w.requires_grad
    np.testing.assert_array_equal(w.numpy(), [5.0, 2.0])
    with pytest.raises(RuntimeError, match=r"__setitem__: a leaf tensor that requires grad"):
        w[1] = 0.0


def test_create_graph_uses_saved_values_or_refuses(device):
    x = _t([1.0, 1.0], device)
    w = _t([1.0, 1.0], device, requires_grad=True)
    y = (x * w * w).sum()
    x += 1.0  # a constant changed after the forward pass: the saved value is used
    (g,) = gg.grad(y, w, create_graph=True)
    np.testing.assert_allclose(g.numpy(), [2.0, 2.0])  # 2·x_old·w
    v = _t([1.0, 2.0], device, requires_grad=True)
    z = (v * v).sum()
    with gg.no_grad():
        v -= 1.0  # a leaf: its old value cannot be linked back to it
    with pytest.raises(RuntimeError, match=r"create_graph=True: a leaf tensor of shape \(2,\) "
                                           r"saved by Mul was changed in place"):
        gg.grad(z, v, create_graph=True, retain_graph=True)
    np.testing.assert_allclose(gg.grad(z, v)[0].numpy(), [2.0, 4.0])  # first order: old values


def test_recorded_setitem_value_forms(device):
    x = _t([1.0, 1.0, 1.0, 1.0], device, requires_grad=True)
    y = x * 2
    y[:2] = [5.0, 6.0]  # a list, recorded
    y.sum().backward()
    np.testing.assert_array_equal(y.numpy(), [5.0, 6.0, 2.0, 2.0])
    np.testing.assert_array_equal(x.grad.numpy(), [0.0, 0.0, 2.0, 2.0])
    m = _t(np.ones((3, 4)), device, requires_grad=True) * 1
    v = _t(np.ones((1, 4)), device, requires_grad=True)  # an extra leading 1-dim
    m[0] = v
    m.sum().backward()
    assert v.grad.shape == (1, 4)
    np.testing.assert_array_equal(v.grad.numpy(), np.ones((1, 4)))


def test_integer_targets_are_never_recorded(device):
    w = _t([1.7, 2.5, 3.5], device, requires_grad=True)
    c = gg.zeros(3, dtype=gg.int64, device=device)
    c[0:1] = w[0:1]
    d = gg.zeros(3, dtype=gg.int64, device=device)
    d.copy_(w * 1)
    for t in (c, d):
        assert t.dtype == np.int64 and not t.requires_grad and t.grad_fn is None
    np.testing.assert_array_equal(d.numpy(), [1, 2, 3])


def test_create_graph_accepts_a_saved_constant_that_later_joined_the_graph(device):
    x = _t([1.0, 2.0], device, requires_grad=True)
    c = gg.ones(2, dtype=gg.float64, device=device)
    y = (x * c * x).sum()
    c[0] = x[0] * 1  # c now requires grad, but it was a constant when y was recorded
    (g,) = gg.grad(y, x, create_graph=True)
    np.testing.assert_allclose(g.numpy(), [2.0, 4.0])


def test_size_copies_and_pickles_as_an_int():
    import copy
    import pickle

    n = gg.zeros(2, 3).size
    for c in (copy.copy(n), copy.deepcopy(n), pickle.loads(pickle.dumps(n))):
        assert c == 6 and type(c) is int


def test_setitem_and_sign_errors_name_the_op_and_shapes(device):
    t = gg.zeros(3, 4, device=device)
    with pytest.raises(ValueError, match=r"__setitem__: a value of shape \(5,\) does not fit the "
                                         r"selected elements of a tensor of shape \(3, 4\)"):
        t[0] = gg.ones(5, device=device)
    y = gg.ones(3, 4, device=device, requires_grad=True) * 1
    with pytest.raises(ValueError, match=r"__setitem__: a value of shape \(5,\)"):
        y[0] = gg.ones(5, device=device)  # the recorded path
    with pytest.raises(TypeError, match=r"sign: expected a numeric tensor, got dtype bool"):
        gg.sign(gg.tensor([True], device=device))
