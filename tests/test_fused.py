"""The fused entry points (backend.fused: fused_reference / fused_cuda) against float64 references.

One body per test runs on every available device. On CUDA every output buffer is poisoned with NaN
before its kernel runs (fused_cuda.POISON_OUTPUTS), so an element a kernel forgets to write fails.
"""

from __future__ import annotations

import contextlib
import warnings

import numpy as np
import pytest
from conftest import DEVICES

from gpugrad.backend import device as get_device

IGNORE = -100
TOL = {np.float32: 1e-6, np.float64: 1e-12, np.float16: 2e-3}


@pytest.fixture(params=DEVICES)
def dev(request, monkeypatch):
    d = get_device(request.param)
    if d.type == "cuda":
        from gpugrad.backend import fused_cuda

        monkeypatch.setattr(fused_cuda, "POISON_OUTPUTS", True)
    return d


def put(d, a):
    return d.backend.asarray(a)


def host(d, a) -> np.ndarray:
    return np.asarray(d.backend.to_host(a))


def misaligned(d, a: np.ndarray):
    """``a`` on the device as a contiguous view starting one element into a larger buffer."""
    buf = put(d, np.concatenate([np.zeros(1, a.dtype), a.ravel()]))
    return buf[1:].reshape(a.shape)


def rel_err(out, ref) -> float:
    out, ref = np.asarray(out, np.float64), np.asarray(ref, np.float64)
    den = np.linalg.norm(ref)
    num = np.linalg.norm(out - ref)
    return float(num / den) if den else float(num)


def assert_close(out, ref, dtype, what=""):
    assert out.shape == np.shape(ref), (what, out.shape, np.shape(ref))
    assert np.isfinite(out).all() == np.isfinite(ref).all(), what
    err = rel_err(out, ref)
    assert err <= TOL[dtype], f"{what}: relative error {err:.3g} > {TOL[dtype]}"


