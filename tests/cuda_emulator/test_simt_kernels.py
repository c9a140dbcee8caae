"""Every kernel of kernels/*.cu, run in the emulator through fused_cuda's real launch code, in
forward, reverse and seeded random thread orders (identical bytes required), against the NumPy
implementation in float64 (tolerances per dtype in _simt_cases.RTOL)."""

from __future__ import annotations

import numpy as np
import pytest
import simt_cupy as cp
from _simt_cases import (
    DTYPES,
    assert_close,
    dev,
    dev_unaligned,
    f64,
    host,
    np_dtype,
    ref64,
)

from gpugrad.backend import checks, fused_reference

CE_C = [1, 2, 10, 31, 32, 33, 1000, 1024, 1025, 40000, 70000]
#: The half dtypes run the float32 CE kernels after a conversion: a few widths cover them.
CE_C_HALF = [10, 33, 1025]


def _ce_case(C: int, dtype: str):
    rng = np.random.default_rng(C)
    N = 37 if C <= 1024 else 3
    dt = np_dtype(dtype)
    x = (rng.standard_normal((N, C)) * 3).astype(dt)
    labels = rng.integers(0, C, N)
    labels[::5] = -100  # ignored rows
    return x, labels


def _ce_params():
    for dtype in DTYPES:
        for C in CE_C_HALF if dtype in ("float16", "bfloat16") else CE_C:
            yield pytest.param(dtype, C, id=f"{dtype}-C{C}")


@pytest.mark.parametrize("dtype,C", list(_ce_params()))
def test_softmax_cross_entropy(emu, dtype, C):
    x, labels = _ce_case(C, dtype)
    xd = dev_unaligned(x) if C % 2 else dev(x)  # odd widths: the scalar-load path as well
    for reduction in ("mean", "sum", "none"):
        loss, grad = emu.softmax_cross_entropy(xd, dev(labels), -100, reduction, True)
        rl, rg = ref64("softmax_cross_entropy", x, labels, -100, reduction, True)
        assert loss.dtype == x.dtype and grad.dtype == x.dtype
        assert_close(loss, rl, dtype, f"loss {reduction}", cancel=True)
        assert_close(grad, rg, dtype, f"grad {reduction}", cancel=True)
        loss_only, none = emu.softmax_cross_entropy(xd, dev(labels), -100, reduction, False)
        assert none is None and (host(loss_only) == host(loss)).all()
        gy = np.full(() if reduction != "none" else labels.shape, 0.75)
        g2 = emu.softmax_cross_entropy_backward(xd, dev(labels), -100, reduction,
                                                dev(gy, x.dtype))  # fmt: skip
        r2 = ref64("softmax_cross_entropy_backward", x, labels, -100, reduction, gy.astype(x.dtype))
        assert_close(g2, r2, dtype, f"backward {reduction}", cancel=True)


@pytest.mark.parametrize("C", [10, 1000, 5000])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_softmax_cross_entropy_special_rows(emu, dtype, C):
    """All rows ignored (mean is NaN, gradient zero), +-inf and NaN logits, ignore_index 3."""
    x = np.random.default_rng(C).standard_normal((6, C)).astype(dtype)
    lab_none = np.full(len(x), 3)
    loss, grad = emu.softmax_cross_entropy(dev(x), dev(lab_none), 3, "mean", True)
    assert np.isnan(host(loss)) and (host(grad) == 0).all()
    x = x.copy()
    x[0, 1], x[1, 2], x[2, :] = np.inf, -np.inf, -np.inf
    x[3, 4] = np.nan
    labels = np.arange(len(x)) % C
    labels[1] = 2  # the label's logit is -inf: infinite loss
    for reduction in ("none", "sum"):
        loss, grad = emu.softmax_cross_entropy(dev(x), dev(labels), -100, reduction, True)
        rl, rg = ref64("softmax_cross_entropy", x, labels, -100, reduction, True)
        assert_close(loss, rl, dtype, f"loss {reduction}", cancel=True)
        assert_close(grad, rg, dtype, f"grad {reduction}", cancel=True)


