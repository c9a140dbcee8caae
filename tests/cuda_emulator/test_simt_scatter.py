"""The deterministic scatter-add kernel (kernels/scatter_add.cu via backend/scatter_cuda.py):
NumPy's add.at bit for bit in float32/float64 (same summation order), to rounding in the half
types, identical in every thread order, for Embedding-like and repeat-like index forms."""

from __future__ import annotations

import numpy as np
import pytest
import simt_cupy as cp
from _simt_cases import DTYPES, assert_close, dev, f64, host, np_dtype


def _case(shape, axis, M, dtype, seed=0):
    rng = np.random.default_rng(seed)
    dt = np_dtype(dtype)
    idx = rng.integers(-shape[axis], shape[axis], M)  # negative indices too, many repeats
    idx[: M // 3] = 1  # one heavily repeated index (a padding token)
    out_shape = shape[:axis] + (M,) + shape[axis + 1 :]
    values = rng.standard_normal(out_shape).astype(dt)
    index = (slice(None),) * axis + (idx,)
    return idx, index, values


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,axis,M", [((50, 8), 0, 300), ((7,), 0, 1000),
                                          ((3, 40, 5), 1, 257), ((4, 6), 1, 1)])  # fmt: skip
def test_segment_sum_matches_add_at(emu_scatter, dtype, shape, axis, M):
    idx, index, values = _case(shape, axis, M, dtype)
    target = cp.zeros(shape, np_dtype(dtype))
    dev_index = (slice(None),) * axis + (dev(idx),)
    assert emu_scatter.scatter_add(target, dev_index, dev(values)) is True
    assert [name for name, *_ in cp.launches][-1].startswith("segment_sum_")
    if dtype in ("float32", "float64"):  # same order, same accumulator: identical bits
        want = np.zeros(shape, dtype)
        np.add.at(want, index, values)
        assert (host(target).view(np.uint8) == want.view(np.uint8)).all()
    want64 = np.zeros(shape)
    np.add.at(want64, index, f64(values))
    assert_close(target, want64, dtype, "scatter-add", rtol=2e-2 if dtype == "bfloat16" else 5e-3,
                 cancel=True)  # fmt: skip


def test_scatter_broadcasts_values_and_declines_other_index_forms(emu_scatter):
    target = cp.zeros((5, 3), np.float32)
    assert emu_scatter.scatter_add(target, dev(np.array([0, 0, 4])), dev(np.ones(3, np.float32)))
    assert (host(target)[:, 0] == [2, 0, 0, 0, 1]).all() and (host(target)[0] == 2).all()
    two_arrays = (dev(np.array([0, 1])), dev(np.array([1, 2])))
    assert emu_scatter.scatter_add(target, two_arrays, dev(np.ones(2, np.float32))) is False
    boolean = dev(np.array([True, False, True, False, True]))
    assert emu_scatter.scatter_add(target, boolean, dev(np.ones((3, 3), np.float32))) is False
    assert emu_scatter.scatter_add(cp.zeros(4, np.int32), dev(np.array([1])),
                                   dev(np.ones(1, np.int32))) is False  # fmt: skip


def test_cuda_backend_uses_the_kernel_and_falls_back_for_other_dtypes(emu_scatter, monkeypatch):
    """CupyBackend.scatter_add: float targets take the deterministic kernel; int64 (which
    cupyx.scatter_add accumulates in CuPy 14) falls back to cupyx; others raise naming dtypes."""
    import sys
    import types

    from .conftest import load_with_standin

    calls = []
    cupyx = types.ModuleType("cupyx")
    cupyx.scatter_add = lambda a, index, values: calls.append(a.dtype)
    monkeypatch.setitem(sys.modules, "cupyx", cupyx)
    monkeypatch.setitem(sys.modules, "gpugrad.backend.scatter_cuda", emu_scatter)
    monkeypatch.setattr(sys.modules["gpugrad.backend"], "scatter_cuda", emu_scatter, raising=False)
    backend = load_with_standin("cupy_backend").CupyBackend(0)
    target = cp.zeros((4, 2), np.float32)
    backend.scatter_add(target, dev(np.array([3, 3])), dev(np.ones((2, 2), np.float32)))
    assert (host(target)[3] == 2).all() and cp.launches[-1][0] == "segment_sum_f32"
    backend.scatter_add(cp.zeros(4, np.int64), dev(np.array([1, 1])), dev(np.ones(2, np.int64)))
    assert calls == [np.dtype(np.int64)]
    with pytest.raises(TypeError, match=r"scatter_add: on the GPU only .*int64.* got bool"):
        backend.scatter_add(cp.zeros(4, bool), dev(np.array([1])), dev(np.ones(1, bool)))