@contextlib.contextmanager
def no_warnings():
    """Overflow/invalid-value RuntimeWarnings (e.g. exp(1000) on the CPU path) become errors."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


# ---------------------------------------------------------------------------------------------
# references (float64, formulas independent of the implementation where possible)


def sigmoid_ref(x):
    return np.exp(-np.logaddexp(0.0, -np.asarray(x, np.float64)))


def ce_ref(x, labels, reduction, gy=None):
    x = np.asarray(x, np.float64)
    N, C = x.shape
    valid = labels != IGNORE
    safe = np.where(valid, labels, 0)
    lse = np.logaddexp.reduce(x, axis=1) if C else np.zeros(N)
    rows = np.where(valid, lse - x[np.arange(N), safe] if C else 0.0, 0.0)
    p = np.exp(x - lse[:, None])
    p[np.arange(N)[valid], safe[valid]] -= 1
    p[~valid] = 0
    count = valid.sum()
    if reduction == "none":
        scale = np.ones(N) if gy is None else np.asarray(gy, np.float64)
        return rows, p * scale[:, None]
    g = 1.0 if gy is None else float(gy)
    if reduction == "sum":
        return rows.sum(), p * g
    with np.errstate(all="ignore"):
        return rows.sum() / count, p * (g / count if count else 0.0)


def bce_ref(z, t, reduction, gy=None):
    z, t = np.asarray(z, np.float64), np.asarray(t, np.float64)
    loss = t * np.logaddexp(0.0, -z) + (1 - t) * np.logaddexp(0.0, z)
    grad = sigmoid_ref(z) - t
    if reduction == "none":
        return loss, grad * (1.0 if gy is None else np.asarray(gy, np.float64))
    g = 1.0 if gy is None else float(gy)
    if reduction == "sum":
        return loss.sum(), grad * g
    return loss.mean(), grad * (g / max(z.size, 1))


# ---------------------------------------------------------------------------------------------
# sigmoid


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
@pytest.mark.parametrize("shape", [(0,), (1,), (3,), (4,), (5,), (1023,), (4097,), (3, 5, 7), ()])
def test_sigmoid_forward_backward(dev, dtype, shape):
    rng = np.random.default_rng(sum(shape) * 31 + np.dtype(dtype).itemsize)
    x = np.asarray(rng.standard_normal(shape) * 6, dtype)
    if x.size >= 4:
        x.ravel()[:4] = [1000, -1000, 0, -30]
    gy = np.asarray(rng.standard_normal(shape), dtype)
    f = dev.backend.fused
    with no_warnings():
        y = f.sigmoid_forward(put(dev, x))
        gx = f.sigmoid_backward(y, put(dev, gy))
    y, gx = host(dev, y), host(dev, gx)
    assert y.dtype == dtype and gx.dtype == dtype
    assert_close(y, sigmoid_ref(x), dtype, "sigmoid")
    yd = y.astype(np.float64)
    assert_close(gx, (1 - yd) * yd * gy, dtype, "sigmoid backward")
    if x.size >= 4:
        assert y.ravel()[:3].tolist() == [1.0, 0.0, 0.5]
        assert 0 < y.ravel()[3] < 1e-12 or dtype == np.float16  # relative precision near 0


def test_sigmoid_unaligned_and_large(dev):
    x = np.random.default_rng(1).standard_normal(70_001).astype(np.float32) * 20
    f = dev.backend.fused
    y1 = host(dev, f.sigmoid_forward(misaligned(dev, x)))
    y2 = host(dev, f.sigmoid_forward(put(dev, x)))
    assert_close(y1, sigmoid_ref(x), np.float32, "unaligned")
    np.testing.assert_array_equal(y1, y2)
    gx = host(dev, f.sigmoid_backward(misaligned(dev, y2), misaligned(dev, x)))
    np.testing.assert_array_equal(gx, host(dev, f.sigmoid_backward(put(dev, y2), put(dev, x))))


def test_sigmoid_rejects_integers(dev):
    with pytest.raises(TypeError, match="sigmoid"):
        dev.backend.fused.sigmoid_forward(put(dev, np.arange(3)))


# ---------------------------------------------------------------------------------------------
# softmax cross-entropy

CE_SHAPES = [(37, 1), (37, 2), (53, 10), (7, 31), (19, 33), (5, 1000), (4, 1027), (3, 32768),
             (2, 100000), (3000, 10)]  # fmt: skip


def ce_case(N, C, dtype, seed=0, scale=3.0):
    rng = np.random.default_rng(seed + 7919 * C + N)
    x = (rng.standard_normal((N, C)) * scale).astype(dtype)
    labels = rng.integers(0, max(C, 1), N)
    labels[rng.random(N) < 0.2] = IGNORE
    return x, labels


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("N,C", CE_SHAPES)
def test_cross_entropy(dev, N, C, dtype, reduction):
    x, labels = ce_case(N, C, dtype)
    f = dev.backend.fused
    dx, dl = put(dev, x), put(dev, labels)
    with no_warnings():
        loss, grad = f.softmax_cross_entropy(dx, dl, IGNORE, reduction, True)
        loss_only, none = f.softmax_cross_entropy(dx, dl, IGNORE, reduction, False)
    assert none is None
    ref_loss, ref_grad = ce_ref(x, labels, reduction)
    loss, grad = host(dev, loss), host(dev, grad)
    assert loss.dtype == dtype and grad.dtype == dtype
    assert_close(loss, ref_loss, dtype, "loss")
    assert_close(grad, ref_grad, dtype, "grad")
    np.testing.assert_array_equal(host(dev, loss_only), loss)
    # The recomputing backward with gy = 1 is the fused forward's gradient, bit for bit.
    ones = np.ones(N if reduction == "none" else (), dtype)
    gb = f.softmax_cross_entropy_backward(dx, dl, IGNORE, reduction, put(dev, ones))
    np.testing.assert_array_equal(host(dev, gb), grad)
    # ... and with a random upstream gradient it follows the reference.
    gy = np.random.default_rng(3).standard_normal(ones.shape).astype(dtype)
    gb = f.softmax_cross_entropy_backward(dx, dl, IGNORE, reduction, put(dev, gy))
    assert_close(host(dev, gb), ce_ref(x, labels, reduction, gy)[1], dtype, "backward")


@pytest.mark.parametrize("N,C", [(4, 10), (3, 1000), (2, 5000), (40, 2)])
def test_cross_entropy_extreme_logits(dev, N, C):
    x = np.full((N, C), -1000.0, np.float32)
    x[:, ::2] = 1000.0
    x[-1] = 1e4  # a row of large equal values
    labels = np.arange(N) % C
    f = dev.backend.fused
    with no_warnings():
        loss, grad = f.softmax_cross_entropy(put(dev, x), put(dev, labels), IGNORE, "none", True)
    loss, grad = host(dev, loss), host(dev, grad)
    ref_loss, ref_grad = ce_ref(x, labels, "none")
    assert np.isfinite(loss).all() and np.isfinite(grad).all()
    assert_close(loss, ref_loss, np.float32, "extreme loss")
    assert_close(grad, ref_grad, np.float32, "extreme grad")
    assert loss[-1] == pytest.approx(np.log(C), rel=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
@pytest.mark.parametrize("N,C", [(1, 1), (64, 10), (7, 31), (3, 1000)])
def test_cross_entropy_reference_every_row_path_is_the_general_one(dev, N, C, dtype):
    """With every label a class the reference skips its masks; the result is bit for bit what
    the masked path gives (forced here by an ignore_index that is a class no row has)."""
    f = dev.backend.reference
    rng = np.random.default_rng(N * C)
    x = (rng.standard_normal((N, C + 1)) * 4).astype(dtype)
    if N > 2:
        x[1, 0], x[2, 1] = np.inf, np.nan  # non-finite rows propagate alike, silently
    labels = rng.integers(0, C, N)  # never C: the absent class below
    dx, dl = put(dev, x), put(dev, labels)
    for reduction in ("mean", "sum", "none"):
        for with_grad in (False, True):
            with no_warnings():
                fast = f.softmax_cross_entropy(dx, dl, IGNORE, reduction, with_grad)
                masked = f.softmax_cross_entropy(dx, dl, C, reduction, with_grad)
            for a, b in zip(fast, masked):
                if a is None:
                    assert b is None
                    continue
                a, b = host(dev, a), host(dev, b)
                assert a.dtype == b.dtype == dtype and a.shape == b.shape
                assert a.tobytes() == b.tobytes(), (reduction, with_grad)


@pytest.mark.parametrize("dtype", [np.int8, np.int32, np.int64, np.uint8, np.uint64])
def test_labels_in_range(dev, dtype):
    from gpugrad.backend.errors import labels_in_range

    assert labels_in_range(put(dev, np.zeros(0, dtype)), 0)
    assert labels_in_range(put(dev, np.array([0, 4, 2], dtype)), 5)
    assert not labels_in_range(put(dev, np.array([0, 5, 2], dtype)), 5)
    assert not labels_in_range(put(dev, np.array([1, 1], dtype)), 0)
    if np.dtype(dtype).kind == "i":
        assert not labels_in_range(put(dev, np.array([3, -1], dtype)), 5)
        assert not labels_in_range(put(dev, np.array([np.iinfo(dtype).min], dtype)), 5)
        # a strided view is read in place, every other element
        assert labels_in_range(put(dev, np.array([1, -1, 2, -1], dtype))[::2], 5)
        assert not labels_in_range(put(dev, np.array([-1, 1, 2, 1], dtype))[::2], 5)


def test_cross_entropy_all_ignored_and_empty(dev):
    f = dev.backend.fused
    x = np.random.default_rng(0).standard_normal((6, 5)).astype(np.float32)
    ign = np.full(6, IGNORE)
    loss, grad = f.softmax_cross_entropy(put(dev, x), put(dev, ign), IGNORE, "mean", True)
    assert np.isnan(host(dev, loss)) and not host(dev, grad).any()
    loss, _ = f.softmax_cross_entropy(put(dev, x), put(dev, ign), IGNORE, "sum", False)
    assert host(dev, loss) == 0
    loss, grad = f.softmax_cross_entropy(put(dev, x), put(dev, ign), IGNORE, "none", True)
    assert not host(dev, loss).any() and not host(dev, grad).any()
    e = np.zeros((0, 5), np.float32)
    loss, grad = f.softmax_cross_entropy(put(dev, e), put(dev, np.zeros(0, np.int64)), IGNORE,
                                         "mean", True)  # fmt: skip
    assert np.isnan(host(dev, loss)) and host(dev, grad).shape == (0, 5)


@pytest.mark.parametrize("C", [10, 1000, 32768])
def test_cross_entropy_bad_labels_raise(dev, C):
    N = 9
    x, labels = ce_case(N, C, np.float32)
    f = dev.backend.fused
    for bad in (C, -1, 10**9):
        lab = labels.copy()
        lab[4] = bad
        with pytest.raises(ValueError, match="cross_entropy") as info:
            f.softmax_cross_entropy(put(dev, x), put(dev, lab), IGNORE, "mean", True)
        msg = str(info.value)
        assert f"N={N}" in msg and f"C={C}" in msg and str(bad) in msg


def test_cross_entropy_misaligned_int32_labels_and_half(dev):
    f = dev.backend.fused
    x, labels = ce_case(6, 1000, np.float32)
    loss, grad = f.softmax_cross_entropy(misaligned(dev, x), put(dev, labels.astype(np.int32)),
                                         IGNORE, "mean", True)  # fmt: skip
    ref_loss, ref_grad = ce_ref(x, labels, "mean")
    assert_close(host(dev, loss), ref_loss, np.float32, "misaligned loss")
    assert_close(host(dev, grad), ref_grad, np.float32, "misaligned grad")
    xh = x.astype(np.float16)
    loss, grad = f.softmax_cross_entropy(put(dev, xh), put(dev, labels), IGNORE, "mean", True)
    assert host(dev, loss).dtype == np.float16 and host(dev, grad).dtype == np.float16
    ref_loss, ref_grad = ce_ref(xh, labels, "mean")
    assert_close(host(dev, loss), ref_loss, np.float16, "half loss")
    assert_close(host(dev, grad), ref_grad, np.float16, "half grad")


def test_cross_entropy_shape_errors(dev):
    f = dev.backend.fused
    x = put(dev, np.zeros((3, 4), np.float32))
    with pytest.raises(ValueError, match=r"cross_entropy.*\(3, 4\)"):
        f.softmax_cross_entropy(x, put(dev, np.zeros(2, np.int64)), IGNORE, "mean", False)
    with pytest.raises(TypeError, match="cross_entropy.*float"):
        f.softmax_cross_entropy(x, put(dev, np.zeros(3, np.float32)), IGNORE, "mean", False)
    with pytest.raises(ValueError, match="reduction"):
        f.softmax_cross_entropy(x, put(dev, np.zeros(3, np.int64)), IGNORE, "avg", False)


# ---------------------------------------------------------------------------------------------
# binary cross-entropy with logits


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(1,), (7,), (33, 17), (100_003,)])
def test_bce_with_logits(dev, shape, dtype, reduction):
    rng = np.random.default_rng(len(shape) * 1000 + shape[0])
    z = (rng.standard_normal(shape) * 8).astype(dtype)
    t = rng.random(shape).astype(dtype)
    if z.size >= 4:
        z.ravel()[:4], t.ravel()[:4] = [1000, -1000, 1000, -1000], [1, 0, 0, 1]
    f = dev.backend.fused
    dz, dt = put(dev, z), put(dev, t)
    with no_warnings():
        loss, grad = f.bce_with_logits(dz, dt, reduction, True)
        loss_only, _ = f.bce_with_logits(dz, dt, reduction, False)
    ref_loss, ref_grad = bce_ref(z, t, reduction)
    loss, grad = host(dev, loss), host(dev, grad)
    assert loss.dtype == dtype and grad.dtype == dtype
    assert_close(loss, ref_loss, dtype, "bce loss")
    assert_close(grad, ref_grad, dtype, "bce grad")
    np.testing.assert_array_equal(host(dev, loss_only), loss)
    if reduction == "none" and z.size >= 4:
        assert loss.ravel()[:4].tolist() == [0.0, 0.0, 1000.0, 1000.0]  # exact at |z| = 1000
    gy = np.asarray(rng.standard_normal(shape if reduction == "none" else ()), dtype)
    gb = host(dev, f.bce_with_logits_backward(dz, dt, reduction, put(dev, gy)))
    assert_close(gb, bce_ref(z, t, reduction, gy)[1], dtype, "bce backward")
    ones = np.ones(gy.shape, dtype)
    np.testing.assert_array_equal(
        host(dev, f.bce_with_logits_backward(dz, dt, reduction, put(dev, ones))), grad
    )


def test_bce_empty_half_and_errors(dev):
    f = dev.backend.fused
    e = put(dev, np.zeros(0, np.float32))
    assert np.isnan(host(dev, f.bce_with_logits(e, e, "mean", True)[0]))
    assert host(dev, f.bce_with_logits(e, e, "sum", False)[0]) == 0
    z = np.linspace(-20, 20, 101).astype(np.float16)
    t = (np.arange(101) % 2).astype(np.float16)
    loss, grad = f.bce_with_logits(put(dev, z), put(dev, t), "mean", True)
    assert host(dev, loss).dtype == np.float16
    ref_loss, ref_grad = bce_ref(z, t, "mean")
    assert_close(host(dev, loss), ref_loss, np.float16, "half bce")
    assert_close(host(dev, grad), ref_grad, np.float16, "half bce grad")
    with pytest.raises(ValueError, match="binary_cross_entropy_with_logits.*shape"):
        f.bce_with_logits(put(dev, np.zeros(3, np.float32)), put(dev, np.zeros(4)), "mean", False)


# ---------------------------------------------------------------------------------------------
# optimizers: several steps against PyTorch's formulas written out in float64

SHAPES = [(3, 4), (5,), (1,), (37, 3), (0,), (2049,)]


def sgd_ref(p, g, b, lr, momentum, dampening, nesterov, wd, first):
    d = g + wd * p if wd else g.copy()
    if momentum:
        b[...] = d if first else momentum * b + (1 - dampening) * d
        d = d + momentum * b if nesterov else b.copy()
    p -= lr * d


def adam_ref(p, g, m, v, step, lr, beta1, beta2, eps, wd, decoupled):
    if decoupled:
        p *= 1 - lr * wd
    elif wd:
        g = g + wd * p
    m[...] = beta1 * m + (1 - beta1) * g
    v[...] = beta2 * v + (1 - beta2) * g * g
    m_hat, v_hat = m / (1 - beta1**step), v / (1 - beta2**step)
    p -= lr * m_hat / (np.sqrt(v_hat) + eps)


SGD_CFGS = [
    dict(lr=0.1, momentum=0.0, dampening=0.0, nesterov=False, weight_decay=0.0),
    dict(lr=0.05, momentum=0.9, dampening=0.1, nesterov=False, weight_decay=0.01),
    dict(lr=0.05, momentum=0.9, dampening=0.0, nesterov=True, weight_decay=0.0),
]
ADAM_CFGS = [
    dict(lr=1e-2, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0, decoupled=False),
    dict(lr=1e-2, beta1=0.8, beta2=0.99, eps=1e-6, weight_decay=0.05, decoupled=False),
    dict(lr=1e-2, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.05, decoupled=True),
]


def _opt_data(dtype, seed=0, steps=5):
    rng = np.random.default_rng(seed)
    params = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
    grads = [[rng.standard_normal(s).astype(dtype) for s in SHAPES] for _ in range(steps)]
    return params, grads


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
@pytest.mark.parametrize("cfg", range(len(SGD_CFGS)))
def test_sgd_step(dev, dtype, cfg):
    cfg = SGD_CFGS[cfg]
    params, grads = _opt_data(dtype)
    ref_p = [p.astype(np.float64) for p in params]
    ref_b = [np.zeros_like(p) for p in ref_p]
    dp = [put(dev, p) for p in params]
    db = [put(dev, np.zeros_like(p)) for p in params] if cfg["momentum"] else []
    for k, gs in enumerate(grads):
        dev.backend.fused.sgd_step(dp, [put(dev, g) for g in gs], db, first_step=k == 0, **cfg)
        for p, g, b in zip(ref_p, gs, ref_b):
            sgd_ref(p, g.astype(np.float64), b, *cfg.values(), first=k == 0)
    tol = 1e-3 if dtype == np.float16 else TOL[dtype]
    for i, (p, r) in enumerate(zip(dp, ref_p)):
        assert host(dev, p).dtype == dtype
        assert rel_err(host(dev, p), r) <= tol, (i, rel_err(host(dev, p), r))
    for b, r in zip(db, ref_b):
        assert rel_err(host(dev, b), r) <= max(tol, 1e-12) * 10


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
@pytest.mark.parametrize("cfg", range(len(ADAM_CFGS)))
def test_adam_step(dev, dtype, cfg):
    cfg = ADAM_CFGS[cfg]
    params, grads = _opt_data(dtype, seed=1)
    ref = [[p.astype(np.float64), np.zeros(p.shape), np.zeros(p.shape)] for p in params]
    dp = [put(dev, p) for p in params]
    dm = [put(dev, np.zeros_like(p)) for p in params]
    dv = [put(dev, np.zeros_like(p)) for p in params]
    for k, gs in enumerate(grads):
        dev.backend.fused.adam_step(dp, [put(dev, g) for g in gs], dm, dv, step=k + 1, **cfg)
        for (p, m, v), g in zip(ref, gs):
            adam_ref(p, g.astype(np.float64), m, v, k + 1, *cfg.values())
    tol = 1e-3 if dtype == np.float16 else TOL[dtype] * 10
    for i, (p, m, v) in enumerate(ref):
        for out, r in ((dp[i], p), (dm[i], m), (dv[i], v)):
            assert rel_err(host(dev, out), r) <= tol, (i, rel_err(host(dev, out), r))


def test_optimizer_vs_torch(dev):
    torch = pytest.importorskip("torch")
    params, grads = _opt_data(np.float64, seed=2)
    for name, cfg in [("SGD", SGD_CFGS[1]), ("SGD", SGD_CFGS[2]), ("Adam", ADAM_CFGS[1]),
                      ("AdamW", ADAM_CFGS[2])]:  # fmt: skip
        tp = [torch.tensor(p, requires_grad=True) for p in params]
        dp = [put(dev, p) for p in params]
        states = [[put(dev, np.zeros_like(p)) for p in params] for _ in range(2)]
        if name == "SGD":
            opt = torch.optim.SGD(tp, **cfg)
        else:
            opt = getattr(torch.optim, name)(
                tp,
                lr=cfg["lr"],
                betas=(cfg["beta1"], cfg["beta2"]),
                eps=cfg["eps"],
                weight_decay=cfg["weight_decay"],
            )
        for k, gs in enumerate(grads):
            for t, g in zip(tp, gs):
                t.grad = torch.tensor(g)
            opt.step()
            dg = [put(dev, g) for g in gs]
            if name == "SGD":
                dev.backend.fused.sgd_step(dp, dg, states[0], first_step=k == 0, **cfg)
            else:
                dev.backend.fused.adam_step(dp, dg, *states, step=k + 1, **cfg)
        for t, p in zip(tp, dp):
            assert rel_err(host(dev, p), t.detach().numpy()) <= 1e-13, name


def test_optimizer_errors(dev):
    f = dev.backend.fused
    p = [put(dev, np.zeros(3, np.float32))]
    with pytest.raises(ValueError, match="sgd_step.*shape"):
        f.sgd_step(p, [put(dev, np.zeros(4, np.float32))], [], lr=0.1, momentum=0.0,
                   dampening=0.0, nesterov=False, weight_decay=0.0, first_step=True)  # fmt: skip
    with pytest.raises(ValueError, match="adam_step"):
        f.adam_step(p, p, p, [], step=1, lr=0.1, beta1=0.9, beta2=0.9, eps=1e-8,
                    weight_decay=0.0, decoupled=False)  # fmt: skip
    with pytest.raises(ValueError, match="step"):
        f.adam_step(p, p, p, p, step=0, lr=0.1, beta1=0.9, beta2=0.9, eps=1e-8,
                    weight_decay=0.0, decoupled=False)  # fmt: skip


# ---------------------------------------------------------------------------------------------
# determinism: two runs give bit-identical results (reductions are fixed-order trees)


def test_bitwise_determinism(dev):
    f = dev.backend.fused
    outs = []
    for _ in range(2):
        run = []
        for N, C in [(3000, 10), (64, 1000), (8, 32768)]:
            x, labels = ce_case(N, C, np.float32, seed=5)
            loss, grad = f.softmax_cross_entropy(
                put(dev, x), put(dev, labels), IGNORE, "mean", True
            )
            run += [host(dev, loss), host(dev, grad)]
        z = np.random.default_rng(9).standard_normal(300_001).astype(np.float32)
        loss, grad = f.bce_with_logits(put(dev, z), put(dev, z > 0), "mean", True)
        run += [host(dev, loss), host(dev, grad), host(dev, f.sigmoid_forward(put(dev, z)))]
        outs.append(run)
    for a, b in zip(*outs):
        assert a.tobytes() == b.tobytes()
