"""Losses in gpugrad.functional: values vs float64 NumPy, gradients vs gradcheck, reductions,
ignore_index, extreme inputs, argument errors, double backward, fused vs composite paths."""

from __future__ import annotations

import numpy as np
import pytest

import gpugrad as gg
import gpugrad.functional as F
from gpugrad.backend import fused_enabled, set_fused

REDUCTIONS = ["mean", "sum", "none"]


def t(a, device, dtype=None, grad=False):
    return gg.tensor(np.asarray(a), dtype=dtype, device=device, requires_grad=grad)


def reduce_ref(v, reduction, count=None):
    if reduction == "none":
        return v
    return v.sum() / (v.size if count is None else count) if reduction == "mean" else v.sum()


def ce_ref(x, y, reduction="mean", ignore_index=-100):
    x = x.astype(np.float64)
    m = x.max(axis=1, keepdims=True)
    lse = np.log(np.exp(x - m).sum(axis=1)) + m[:, 0]
    valid = y != ignore_index
    picked = x[np.arange(len(y)), np.where(valid, y, 0)]
    loss = np.where(valid, lse - picked, 0.0)
    return reduce_ref(loss, reduction, count=valid.sum())


def bce_logits_ref(z, tt, reduction="mean"):
    z = z.astype(np.float64)
    return reduce_ref(np.maximum(z, 0) - z * tt + np.log1p(np.exp(-np.abs(z))), reduction)


def bce_ref(p, tt, reduction="mean"):
    p = p.astype(np.float64)
    with np.errstate(divide="ignore"):
        lp, l1p = np.maximum(np.log(p), -100), np.maximum(np.log1p(-p), -100)
    return reduce_ref(-(tt * lp + (1 - tt) * l1p), reduction)


RNG = np.random.default_rng(0)
X = RNG.standard_normal((7, 5)).astype(np.float32) * 3
Y = np.array([0, 4, 2, 2, 1, 3, 0])
Z = RNG.standard_normal((6, 3)).astype(np.float32) * 4
T = (RNG.random((6, 3)) > 0.5).astype(np.float32)
P = RNG.uniform(0.02, 0.98, (6, 3)).astype(np.float32)


