"""PyTorch's loss options: class ``weight`` and ``label_smoothing`` for cross_entropy / nll_loss,
``weight`` for binary_cross_entropy, ``weight`` and ``pos_weight`` for BCE-with-logits, and the loss
modules that carry them. Values and gradients against float64 NumPy closed forms (always), finite
differences (gradcheck, also through create_graph) and torch (when importable)."""

from __future__ import annotations

import numpy as np
import pytest

import gpugrad as gg
import gpugrad.functional as F
from gpugrad import nn

REDUCTIONS = ["mean", "sum", "none"]
RNG = np.random.default_rng(7)
N, C = 8, 5
X = RNG.standard_normal((N, C)) * 2
Y = np.array([0, 4, -100, 2, 1, 3, -100, 4])  # two rows ignored
W = RNG.uniform(0.2, 2.0, C)
Z = RNG.standard_normal((6, 3)) * 3
Z[0, 0], Z[1, 1], Z[2, 2] = 1000.0, -1000.0, 0.0  # exact at the extremes and smooth at 0
TT = RNG.random((6, 3))  # soft targets
T01 = (RNG.random((6, 3)) > 0.5).astype(np.float64)
PW = RNG.uniform(0.5, 3.0, 3)
BW = RNG.uniform(0.0, 2.0, (6, 1))  # per-sample weights, broadcast over classes
P = RNG.uniform(0.02, 0.98, (6, 3))


def t(a, device, dtype=np.float64, grad=False):
    return gg.tensor(np.asarray(a), dtype=dtype, device=device, requires_grad=grad)


def labels(y, device):
    return gg.tensor(np.asarray(y), device=device)


def reduce_ref(v, reduction, denom=None):
    if reduction == "none":
        return v
    return v.sum() / (v.size if denom is None else denom) if reduction == "mean" else v.sum()


# -- float64 closed forms (PyTorch's definitions) ---------------------------------------------
def ce_ref(x, y, reduction="mean", weight=None, ignore_index=-100, ls=0.0, g=None):
    """Loss and, for upstream gradient g, d(loss)/dx: (1-ε)·w[y]·(p - onehot) + ε/C·(Σw·p - w)."""
    x = np.asarray(x, np.float64)
    n, c = x.shape
    w = np.ones(c) if weight is None else np.asarray(weight, np.float64)
    m = x.max(1, keepdims=True)
    logp = x - m - np.log(np.exp(x - m).sum(1, keepdims=True))
    p = np.exp(logp)
    keep = y != ignore_index
    cols = np.where(keep, y, 0)
    rows = np.arange(n)
    nll = -w[cols] * logp[rows, cols]
    smooth = -(logp * w).sum(1)
    loss = np.where(keep, (1 - ls) * nll + ls / c * smooth, 0.0)
    denom = np.where(keep, w[cols], 0.0).sum()
    with np.errstate(invalid="ignore", divide="ignore"):
        value = reduce_ref(loss, reduction, denom)
    onehot = np.zeros_like(x)
    onehot[rows, cols] = 1
    d = (1 - ls) * w[cols][:, None] * (p - onehot) + ls / c * (w.sum() * p - w)
    d *= keep[:, None]
    gy = np.ones(n) if g is None or reduction != "none" else g
    scale = (1 / denom if denom else 0.0) if reduction == "mean" else 1.0  # torch: 0 grad if 0/0
    return value, d * gy[:, None] * scale


def bce_logits_ref(z, tt, reduction="mean", weight=None, pos_weight=None):
    """PyTorch's formula and its derivative in z: (1 - t) - lw·sigmoid(-z), times weight."""
    z = np.asarray(z, np.float64)
    lw = np.ones_like(z) if pos_weight is None else 1 + (pos_weight - 1) * tt
    w = np.ones_like(z) if weight is None else np.broadcast_to(weight, z.shape)
    loss = w * ((1 - tt) * z + lw * (np.log1p(np.exp(-np.abs(z))) + np.maximum(-z, 0)))
    dz = w * ((1 - tt) - lw * 0.5 * (1 - np.tanh(z / 2)))  # sigmoid(-z), no overflow
    return reduce_ref(loss, reduction), dz / (z.size if reduction == "mean" else 1)


