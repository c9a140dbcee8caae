"""Errors: ValueError naming the op and the shapes, TypeError for wrong types, IndexError for
out-of-bounds indices (with the shape), on every device."""

from __future__ import annotations

import re

import numpy as np
import pytest

import gpugrad as gg


def _t(shape, device, dtype=gg.float32):
    return gg.tensor(np.ones(shape), dtype=dtype, device=device)


def _names(msg: str, op: str, *shapes) -> None:
    assert op in msg, msg
    for s in shapes:
        assert str(tuple(s)) in msg, (s, msg)


SHAPE_ERRORS = {
    "add": (lambda d: _t((2, 3), d) + _t((4,), d), [(2, 3), (4,)]),
    "sub": (lambda d: _t((2, 3), d) - _t((2, 2), d), [(2, 3), (2, 2)]),
    "mul": (lambda d: _t((3,), d) * _t((2,), d), [(3,), (2,)]),
    "div": (lambda d: _t((3, 1), d) / _t((2, 4), d), [(3, 1), (2, 4)]),
    "maximum": (lambda d: gg.maximum(_t((3,), d), _t((4,), d)), [(3,), (4,)]),
    "matmul": (lambda d: _t((2, 3), d) @ _t((4, 2), d), [(2, 3), (4, 2)]),
    "matmul ": (lambda d: gg.matmul(_t((5,), d), _t((3,), d)), [(5,), (3,)]),
    "matmul  ": (lambda d: _t((2, 2, 3), d) @ _t((3, 3, 2), d), [(2, 2, 3), (3, 3, 2)]),
    "reshape": (lambda d: _t((2, 3), d).reshape(4, 2), [(2, 3), (4, 2)]),
    "reshape ": (lambda d: _t((2, 3), d).reshape(-1, 4), [(2, 3)]),
    "broadcast_to": (lambda d: gg.broadcast_to(_t((2, 3), d), (3, 3)), [(2, 3), (3, 3)]),
    "concatenate": (lambda d: gg.concatenate([_t((2, 3), d), _t((2, 4), d)]), [(2, 3), (2, 4)]),
    "stack": (lambda d: gg.stack([_t((2, 3), d), _t((3, 2), d)]), [(2, 3), (3, 2)]),
    "linear": (lambda d: gg.linear(_t((2, 3), d), _t((4, 2), d)), [(2, 3), (4, 2)]),
    "linear ": (lambda d: gg.linear(_t((2, 3), d), _t((4, 3), d), _t((3,), d)), [(3,), (4, 3)]),
    "where": (lambda d: gg.where(_t((2, 3), d, gg.bool_), _t((2, 3), d), _t((4,), d)),
              [(2, 3), (4,)]),
}


@pytest.mark.parametrize("name", list(SHAPE_ERRORS))
def test_shape_mismatch_value_error_names_op_and_shapes(device, name):
    fn, shapes = SHAPE_ERRORS[name]
    with pytest.raises(ValueError) as info:
        fn(device)
    _names(str(info.value), name.strip(), *shapes)


def test_reshape_two_minus_ones(device):
    with pytest.raises(ValueError, match=re.escape("reshape: only one dimension can be -1")):
        _t((2, 3), device).reshape(-1, -1)


def test_matmul_scalar_operand(device):
    with pytest.raises(ValueError, match="matmul.*at least 1 dim"):
        gg.matmul(_t((), device), _t((2,), device))


# -- wrong types --------------------------------------------------------------------------------
@pytest.mark.parametrize("data", ["abc", None, {"a": 1}, ["1", 2], object()])
def test_tensor_from_non_numbers_type_error(device, data):
    with pytest.raises(TypeError, match="tensor"):
        gg.tensor(data, device=device)


def test_tensor_from_ragged_list_type_error(device):
    with pytest.raises(TypeError, match="tensor"):
        gg.tensor([[1], [1, 2]], device=device)


def test_where_needs_bool_condition(device):
    with pytest.raises(TypeError, match="where.*bool"):
        gg.where(_t((3,), device), _t((3,), device), 0.0)
    with pytest.raises(TypeError, match="where.*bool"):
        gg.where(_t((3,), device, gg.int64), 1.0, 0.0)


@pytest.mark.parametrize("op", ["softmax", "log_softmax", "logsumexp"])
def test_softmax_family_on_int_tensor(device, op):
    with pytest.raises(TypeError, match=f"{op}.*floating"):
        getattr(gg, op)(gg.tensor([1, 2, 3], device=device))