# -- forward values ---------------------------------------------------------------------------
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_forward_matches_float64_reference(device, fused, reduction):
    np.testing.assert_allclose(F.cross_entropy(t(X, device), t(Y, device), reduction).numpy(),
                               ce_ref(X, Y, reduction), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        F.binary_cross_entropy_with_logits(t(Z, device), t(T, device), reduction).numpy(),
        bce_logits_ref(Z, T, reduction), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(F.binary_cross_entropy(t(P, device), t(T, device), reduction)
                               .numpy(), bce_ref(P, T, reduction), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(F.mse_loss(t(Z, device), t(P, device), reduction).numpy(),
                               reduce_ref((Z.astype(np.float64) - P) ** 2, reduction),
                               rtol=1e-5, atol=1e-6)


def test_output_shapes_and_dtypes(device, fused):
    for reduction, shape in (("mean", ()), ("sum", ()), ("none", (7,))):
        out = F.cross_entropy(t(X, device), t(Y, device), reduction)
        assert out.shape == shape and out.dtype == np.float32
    out = F.cross_entropy(t(X, device, np.float64), t(Y, device))
    assert out.dtype == np.float64
    assert F.mse_loss(t(Z, device), t(P, device), "none").shape == Z.shape


def test_cross_entropy_ignore_index(device, fused):
    y = Y.copy()
    y[[1, 4]] = -100
    x = t(X, device, grad=True)
    loss = F.cross_entropy(x, t(y, device))
    np.testing.assert_allclose(loss.numpy(), ce_ref(X, y), rtol=1e-5)
    loss.backward()
    g = x.grad.numpy()
    assert np.all(g[[1, 4]] == 0)
    np.testing.assert_allclose(g.sum(axis=1), 0, atol=1e-6)  # softmax - onehot rows sum to 0
    # a custom ignore_index inside [0, C) also masks rows
    loss = F.cross_entropy(t(X, device), t(Y, device), ignore_index=2)
    np.testing.assert_allclose(loss.numpy(), ce_ref(X, Y, ignore_index=2), rtol=1e-5)
    none = F.cross_entropy(t(X, device), t(y, device), reduction="none").numpy()
    assert none[1] == 0 and none[4] == 0


def test_cross_entropy_all_rows_ignored_is_nan_like_torch(device, fused):
    y = np.full(3, -100)
    assert np.isnan(F.cross_entropy(t(X[:3], device), t(y, device)).item())
    assert F.cross_entropy(t(X[:3], device), t(y, device), reduction="sum").item() == 0


def test_cross_entropy_single_sample_and_spatial(device, fused):
    x = t(X[2], device, grad=True)
    loss = F.cross_entropy(x, 2)
    np.testing.assert_allclose(loss.item(), ce_ref(X[2:3], np.array([2])), rtol=1e-5)
    assert F.cross_entropy(x, 2, reduction="none").shape == ()
    loss.backward()
    assert x.grad.shape == (5,)
    # (N, C, d) logits with (N, d) labels, like torch
    xs = RNG.standard_normal((2, 5, 3)).astype(np.float32)
    ys = np.array([[0, 4, 1], [2, 2, 3]])
    flat_x, flat_y = xs.transpose(0, 2, 1).reshape(-1, 5), ys.reshape(-1)
    out = F.cross_entropy(t(xs, device), t(ys, device), reduction="none")
    assert out.shape == (2, 3)
    np.testing.assert_allclose(out.numpy().reshape(-1), ce_ref(flat_x, flat_y, "none"), rtol=1e-5)


def test_extreme_logits_stay_finite(device, fused):
    x = np.array([[1000.0, -1000.0, 0.0], [-1000.0, 1000.0, 1000.0]], np.float32)
    xt = t(x, device, grad=True)
    loss = F.cross_entropy(xt, t([1, 2], device))
    loss.backward()
    np.testing.assert_allclose(loss.item(), (2000.0 + np.log(2)) / 2, rtol=1e-6)
    assert np.all(np.isfinite(xt.grad.numpy()))
    z = t([[1000.0, -1000.0, 0.0]], device, grad=True)
    tt = t([[0.0, 1.0, 1.0]], device)
    for reduction in REDUCTIONS:
        out = F.binary_cross_entropy_with_logits(z, tt, reduction).numpy()
        np.testing.assert_allclose(out, bce_logits_ref(z.numpy(), tt.numpy(), reduction),
                                   rtol=1e-6)
    F.binary_cross_entropy_with_logits(z, tt).backward()
    np.testing.assert_allclose(z.grad.numpy(), [[1 / 3, -1 / 3, -0.5 / 3]], rtol=1e-6)


def test_bce_clamps_logs_at_minus_100(device):
    p = t([0.0, 1.0, 0.0, 1.0], device, grad=True)
    tt = t([1.0, 0.0, 0.0, 1.0], device)
    loss = F.binary_cross_entropy(p, tt, reduction="none")
    np.testing.assert_allclose(loss.numpy(), [100, 100, 0, 0])
    loss.sum().backward()
    assert np.all(np.isfinite(p.grad.numpy()))


# -- gradients --------------------------------------------------------------------------------
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_gradcheck_all_losses(device, fused, reduction):
    y = Y.copy()
    y[3] = -100
    x = t(X[:, :4] / 3, device, np.float64, grad=True)
    yt = t(np.minimum(y, 3), device)
    gg.gradcheck(lambda a: F.cross_entropy(a, yt, reduction), [x])
    z, tt = t(Z / 4, device, np.float64, grad=True), t(P, device, np.float64, grad=True)
    gg.gradcheck(lambda a, b: F.binary_cross_entropy_with_logits(a, b, reduction), [z, tt])
    p = t(P, device, np.float64, grad=True)
    gg.gradcheck(lambda a, b: F.binary_cross_entropy(a, b, reduction), [p, tt],
                 rtol=1e-3, atol=1e-4)
    gg.gradcheck(lambda a, b: F.mse_loss(a, b, reduction), [z, tt])


def test_backward_matches_closed_form(device, fused):
    x = t(X, device, grad=True)
    F.cross_entropy(x, t(Y, device)).backward()
    e = np.exp(X - X.max(axis=1, keepdims=True))
    sm = e / e.sum(axis=1, keepdims=True)
    sm[np.arange(7), Y] -= 1
    np.testing.assert_allclose(x.grad.numpy(), sm / 7, rtol=1e-5, atol=1e-7)
    z = t(Z, device, grad=True)
    F.binary_cross_entropy_with_logits(z, t(T, device), "sum").backward()
    np.testing.assert_allclose(z.grad.numpy(), 1 / (1 + np.exp(-Z)) - T, rtol=1e-5, atol=1e-6)


def test_none_reduction_scales_rows_by_upstream(device, fused):
    x = t(X, device, grad=True)
    w = RNG.standard_normal(7).astype(np.float32)
    (F.cross_entropy(x, t(Y, device), "none") * t(w, device)).sum().backward()
    ref = t(X, device, grad=True)
    F.cross_entropy(ref, t(Y, device), "sum").backward()  # per-row gradients, weight 1
    np.testing.assert_allclose(x.grad.numpy(), ref.grad.numpy() * w[:, None], rtol=1e-5,
                               atol=1e-7)


def test_second_backward_with_retain_graph_recomputes(device, fused):
    for make in (lambda a: F.cross_entropy(a, t(Y, device)),
                 lambda a: F.binary_cross_entropy_with_logits(a[:, :3][:6], t(T, device))):
        x = t(X, device, grad=True)
        loss = make(x)
        loss.backward(retain_graph=True)
        first = x.grad.numpy()
        loss.backward()
        np.testing.assert_allclose(x.grad.numpy(), 2 * first, rtol=1e-6, atol=1e-8)
        with pytest.raises(RuntimeError, match="second time"):
            loss.backward()


def test_forward_computes_the_gradient_only_when_needed(device, monkeypatch):
    monkeypatch.setattr(gg.backend.config, "_FUSED", True)  # restored afterwards, unlike set_fused
    x = t(X, device, grad=True)
    fused = x.device.backend.fused
    calls = []
    original = fused.softmax_cross_entropy

    def spy(*args):
        calls.append(args[-1])
        return original(*args)

    monkeypatch.setattr(fused, "softmax_cross_entropy", spy)
    F.cross_entropy(x, t(Y, device)).backward()
    with gg.no_grad():
        F.cross_entropy(x, t(Y, device))
    F.cross_entropy(t(X, device), t(Y, device))
    assert calls == [True, False, False]


def test_target_gradients(device):
    p, tt = t(P, device, grad=True), t(T * 0.5 + 0.2, device, grad=True)
    F.mse_loss(p, tt, "sum").backward()
    np.testing.assert_allclose(tt.grad.numpy(), -2 * (P - (T * 0.5 + 0.2)), rtol=1e-5, atol=1e-6)
    z, tt = t(Z, device, grad=True), t(T, device, grad=True)
    F.binary_cross_entropy_with_logits(z, tt, "sum").backward()
    np.testing.assert_allclose(tt.grad.numpy(), -Z, rtol=1e-6)


# -- double backward (create_graph=True takes the composite path) -----------------------------
def test_double_backward_cross_entropy(device, fused):
    x = t(X[:4] / 3, device, np.float64, grad=True)
    yt = t(Y[:4], device)

    def grad_of_loss(a):
        with gg.enable_grad():
            return gg.grad(F.cross_entropy(a, yt), a, create_graph=True)[0]

    gg.gradcheck(grad_of_loss, [x])
    # Hessian-vector product against the closed form (diag(p) - p pᵀ) / N per row
    v = RNG.standard_normal((4, 5))
    g = grad_of_loss(x)
    (hv,) = gg.grad((g * t(v, device, np.float64)).sum(), x)
    xs = X[:4].astype(np.float64) / 3
    p = np.exp(xs - xs.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    ref = (p * v - p * (p * v).sum(1, keepdims=True)) / 4
    np.testing.assert_allclose(hv.numpy(), ref, rtol=1e-6, atol=1e-10)


def test_double_backward_bce_with_logits(device, fused):
    z, tt = t(Z / 4, device, np.float64, grad=True), t(P, device, np.float64)

    def grad_of_loss(a):
        with gg.enable_grad():
            return gg.grad(F.binary_cross_entropy_with_logits(a, tt, "sum"), a,
                           create_graph=True)[0]

    gg.gradcheck(grad_of_loss, [z])
    (h,) = gg.grad(grad_of_loss(z).sum(), z)
    s = 1 / (1 + np.exp(-Z.astype(np.float64) / 4))
    np.testing.assert_allclose(h.numpy(), s * (1 - s), rtol=1e-6)


# -- fused vs composite -----------------------------------------------------------------------
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_fused_and_composite_agree(device, reduction):
    results = []
    prev = fused_enabled()
    for on in (True, False):
        set_fused(on)
        try:
            x, z = t(X, device, grad=True), t(Z, device, grad=True)
            ce = F.cross_entropy(x, t(Y, device), reduction)
            bce = F.binary_cross_entropy_with_logits(z, t(T, device), reduction)
            (ce.sum() + bce.sum()).backward()
            results.append([ce.numpy(), bce.numpy(), x.grad.numpy(), z.grad.numpy()])
        finally:
            set_fused(prev)
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


# -- argument errors --------------------------------------------------------------------------
def test_bad_labels_raise_value_error(device, fused):
    x = t(X[:3], device, grad=True)
    for bad in ([0, 5, 1], [0, -1, 1], [0, 1, -7]):
        with pytest.raises(ValueError, match="cross_entropy"):
            F.cross_entropy(x, t(bad, device))
        with pytest.raises(ValueError, match="nll_loss|cross_entropy"):
            F.nll_loss(F.log_softmax(x), t(bad, device))
    with pytest.raises(ValueError, match="cross_entropy"):  # also when not differentiating
        with gg.no_grad():
            F.cross_entropy(x, t([9, 0, 0], device))
    F.cross_entropy(x, t([0, -100, 4], device))  # ignore_index is fine


def test_argument_errors(device):
    x = t(X, device)
    with pytest.raises(TypeError, match="cross_entropy: labels must be integer"):
        F.cross_entropy(x, t(Y.astype(np.float32), device))
    with pytest.raises(TypeError, match="floating-point"):
        F.cross_entropy(t(Y, device), t(Y, device))
    with pytest.raises(ValueError, match=r"\(7, 5\).*\(6,\)"):
        F.cross_entropy(x, t(Y[:6], device))
    with pytest.raises(ValueError, match="reduction"):
        F.cross_entropy(x, t(Y, device), reduction="avg")
    with pytest.raises(TypeError, match="ignore_index"):
        F.cross_entropy(x, t(Y, device), ignore_index=1.5)
    with pytest.raises(ValueError, match=r"mse_loss: target shape \(6, 1\).*\(6,\)"):
        F.mse_loss(t(P[:, 0], device), t(P[:, :1], device))
    with pytest.raises(ValueError, match="binary_cross_entropy_with_logits"):
        F.binary_cross_entropy_with_logits(t(Z, device), t(T[:, :2], device))
    with pytest.raises(ValueError, match="probability"):
        F.binary_cross_entropy(t([0.5, 1.5], device), t([0.0, 1.0], device))
    with pytest.raises(ValueError, match="no classes"):
        F.cross_entropy(t(np.zeros((2, 0), np.float32), device), t([0, 0], device))


def test_targets_are_converted(device):
    z = t(Z, device)
    a = F.binary_cross_entropy_with_logits(z, T.astype(np.int64))
    b = F.binary_cross_entropy_with_logits(z, t(T, device))
    np.testing.assert_allclose(a.numpy(), b.numpy())
    np.testing.assert_allclose(F.cross_entropy(t(X, device), list(Y)).numpy(), ce_ref(X, Y),
                               rtol=1e-5)


def test_nll_loss_matches_cross_entropy(device):
    y = Y.copy()
    y[0] = -100
    for reduction in REDUCTIONS:
        a = t(X, device, grad=True)
        b = t(X, device, grad=True)
        la = F.nll_loss(F.log_softmax(a), t(y, device), reduction)
        lb = F.cross_entropy(b, t(y, device), reduction)
        np.testing.assert_allclose(la.numpy(), lb.numpy(), rtol=1e-5, atol=1e-7)
        la.sum().backward()
        lb.sum().backward()
        np.testing.assert_allclose(a.grad.numpy(), b.grad.numpy(), rtol=1e-5, atol=1e-7)


def test_reexports_and_explain(device):
    for name in ("sigmoid", "relu", "tanh", "softmax", "log_softmax", "linear", "gelu",
                 "leaky_relu"):
        assert callable(getattr(F, name))
    x = t(X[:2, :3], device, grad=True)
    x.name = "logits"
    loss = F.cross_entropy(x, t([0, 2], device))
    table = str(gg.explain(loss))
    assert "CrossEntropy" in table or "crossentropy" in table.lower()


def test_matches_real_torch_losses():
    torch = pytest.importorskip("torch")
    tf = torch.nn.functional
    y = Y.copy()
    y[2] = -100
    xs = np.concatenate([X, [[1000.0, -1000.0, 0.0, 5.0, -5.0]]]).astype(np.float64)
    ys = np.concatenate([y, [1]])
    for reduction in REDUCTIONS:
        cases = [
            (F.cross_entropy, tf.cross_entropy, xs, ys),
            (F.binary_cross_entropy_with_logits, tf.binary_cross_entropy_with_logits,
             Z.astype(np.float64) * 100, P.astype(np.float64)),
            (F.binary_cross_entropy, tf.binary_cross_entropy,
             np.clip(P.astype(np.float64), 0, 1), T.astype(np.float64)),
            (F.mse_loss, tf.mse_loss, Z.astype(np.float64), P.astype(np.float64)),
        ]
        for ours, theirs, a, b in cases:
            ga = gg.tensor(a, requires_grad=True)
            ta = torch.tensor(a, requires_grad=True)
            mine = ours(ga, gg.tensor(b), reduction)
            ref = theirs(ta, torch.tensor(b), reduction=reduction)
            np.testing.assert_allclose(mine.numpy(), ref.detach().numpy(), rtol=1e-10,
                                       atol=1e-12, err_msg=ours.__name__)
            w = np.random.default_rng(1).standard_normal(mine.shape)
            (mine * gg.tensor(w)).sum().backward()
            (ref * torch.tensor(w)).sum().backward()
            np.testing.assert_allclose(ga.grad.numpy(), ta.grad.numpy(), rtol=1e-9,
                                       atol=1e-12, err_msg=ours.__name__)