@pytest.mark.parametrize("C", [7, 100, 2000])
def test_softmax_cross_entropy_bad_label_raises_at_the_next_read(emu, C):
    """The label check is deferred: no host read in the op; the next read raises."""
    x, labels = _ce_case(C, "float32")
    labels[2] = C  # out of range; row 1 stays valid
    labels[3:] = -7  # later bad rows: the first one is reported
    key = ("cuda", 0)
    checks.flush(key, checks.read_cupy)  # nothing left over from other tests
    reads, standin_reads = checks.host_reads(), cp.host_reads
    loss, _ = emu.softmax_cross_entropy(dev(x), dev(labels), -100, "mean", True)
    assert checks.host_reads() == reads and cp.host_reads == standin_reads
    assert checks.pending(key) == 1
    with pytest.raises(ValueError, match=rf"cross_entropy: label {C} at row 2 .*C={C}"):
        checks.flush(key, checks.read_cupy)
    assert checks.host_reads() == reads + 1 and cp.host_reads == standin_reads + 1
    assert checks.pending(key) == 0
    emu.softmax_cross_entropy(dev(x), dev(np.zeros_like(labels)), -100, "mean", True)
    checks.flush(key, checks.read_cupy)  # valid labels: nothing raised


def test_checks_sync_mode_raises_in_the_op(emu, monkeypatch):
    x, labels = _ce_case(10, "float64")
    labels[0] = 10
    monkeypatch.setattr(checks, "_sync", True)
    with pytest.raises(ValueError, match=r"cross_entropy: label 10 at row 0"):
        emu.softmax_cross_entropy(dev(x), dev(labels), -100, "sum", False)
    assert checks.pending(("cuda", 0)) == 0


# ---------------------------------------------------------------------------------------------
# sigmoid


@pytest.mark.parametrize("n", [1, 7, 1001, 70001])
@pytest.mark.parametrize("dtype", DTYPES)
def test_sigmoid(emu, dtype, n):
    dt = np_dtype(dtype)
    rng = np.random.default_rng(n)
    x = (rng.standard_normal(n) * 6).astype(dt)
    x[:3] = np.array([1000.0, -1000.0, 0.0])[: min(3, n)].astype(dt)
    gy = rng.standard_normal(n).astype(dt)
    for make in (dev, dev_unaligned):
        y = emu.sigmoid_forward(make(x))
        assert_close(y, ref64("sigmoid_forward", x), dtype, f"sigmoid {make.__name__}")
        g = emu.sigmoid_backward(make(host(y)), make(gy))
        assert_close(g, ref64("sigmoid_backward", host(y), gy), dtype, "sigmoid backward")
    launched = [(name, vec) for name, *_ in cp.launches for vec in [None]]
    assert {name for name, _ in launched} >= {f"sigmoid_fwd_{emu._suffix(dt)}"}


# ---------------------------------------------------------------------------------------------
# binary cross-entropy with logits


@pytest.mark.parametrize("n", [1, 9, 4099, 70001])
@pytest.mark.parametrize("dtype", DTYPES)
def test_bce_with_logits(emu, dtype, n):
    dt = np_dtype(dtype)
    rng = np.random.default_rng(n)
    z = (rng.standard_normal(n) * 5).astype(dt)
    z[: min(2, n)] = np.array([1000.0, -1000.0])[: min(2, n)].astype(dt)
    t = rng.random(n).astype(dt)
    for make in (dev, dev_unaligned):
        for reduction in ("mean", "sum", "none"):
            loss, grad = emu.bce_with_logits(make(z), make(t), reduction, True)
            rl, rg = ref64("bce_with_logits", z, t, reduction, True)
            if reduction != "sum":  # a float16 sum over 70001 terms may overflow, as it should
                assert np.isfinite(f64(loss)).all()
            assert_close(loss, rl, dtype, f"loss {reduction}", cancel=True)
            assert_close(grad, rg, dtype, f"grad {reduction}", cancel=True)
            gy = rng.standard_normal(n if reduction == "none" else ()).astype(dt)
            g2 = emu.bce_with_logits_backward(make(z), make(t), reduction, make(gy))
            r2 = ref64("bce_with_logits_backward", z, t, reduction, gy)
            assert_close(g2, r2, dtype, f"backward {reduction}", cancel=True)


# ---------------------------------------------------------------------------------------------
# optimizers: many parameters of odd sizes in one launch, one of them unaligned

SHAPES = [(1,), (3,), (2047,), (2048,), (2049,), (7, 9), (5000,)]


def _params(dtype: str, seed: int):
    dt = np_dtype(dtype)
    rng = np.random.default_rng(seed)
    hosts = [rng.standard_normal(s).astype(dt) for s in SHAPES]
    grads = [rng.standard_normal(s).astype(dt) for s in SHAPES]
    return hosts, grads