def bce_ref(p, tt, reduction="mean", weight=None):
    w = np.ones_like(p) if weight is None else np.broadcast_to(weight, p.shape)
    loss = -w * (tt * np.log(p) + (1 - tt) * np.log1p(-p))
    dp = w * (p - tt) / (p * (1 - p))
    return reduce_ref(loss, reduction), dp / (p.size if reduction == "mean" else 1)


def close(a, b, rtol=1e-10, atol=1e-12):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=rtol, atol=atol)


# -- cross_entropy / nll_loss ------------------------------------------------------------------
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weight", [None, W], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("ls", [0.0, 0.25, 1.0])
def test_cross_entropy_options_match_closed_form(device, reduction, weight, ls):
    g = RNG.standard_normal(N)
    x = t(X, device, grad=True)
    w = None if weight is None else t(weight, device)
    loss = F.cross_entropy(x, labels(Y, device), reduction, weight=w, label_smoothing=ls)
    ref, dref = ce_ref(X, Y, reduction, weight, ls=ls, g=g)
    close(loss.numpy(), ref)
    (loss * t(g, device)).sum().backward() if reduction == "none" else loss.backward()
    close(x.grad.numpy(), dref)
    assert np.all(x.grad.numpy()[Y == -100] == 0)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_ignore_index_inside_range_with_weight_and_smoothing(device, reduction):
    y = np.array([0, 4, 2, 2, 1, 3, 2, 4])  # class 2 is ignored, so its weight never counts
    loss = F.cross_entropy(t(X, device), labels(y, device), reduction, ignore_index=2,
                           weight=t(W, device), label_smoothing=0.1)
    close(loss.numpy(), ce_ref(X, y, reduction, W, ignore_index=2, ls=0.1)[0])


def test_float32_inputs_keep_their_dtype_and_cast_weights(device):
    x = t(X, device, np.float32, grad=True)
    loss = F.cross_entropy(x, labels(Y, device), weight=t(W, device, np.float64),
                           label_smoothing=0.2)
    assert loss.dtype == np.float32
    close(loss.numpy(), ce_ref(X.astype(np.float32), Y, "mean", W.astype(np.float32), ls=0.2)[0],
          rtol=1e-5, atol=1e-6)
    loss.backward()
    assert x.grad.dtype == np.float32
    # weights given as a list or NumPy array are moved to the input's device
    same = F.cross_entropy(x, labels(Y, device), weight=list(W), label_smoothing=0.2)
    close(same.numpy(), loss.numpy(), rtol=1e-6)


def test_spatial_logits_with_options(device):
    xs = RNG.standard_normal((2, C, 3))
    ys = np.array([[0, 4, -100], [2, 2, 3]])
    flat_x, flat_y = xs.transpose(0, 2, 1).reshape(-1, C), ys.reshape(-1)
    out = F.cross_entropy(t(xs, device), labels(ys, device), "none", weight=t(W, device),
                          label_smoothing=0.3)
    assert out.shape == (2, 3)
    close(out.numpy().reshape(-1), ce_ref(flat_x, flat_y, "none", W, ls=0.3)[0])
    single = F.cross_entropy(t(X[1], device), 4, weight=t(W, device), label_smoothing=0.3)
    close(single.numpy(), ce_ref(X[1:2], np.array([4]), "mean", W, ls=0.3)[0])


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_nll_loss_weight(device, reduction):
    x = t(X, device, grad=True)
    logp = F.log_softmax(x)
    loss = F.nll_loss(logp, labels(Y, device), reduction, weight=t(W, device))
    close(loss.numpy(), ce_ref(X, Y, reduction, W)[0])
    same = F.cross_entropy(t(X, device), labels(Y, device), reduction, weight=t(W, device))
    close(loss.numpy(), same.numpy())
    loss.sum().backward()
    close(x.grad.numpy(), ce_ref(X, Y, reduction, W, g=np.ones(N))[1])


