"""Indexing: ``t[idx]`` with ints, slices, None, Ellipsis, integer arrays/tensors and boolean
masks against NumPy on every device, gradients (repeated indices accumulate, second order), the
device-side bounds check, and ``__setitem__``."""

from __future__ import annotations

import numpy as np
import pytest
from _helpers import T, assert_close, check_grad, rand

import gpugrad as gg

# -- indexing ------------------------------------------------------------------------------------
X_SHAPE = (4, 5, 3)
INDICES = {
    "int": 1,
    "negative int": -1,
    "ints": (1, 2),
    "int triple": (3, -1, 0),
    "slice": slice(1, 3),
    "slice step": (slice(None), slice(0, 5, 2)),
    "negative step": (slice(None, None, -1), slice(4, 0, -2)),
    "None": (None, 1),
    "None middle": (slice(None), None, 2),
    "Ellipsis": (Ellipsis, 1),
    "Ellipsis None": (1, Ellipsis, None),
    "list": [0, 0, 2],
    "list negative": [-1, 0, -1, -1],
    "int array 2d": np.array([[0, 1], [1, 1]]),
    "tensor index": "tensor:3,3,0",
    "bool mask full": "mask:full",
    "bool mask axis0": np.array([True, False, True, True]),
    "bool mask 2d": "mask:2d",
    "mixed adv+slice": ([0, 0, 2], slice(1, 4)),
    "mixed slice+adv": (slice(None), [4, 4, 0]),
    "separated adv": ([0, 1, 1], slice(None), [2, 2, 2]),
    "adv + int": (2, [1, 1, 3]),
    "Ellipsis adv": (Ellipsis, [2, 2]),
    "bool + adv": (np.array([True, False, True, False]), [1, 1]),
}


def _host_index(spec, x):
    if isinstance(spec, str) and spec.startswith("tensor:"):
        return np.array([int(v) for v in spec[7:].split(",")])
    if isinstance(spec, str) and spec == "mask:full":
        return x > 0.3
    if isinstance(spec, str) and spec == "mask:2d":
        return x[..., 0] > 0
    return spec


def _device_index(spec, host, device):
    if isinstance(spec, str) and spec.startswith("tensor:"):
        return gg.tensor(host, device=device)
    if isinstance(spec, str):
        return gg.tensor(host, device=device)  # masks as bool tensors
    return spec


@pytest.mark.parametrize("name", list(INDICES))
def test_getitem(device, name):
    x = rand(X_SHAPE, 11)
    spec = INDICES[name]
    hidx = _host_index(spec, x)
    didx = _device_index(spec, hidx, device)
    want = x[hidx]
    y = T(x, device)[didx]
    assert_close(y, want, rtol=0, atol=0)
    w = rand(want.shape, 12)
    t = T(x, device, dtype=gg.float32, requires_grad=True)
    (t[didx] * T(w, device, dtype=gg.float32)).sum().backward()
    expected = np.zeros(X_SHAPE)
    np.add.at(expected, hidx if not isinstance(hidx, list) else np.array(hidx), w)
    assert t.grad.dtype == np.float32
    assert_close(t.grad, expected, rtol=1e-6)
    check_grad(lambda a: a[didx] * T(w, device), [x], device)


def test_mask_among_index_arrays_becomes_integer_indices(device):
    # NumPy reads x[mask, idx] as x[mask.nonzero()[0], idx]; CuPy only takes a lone boolean array,
    # so the recorded index must hold integer arrays only.
    x = rand(X_SHAPE, 3)
    mask = np.array([True, False, True, True])
    t = T(x, device, requires_grad=True)
    y = t[gg.tensor(mask, device=device), [1, 1, 4]]
    assert_close(y, x[mask, [1, 1, 4]], rtol=0, atol=0)
    assert not any(getattr(p, "dtype", None) == np.bool_ for p in y.grad_fn.index)
    y.sum().backward()
    expected = np.zeros(X_SHAPE)
    np.add.at(expected, (mask, [1, 1, 4]), 1.0)
    assert_close(t.grad, expected)