def _devs(arrays):
    return [dev_unaligned(a) if i == 2 else dev(a) for i, a in enumerate(arrays)]


def _refs(arrays, dtype: str):
    """Reference copies: float64 for float32/float64; for the half types the NumPy twin on the
    half arrays themselves, since rounding the states to 10 or 7 bits each step is the
    semantics (Adam's second moment lives in the half's subnormal range)."""
    return [f64(a) if dtype in ("float32", "float64") else np.array(a) for a in arrays]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("nesterov,wd", [(False, 0.0), (True, 0.01)])
def test_sgd_step(emu, dtype, nesterov, wd):
    ps, gs = _params(dtype, 1)
    bufs = [np.zeros_like(p) for p in ps]
    dps, dbufs = _devs(ps), _devs(bufs)
    rps, rbufs = _refs(ps, dtype), _refs(bufs, dtype)
    kw = dict(lr=0.1, momentum=0.9, dampening=0.1, nesterov=nesterov, weight_decay=wd)
    for step in range(2):
        emu.sgd_step(dps, _devs(gs), dbufs, first_step=step == 0, **kw)
        fused_reference.sgd_step(rps, _refs(gs, dtype), rbufs, first_step=step == 0, **kw)
    for i in range(len(ps)):
        assert_close(dps[i], rps[i], dtype, f"param {i}", rtol=4 * _rt(dtype), cancel=True)
        assert_close(dbufs[i], rbufs[i], dtype, f"momentum {i}", rtol=4 * _rt(dtype), cancel=True)


def _rt(dtype: str) -> float:
    from _simt_cases import RTOL

    return RTOL[dtype]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("decoupled", [False, True])
def test_adam_step(emu, dtype, decoupled):
    ps, gs = _params(dtype, 2)
    ms = [np.zeros_like(p) for p in ps]
    vs = [np.zeros_like(p) for p in ps]
    dps, dms, dvs = _devs(ps), _devs(ms), _devs(vs)
    rps, rms, rvs = (_refs(col, dtype) for col in (ps, ms, vs))
    kw = dict(lr=1e-2, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.01, decoupled=decoupled)
    for step in (1, 2, 3):
        emu.adam_step(dps, _devs(gs), dms, dvs, step=step, **kw)
        fused_reference.adam_step(rps, _refs(gs, dtype), rms, rvs, step=step, **kw)
    for i in range(len(ps)):
        assert_close(dps[i], rps[i], dtype, f"param {i}", rtol=8 * _rt(dtype), cancel=True)
        assert_close(dms[i], rms[i], dtype, f"exp_avg {i}", rtol=8 * _rt(dtype))
        assert_close(dvs[i], rvs[i], dtype, f"exp_avg_sq {i}", rtol=8 * _rt(dtype))
    names = {name for name, *_ in cp.launches}
    assert names == {f"adam_step_{emu._suffix(np_dtype(dtype))}"}  # one kernel for all params


@pytest.mark.parametrize("C", [40, 333, 1000, 1024, 4099])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_softmax_cross_entropy_one_normaliser_per_row(emu, dtype, C):
    """Every entry of a row is normalised with the same (max, sum): entries holding equal logits,
    spread over all lanes, get bit-identical gradients (a per-lane normaliser differs in the
    last bit once the warp's combine is contracted into FMAs, as NVRTC and the emulator do)."""
    rng = np.random.default_rng(C)
    N = 16
    x = rng.standard_normal((N, C)).astype(dtype) * 4
    probes = np.arange(1, C, 3)
    x[:, probes] = x[:, :1]  # equal logits in every lane's share of the row
    labels = np.zeros(N, np.int64)
    _, grad = emu.softmax_cross_entropy(dev(x), dev(labels), -100, "sum", True)
    g = host(grad)[:, probes]
    assert (g == g[:, :1]).all(), f"{int((g != g[:, :1]).sum())} entries normalised differently"


def test_shared_memory_limit_is_set_once_per_kernel(emu):
    x = dev(np.zeros((9, 1000)))  # ce_warp_f64: 8 rows x 8000 bytes of shared memory > 48 KiB
    before = cp.attribute_sets
    emu._smem_allowed.clear()
    for _ in range(3):
        emu.softmax_cross_entropy(x, dev(np.zeros(9, np.int64)), -100, "mean", True)
    assert [s for *_, s in cp.launches if s] == [64000] * 3
    assert cp.attribute_sets == before + 1