def test_requires_grad_on_int_tensor(device):
    with pytest.raises(TypeError, match="floating"):
        gg.tensor([1, 2], device=device).requires_grad_()


def test_operand_of_wrong_type(device):
    with pytest.raises(TypeError):
        _t((2,), device) + "x"
    with pytest.raises(TypeError):
        gg.exp("x")
    with pytest.raises(TypeError, match="sum: axis"):
        _t((2, 3), device).sum(axis=1.5)
    with pytest.raises(TypeError, match="device"):
        gg.zeros(2, device=3)


# -- bad axes -----------------------------------------------------------------------------------
BAD_AXES = {
    "sum": lambda d: _t((2, 3), d).sum(axis=2),
    "mean": lambda d: gg.mean(_t((2, 3), d), axis=-3),
    "max": lambda d: gg.max(_t((2, 3), d), axis=(0, 5)),
    "min": lambda d: gg.min(_t((2, 3), d), axis=(1, -1)),  # repeated
    "logsumexp": lambda d: gg.logsumexp(_t((2, 3), d), axis=3),
    "softmax": lambda d: gg.softmax(_t((2, 3), d), axis=2),
    "log_softmax": lambda d: gg.log_softmax(_t((2,), d), axis=-2),
    "squeeze": lambda d: gg.squeeze(_t((2, 1), d), 2),
    "squeeze ": lambda d: gg.squeeze(_t((2, 1), d), 0),  # size 2, not 1
    "unsqueeze": lambda d: gg.unsqueeze(_t((2, 1), d), 4),
    "swapaxes": lambda d: gg.swapaxes(_t((2, 1), d), 0, 3),
    "transpose": lambda d: gg.transpose(_t((2, 3), d), (0, 0)),
    "transpose ": lambda d: gg.transpose(_t((2, 3), d), (0, 5)),
    "transpose  ": lambda d: gg.transpose(_t((2, 3, 4), d), (1, 0)),
    "concatenate": lambda d: gg.concatenate([_t((2,), d), _t((2,), d)], axis=1),
    "stack": lambda d: gg.stack([_t((2,), d), _t((2,), d)], axis=3),
    "sum  ": lambda d: gg.sum(_t((), d), axis=0),
}


@pytest.mark.parametrize("op", list(BAD_AXES))
def test_bad_axis_value_error(device, op):
    with pytest.raises(ValueError) as info:
        BAD_AXES[op](device)
    assert str(info.value).startswith(op.strip() + ":"), str(info.value)


# -- indexing -----------------------------------------------------------------------------------
OUT_OF_BOUNDS = {
    "int": 5,
    "negative int": (slice(None), -4),
    "int in second axis": (0, 3),
    "list": [0, 2],
    "negative list": (slice(None), [-4]),
    "int tensor": "tensor",
    "too many": (0, 0, 0),
    "bad mask": np.array([True, False, True]),
}


@pytest.mark.parametrize("name", list(OUT_OF_BOUNDS))
def test_out_of_bounds_index_error_mentions_shape(device, name):
    x = _t((2, 3), device)
    idx = OUT_OF_BOUNDS[name]
    if isinstance(idx, str):
        idx = gg.tensor([0, 1, 7], device=device)
    with pytest.raises(IndexError) as info:
        x[idx]
    assert "(2, 3)" in str(info.value), str(info.value)


def test_float_and_float_array_indices_rejected(device):
    x = _t((2, 3), device)
    with pytest.raises(IndexError, match="getitem"):
        x[1.5]
    with pytest.raises(IndexError, match="integer or bool"):
        x[gg.tensor([0.5], device=device)]


@pytest.mark.parametrize("make", [
    lambda d, dt: gg.zeros(2, dtype=dt, device=d),
    lambda d, dt: gg.full((2,), 1.0, dtype=dt, device=d),
    lambda d, dt: gg.arange(3, dtype=dt, device=d),
    lambda d, dt: gg.randn(2, dtype=dt, device=d),
    lambda d, dt: gg.tensor([1.0], dtype=dt, device=d),
    lambda d, dt: gg.ones(2, device=d).astype(dt),
    lambda d, dt: gg.nn.Linear(2, 2).to(d).to(dtype=dt),
], ids=["zeros", "full", "arange", "randn", "tensor", "astype", "Module.to"])
@pytest.mark.parametrize("dtype", ["floaty", "str", object, "datetime64[s]"])
def test_bad_dtypes_are_type_errors_naming_the_op(device, make, dtype):
    with pytest.raises(TypeError, match=r"^(zeros|full|arange|randn|tensor|astype|Module\.to): "):
        make(device, dtype)