@pytest.mark.parametrize("name", list(INDICES))
def test_device_bounds_check_accepts_valid_indices(name):
    # CuPy wraps out-of-bounds integer-array indices instead of raising, so gpugrad checks them
    # itself on non-CPU devices; run that check here on every valid index form.
    from gpugrad.ops import indexing as ops

    x = rand(X_SHAPE, 11)
    spec = INDICES[name]
    hidx = _host_index(spec, x)
    didx = _device_index(spec, hidx, "cpu")
    parts = tuple(ops._index_part(p, T(x, "cpu"))
                  for p in (didx if isinstance(didx, tuple) else (didx,)))
    ops._check_bounds(parts, X_SHAPE)


@pytest.mark.parametrize("index", [([0, 4],), (slice(None), [5]), (Ellipsis, [-4]),
                                   (None, 1, [0, 5]), (np.array([True, False, True, True]), 0,
                                                       [3])])
def test_device_bounds_check_rejects_out_of_bounds(index):
    from gpugrad.ops import indexing as ops

    x = T(rand(X_SHAPE, 1), "cpu")
    parts = tuple(ops._index_part(p, x) for p in index)
    with pytest.raises(IndexError, match=r"out of bounds.*\(4, 5, 3\)"):
        ops._check_bounds(parts, X_SHAPE)


def test_setitem_values_and_bounds(device):
    """``t[index] = value`` behaves alike on every device: NumPy arrays and lists are brought to
    the tensor's device (CuPy rejects them for slices), integer-array indices are bounds-checked
    (CuPy would wrap them silently) and a value on another device is a DeviceError."""
    t = T(np.zeros((2, 3)), device)
    t[0, 0:2] = np.array([1.0, 2.0])
    t[1] = [3.0, 4.0, 5.0]
    t[[0], [2]] = np.array([6.0])
    t[T(np.array([[False, True, False], [False, False, False]]), "cpu")] = 7.0
    t[[]] = 9.0
    assert_close(t, [[1.0, 7.0, 6.0], [3.0, 4.0, 5.0]])
    for index in ([2], (0, [3]), (Ellipsis, [-4])):
        with pytest.raises(IndexError, match=r"index -?\d+ is out of bounds"):
            t[index] = 0.0
    if device != "cpu":
        with pytest.raises(gg.DeviceError, match="__setitem__"):
            t[0] = gg.tensor([1.0, 2.0, 3.0])
    assert_close(t, [[1.0, 7.0, 6.0], [3.0, 4.0, 5.0]])


def test_getitem_repeated_indices_accumulate(device):
    t = T(np.zeros(3), device, requires_grad=True)
    t[[0, 0, 0, 2]].sum().backward()
    assert_close(t.grad, [3.0, 0.0, 1.0])
    t.grad = None
    idx = gg.tensor([[1, 1], [1, 2]], device=device)
    t[idx].sum().backward()
    assert_close(t.grad, [0.0, 3.0, 1.0])


def test_getitem_second_order(device):
    x = rand((4, 3), 1)
    idx = [2, 0, 2]
    w = rand((3, 3), 2)

    def grad_fn(t):
        with gg.enable_grad():
            y = (t[idx] ** 2 * T(w, device)).sum()
            return gg.grad(y, t, create_graph=True)[0]

    check_grad(grad_fn, [x], device)


def test_bounds_check_after_an_ellipsis_names_a_plain_axis():
    """The check runs where CuPy would wrap silently; ``...`` counts axes with Python's sum."""
    from gpugrad.ops import indexing as ops

    with pytest.raises(IndexError, match=r"index 5 is out of bounds for axis 1 with size 3 "
                                         r"\(tensor shape \(2, 3\)\)"):
        ops._check_bounds((Ellipsis, np.array([0, 5])), (2, 3))
    ops._check_bounds((Ellipsis, np.array([0, -3])), (2, 3))  # in range: no error