@pytest.mark.parametrize("weight", [None, W], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("ls", [0.0, 0.2])
def test_all_targets_ignored_mean_is_nan_with_zero_grad_like_torch(device, fused, weight, ls):
    """PyTorch: 'mean' over no rows is 0/0 = NaN, yet the gradient is exactly 0 (ignored rows
    never receive one); 'sum' is 0 and 'none' all zeros. Both paths (fused defaults, composite
    options) behave the same."""
    y = np.full(4, -100)
    w = None if weight is None else t(weight, device)
    x = t(X[:4], device, grad=True)
    loss = F.cross_entropy(x, labels(y, device), weight=w, label_smoothing=ls)
    assert np.isnan(loss.item())
    loss.backward()
    assert np.all(x.grad.numpy() == 0)
    x.grad = None
    nll = F.nll_loss(F.log_softmax(x), labels(y, device), weight=w)
    assert np.isnan(nll.item())
    nll.backward()
    assert np.all(x.grad.numpy() == 0)
    for reduction, expected in (("sum", 0.0), ("none", np.zeros(4))):
        close(F.cross_entropy(x, labels(y, device), reduction, weight=w, label_smoothing=ls)
              .numpy(), expected)


def test_defaults_take_the_fused_op_and_options_the_composite(device):
    x, y = t(X, device, grad=True), labels(Y, device)
    def op(loss):
        return type(loss.grad_fn).__name__

    assert op(F.cross_entropy(x, y, weight=None, label_smoothing=0.0)) == "CrossEntropy"
    assert op(F.cross_entropy(x, y, weight=t(W, device))) != "CrossEntropy"
    assert op(F.cross_entropy(x, y, label_smoothing=0.1)) != "CrossEntropy"
    # a weight of ones and ε = 0 give the same numbers on both paths
    close(F.cross_entropy(x, y, weight=t(np.ones(C), device)).numpy(),
          F.cross_entropy(x, y).numpy())


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_gradcheck_class_options(device, reduction):
    x = t(X / 3, device, grad=True)
    y, w = labels(Y, device), t(W, device)
    gg.gradcheck(lambda a: F.cross_entropy(a, y, reduction, weight=w, label_smoothing=0.3), [x])
    gg.gradcheck(lambda a: F.nll_loss(F.log_softmax(a), y, reduction, weight=w), [x])


def test_double_backward_class_options(device):
    x = t(X[:4] / 3, device, grad=True)
    y, w = labels(Y[:4], device), t(W, device)

    def grad_of_loss(a):
        with gg.enable_grad():
            loss = F.cross_entropy(a, y, weight=w, label_smoothing=0.3)
            return gg.grad(loss, a, create_graph=True)[0]

    gg.gradcheck(grad_of_loss, [x])
    close(grad_of_loss(x).numpy(), ce_ref(X[:4] / 3, Y[:4], "mean", W, ls=0.3)[1])


# -- binary cross-entropy -----------------------------------------------------------------------
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("opts", ["weight", "pos_weight", "both"])
def test_bce_with_logits_options_match_closed_form(device, fused, reduction, opts):
    w = BW if opts in ("weight", "both") else None
    pw = PW if opts in ("pos_weight", "both") else None
    for target in (TT, T01):
        z = t(Z, device, grad=True)
        loss = F.binary_cross_entropy_with_logits(
            z, t(target, device), reduction, weight=None if w is None else t(w, device),
            pos_weight=None if pw is None else t(pw, device))
        ref, dref = bce_logits_ref(Z, target, reduction, w, pw)
        close(loss.numpy(), ref)
        loss.sum().backward()
        close(z.grad.numpy(), dref)


def test_bce_with_logits_options_stable_in_float32(device, fused):
    z = t([[1000.0, -1000.0, 0.0], [-1000.0, 1000.0, 30.0]], device, np.float32, grad=True)
    tt = np.array([[0.0, 1.0, 0.5], [0.0, 1.0, 1.0]])
    pw = np.array([3.0, 0.5, 2.0])
    loss = F.binary_cross_entropy_with_logits(z, t(tt, device, np.float32), "none",
                                              weight=t([2.0, 1.0, 1.0], device),
                                              pos_weight=t(pw, device))
    ref, dref = bce_logits_ref(z.numpy(), tt, "none", np.array([2.0, 1.0, 1.0]), pw)
    assert np.all(np.isfinite(loss.numpy()))
    close(loss.numpy(), ref, rtol=1e-6, atol=1e-6)
    loss.sum().backward()
    close(z.grad.numpy(), dref, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_gradcheck_bce_options(device, fused, reduction):
    z, tt = t(Z[3:] / 4, device, grad=True), t(TT[3:], device, grad=True)
    w, pw = t(BW[3:], device), t(PW, device)
    gg.gradcheck(lambda a, b: F.binary_cross_entropy_with_logits(a, b, reduction, weight=w,
                                                                 pos_weight=pw), [z, tt])
    p = t(P, device, grad=True)
    gg.gradcheck(lambda a, b: F.binary_cross_entropy(a, b, reduction, weight=t(BW, device)),
                 [p, t(TT, device, grad=True)], rtol=1e-3, atol=1e-4)


def test_double_backward_bce_with_logits_pos_weight(device, fused):
    z, tt, pw = t(Z[3:] / 4, device, grad=True), t(TT[3:], device), t(PW, device)

    def grad_of_loss(a):
        with gg.enable_grad():
            loss = F.binary_cross_entropy_with_logits(a, tt, "sum", pos_weight=pw)
            return gg.grad(loss, a, create_graph=True)[0]

    gg.gradcheck(grad_of_loss, [z])
    (h,) = gg.grad(grad_of_loss(z).sum(), z)
    s = 1 / (1 + np.exp(-Z[3:] / 4))
    close(h.numpy(), (1 + (PW - 1) * TT[3:]) * s * (1 - s))  # lw · sigmoid'(z)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_bce_weight(device, reduction):
    p = t(P, device, grad=True)
    loss = F.binary_cross_entropy(p, t(TT, device), reduction, weight=t(BW, device))
    ref, dref = bce_ref(P, TT, reduction, BW)
    close(loss.numpy(), ref)
    loss.sum().backward()
    close(p.grad.numpy(), dref)
    # a per-class weight of shape (C,) broadcasts along the last dim
    per_class = F.binary_cross_entropy(t(P, device), t(TT, device), reduction,
                                       weight=t(PW, device))
    close(per_class.numpy(), bce_ref(P, TT, reduction, PW)[0])


# -- modules ------------------------------------------------------------------------------------
def test_loss_modules_carry_the_options(device):
    w, pw, y = t(W, device), t(PW, device), labels(Y, device)
    y3 = np.where(Y == -100, 3, Y)
    ce = nn.CrossEntropyLoss(weight=w, label_smoothing=0.2, ignore_index=3, reduction="sum")
    close(ce(t(X, device), labels(y3, device)).numpy(),
          ce_ref(X, y3, "sum", W, ignore_index=3, ls=0.2)[0])
    assert "label_smoothing=0.2" in repr(ce) and "ignore_index=3" in repr(ce)
    assert list(ce.state_dict()) == ["weight"]  # a buffer, as in torch: moves with .to()
    nll = nn.NLLLoss(weight=w)
    close(nll(F.log_softmax(t(X, device)), y).numpy(), ce_ref(X, Y, "mean", W)[0])
    bce = nn.BCELoss(weight=t(BW, device))
    close(bce(t(P, device), t(TT, device)).numpy(), bce_ref(P, TT, "mean", BW)[0])
    bcel = nn.BCEWithLogitsLoss(weight=t(BW, device), pos_weight=pw)
    close(bcel(t(Z, device), t(TT, device)).numpy(), bce_logits_ref(Z, TT, "mean", BW, PW)[0])
    assert sorted(bcel.state_dict()) == ["pos_weight", "weight"]
    assert nn.CrossEntropyLoss().state_dict() == {} and nn.CrossEntropyLoss().weight is None
    with pytest.raises(TypeError, match="CrossEntropyLoss: weight must be a Tensor"):
        nn.CrossEntropyLoss(weight=W)
    with pytest.raises(ValueError, match="CrossEntropyLoss: label_smoothing"):
        nn.CrossEntropyLoss(label_smoothing=1.5)
    with pytest.raises(TypeError, match="weight="):
        nn.CrossEntropyLoss(w)  # torch's positional weight: here the first argument is reduction


# -- argument errors ----------------------------------------------------------------------------
def test_option_errors_name_the_op_and_shapes(device):
    x, y = t(X, device), labels(Y, device)
    ce = F.cross_entropy
    with pytest.raises(ValueError, match=r"cross_entropy: weight .*\(5,\).*got shape \(4,\)"):
        ce(x, y, weight=t(W[:4], device))
    with pytest.raises(ValueError, match=r"nll_loss: weight .*got shape \(1, 5\)"):
        F.nll_loss(x, y, weight=t(W[None], device))
    with pytest.raises(TypeError, match="cross_entropy: weight must be a floating-point.*int64"):
        ce(x, y, weight=t([1, 2, 3, 4, 5], device, np.int64))
    with pytest.raises(TypeError, match="floating-point.*bool"):
        ce(x, y, weight=t(W > 1, device, bool))
    with pytest.raises(RuntimeError, match=r"not differentiable.*detach\(\)"):
        ce(x, y, weight=t(W, device, grad=True))
    with gg.no_grad():  # nothing is differentiated, so a weight that requires grad is fine
        ce(x, y, weight=t(W, device, grad=True))
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match=r"cross_entropy: label_smoothing must be in \[0, 1\]"):
            ce(x, y, label_smoothing=bad)
    for bad in ("0.1", True, None):
        with pytest.raises(TypeError, match="cross_entropy: label_smoothing"):
            ce(x, y, label_smoothing=bad)
    with pytest.raises(TypeError, match=r"reduction .* got a Tensor; pass weights by keyword"):
        ce(x, y, t(W, device))  # PyTorch's positional order
    with pytest.raises(ValueError, match=r"nll_loss: label 7 at row 0 is outside \[0, 5\)"):
        F.nll_loss(x, labels([7] + [0] * (N - 1), device), weight=t(W, device))
    bcel = F.binary_cross_entropy_with_logits
    z, tt = t(Z, device), t(TT, device)
    with pytest.raises(ValueError, match=r"with_logits: pos_weight of shape \(2,\) does not "
                                         r"broadcast to the input's shape \(6, 3\)"):
        bcel(z, tt, pos_weight=t([1.0, 2.0], device))
    with pytest.raises(ValueError, match=r"with_logits: weight of shape \(2, 6, 3\)"):
        bcel(z, tt, weight=t(np.ones((2, 6, 3)), device))
    with pytest.raises(TypeError, match="pos_weight must be a floating-point"):
        bcel(z, tt, pos_weight=t([1, 2, 3], device, np.int64))
    with pytest.raises(RuntimeError, match="pos_weight is not differentiable"):
        bcel(z, tt, pos_weight=t(PW, device, grad=True))
    with pytest.raises(ValueError, match=r"binary_cross_entropy: weight of shape \(6,\)"):
        F.binary_cross_entropy(t(P, device), tt, weight=t(np.ones(6), device))


@pytest.mark.skipif(not gg.cuda.is_available(), reason="needs a CUDA device")
def test_weight_on_another_device_is_a_device_error():
    x, y = t(X, "cuda"), labels(Y, "cuda")
    with pytest.raises(gg.DeviceError, match="cross_entropy: input is on cuda:0 but weight is "
                                             "on cpu"):
        F.cross_entropy(x, y, weight=t(W, "cpu"))
    with pytest.raises(gg.DeviceError, match="pos_weight is on cuda:0"):
        F.binary_cross_entropy_with_logits(t(Z, "cpu"), t(TT, "cpu"),
                                           pos_weight=t(PW, "cuda"))


# -- against PyTorch ----------------------------------------------------------------------------
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_class_options_match_torch(device, reduction):
    torch = pytest.importorskip("torch")
    tf = torch.nn.functional
    g = RNG.standard_normal(N)
    for weight in (None, W):
        for ls in (0.0, 0.3, 1.0):
            for y in (Y, np.full(N, -100)):
                xt = torch.tensor(X, requires_grad=True)
                wt = None if weight is None else torch.tensor(weight)
                ref = tf.cross_entropy(xt, torch.tensor(y), weight=wt, reduction=reduction,
                                       label_smoothing=ls)
                (ref * torch.tensor(g) if reduction == "none" else ref).sum().backward()
                x = t(X, device, grad=True)
                out = F.cross_entropy(x, labels(y, device), reduction,
                                      weight=None if weight is None else t(weight, device),
                                      label_smoothing=ls)
                (out * t(g, device) if reduction == "none" else out).sum().backward()
                close(out.numpy(), ref.detach().numpy())  # NaN == NaN here
                close(x.grad.numpy(), xt.grad.numpy())
    xt = torch.tensor(X)
    close(F.nll_loss(t(X, device), labels(Y, device), reduction, weight=t(W, device)).numpy(),
          tf.nll_loss(xt, torch.tensor(Y), torch.tensor(W), reduction=reduction).numpy())


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_binary_options_match_torch(device, fused, reduction):
    torch = pytest.importorskip("torch")
    tf = torch.nn.functional
    for w, pw in ((BW, None), (None, PW), (BW, PW), (PW, PW)):
        zt = torch.tensor(Z, requires_grad=True)
        ref = tf.binary_cross_entropy_with_logits(
            zt, torch.tensor(TT), weight=None if w is None else torch.tensor(w),
            pos_weight=None if pw is None else torch.tensor(pw), reduction=reduction)
        ref.sum().backward()
        z = t(Z, device, grad=True)
        out = F.binary_cross_entropy_with_logits(
            z, t(TT, device), reduction, weight=None if w is None else t(w, device),
            pos_weight=None if pw is None else t(pw, device))
        out.sum().backward()
        close(out.numpy(), ref.detach().numpy())
        close(z.grad.numpy(), zt.grad.numpy())
    pt = torch.tensor(P, requires_grad=True)
    ref = tf.binary_cross_entropy(pt, torch.tensor(TT), weight=torch.tensor(BW),
                                  reduction=reduction)
    ref.sum().backward()
    p = t(P, device, grad=True)
    out = F.binary_cross_entropy(p, t(TT, device), reduction, weight=t(BW, device))
    out.sum().backward()
    close(out.numpy(), ref.detach().numpy())
    close(p.grad.numpy(), pt.grad.numpy(), rtol=1e-9)


def test_loss_modules_match_torch(device):
    torch = pytest.importorskip("torch")
    tn = torch.nn
    x, y, tx, ty = t(X, device), labels(Y, device), torch.tensor(X), torch.tensor(Y)
    close(nn.CrossEntropyLoss(weight=t(W, device), label_smoothing=0.1)(x, y).numpy(),
          tn.CrossEntropyLoss(weight=torch.tensor(W), label_smoothing=0.1)(tx, ty).numpy())
    close(nn.NLLLoss(weight=t(W, device), reduction="none")(x, y).numpy(),
          tn.NLLLoss(weight=torch.tensor(W), reduction="none")(tx, ty).numpy())
    close(nn.BCEWithLogitsLoss(pos_weight=t(PW, device))(t(Z, device), t(TT, device)).numpy(),
          tn.BCEWithLogitsLoss(pos_weight=torch.tensor(PW))(torch.tensor(Z),
                                                             torch.tensor(TT)).numpy())
    close(nn.BCELoss(weight=t(BW, device), reduction="sum")(t(P, device), t(TT, device)).numpy(),
          tn.BCELoss(weight=torch.tensor(BW), reduction="sum")(torch.tensor(P),
                                                                torch.tensor(TT)).numpy())


def test_half_precision_composite_losses_accumulate_in_float32(device):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(70000, 4))  # more rows than float16 can count (65504)
    y = rng.integers(0, 4, size=70000)
    logp = x - np.log(np.exp(x).sum(axis=1, keepdims=True))
    ref = -logp[np.arange(70000), y].mean()
    lp = gg.log_softmax(gg.tensor(x, dtype=np.float16, device=device), axis=1)
    labels = gg.tensor(y, device=device)
    for loss in (F.nll_loss(lp, labels),
                 F.nll_loss(lp, labels, weight=gg.ones(4, dtype=np.float16, device=device)),
                 F.cross_entropy(gg.tensor(x, dtype=np.float16, device=device), labels,
                                 weight=np.ones(4))):
        assert loss.dtype == np.float16
        assert abs(loss.item() - ref) < 2e-3, loss.item()


def test_kept_weights_summing_to_zero_give_nan_like_torch(device):
    x = gg.tensor(np.random.default_rng(0).normal(size=(3, 3)), device=device,
                  requires_grad=True)
    y = gg.tensor([0, 0, 0], device=device)
    loss = F.cross_entropy(x, y, weight=[0.0, 2.0, 3.0], label_smoothing=0.1)
    assert np.isnan(loss.item())


def test_composite_class_losses_do_not_recheck_checked_labels(device, monkeypatch):
    """The labels are range-checked once; indexing through getitem would check them again (on
    a GPU: more host syncs per step)."""
    import gpugrad.ops.indexing as ops

    def no_second_check(*args, **kwargs):
        raise AssertionError("labels were bounds-checked twice")

    x = gg.tensor(np.zeros((4, 3)), device=device, requires_grad=True)
    y = gg.tensor([0, 1, 2, 1], device=device)
    monkeypatch.setattr(ops, "_prepare_index", no_second_check)
    F.cross_entropy(x, y, label_smoothing=0.1).backward()
    F.nll_loss(x, y, weight=[1.0, 2.0, 3.0]).backward()
