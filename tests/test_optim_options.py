"""Optimizer options and the other optimizer families: Adam/AdamW ``amsgrad`` and ``maximize``,
SGD ``maximize`` and dampening, ``RMSprop``, ``Adagrad`` -- vs float64 NumPy references of
torch.optim's rules on every device, vs torch.optim itself when it is installed -- and the
gradient clipping of ``gg.nn.utils``."""

from __future__ import annotations

import math

import numpy as np
import pytest
from _optim_refs import ref_adagrad, ref_adam, ref_rmsprop, ref_sgd, stepped

import gpugrad as gg
import gpugrad.optim as optim
from gpugrad.serialization import load, save

RNG = np.random.default_rng(1)
P0 = [RNG.standard_normal((3, 4)), RNG.standard_normal(5)]
STEPS = 6
GRADS = [[RNG.standard_normal(p.shape) for p in P0] for _ in range(STEPS)]


REFS = {optim.SGD: ref_sgd, optim.Adam: ref_adam, optim.AdamW: ref_adam,
        optim.RMSprop: ref_rmsprop, optim.Adagrad: ref_adagrad}

CASES = [
    (optim.SGD, dict(lr=0.1, maximize=True)),
    (optim.SGD, dict(lr=0.05, momentum=0.9, dampening=0.5, weight_decay=0.01, maximize=True)),
    (optim.SGD, dict(lr=0.05, momentum=0.9, dampening=0.5)),  # default path, with dampening
    (optim.Adam, dict(lr=0.01, amsgrad=True)),
    (optim.Adam, dict(lr=0.01, weight_decay=0.1, maximize=True)),
    (optim.Adam, dict(lr=0.02, betas=(0.3, 0.9), weight_decay=0.1, amsgrad=True,
                      maximize=True)),  # torch.lerp's other branch
    (optim.AdamW, dict(lr=0.01, amsgrad=True)),
    (optim.AdamW, dict(lr=0.01, weight_decay=0.3, amsgrad=True, maximize=True)),
    (optim.RMSprop, dict()),
    (optim.RMSprop, dict(lr=0.01, momentum=0.9)),
    (optim.RMSprop, dict(lr=0.01, centered=True)),
    (optim.RMSprop, dict(lr=0.005, alpha=0.3, eps=1e-6, weight_decay=0.1, momentum=0.5,
                         centered=True, maximize=True)),  # lerp's other branch (1 - alpha > .5)
    (optim.Adagrad, dict()),
    (optim.Adagrad, dict(lr=0.1, lr_decay=0.05, weight_decay=0.1,
                         initial_accumulator_value=0.5, eps=1e-6)),
    (optim.Adagrad, dict(lr=0.1, maximize=True)),
]
IDS = [f"{cls.__name__}-{'-'.join(kw) or 'default'}" for cls, kw in CASES]


def run(cls, device, dtype, steps=STEPS, **kw):
    return stepped(cls, device, dtype, P0, GRADS[:steps], **kw)


def full_kw(cls, kw):
    """The options the reference needs beyond the case's own (AdamW's defaults)."""
    if cls is optim.AdamW:
        return dict(kw, weight_decay=kw.get("weight_decay", 1e-2), decoupled=True)
    return kw


@pytest.mark.parametrize("cls,kw", CASES, ids=IDS)
@pytest.mark.parametrize("dtype,rtol", [(np.float64, 1e-10), (np.float32, 5e-5)])
def test_matches_float64_reference(device, fused, cls, kw, dtype, rtol):
    params, _ = run(cls, device, dtype, **kw)
    for i, (p, p0) in enumerate(zip(params, P0)):
        ref = REFS[cls](p0, [gs[i] for gs in GRADS], **full_kw(cls, kw))
        np.testing.assert_allclose(p.numpy(), ref, rtol=rtol, atol=rtol)


@pytest.mark.parametrize("cls,kw", CASES, ids=IDS)
def test_matches_torch_optim(device, cls, kw):
    torch = pytest.importorskip("torch")
    params, opt = run(cls, device, np.float64, **kw)
    tparams = [torch.tensor(p, requires_grad=True) for p in P0]
    topt = getattr(torch.optim, cls.__name__)(tparams, **kw)
    for grads in GRADS:
        for p, g in zip(tparams, grads):
            p.grad = torch.tensor(g)
        topt.step()
    for p, tp in zip(params, tparams):
        np.testing.assert_allclose(p.numpy(), tp.detach().numpy(), rtol=1e-12, atol=1e-14)
    # same state names and values, so checkpoints read the same
    for p, tp in zip(params, tparams):
        ours, theirs = opt.state.get(p, {}), topt.state.get(tp, {})
        assert sorted(ours) == sorted(theirs)
        for key, value in theirs.items():
            got = ours[key]
            got = got.numpy() if isinstance(got, gg.Tensor) else got
            np.testing.assert_allclose(got, value.numpy(), rtol=1e-12, atol=1e-14, err_msg=key)
    # and the same options in every group
    assert set(opt.param_groups[0]) - {"params"} <= set(topt.param_groups[0])
    for k, v in opt.param_groups[0].items():
        if k != "params":
            assert topt.param_groups[0][k] == v, k


def test_defaults_match_pytorch():
    p = [gg.zeros(2, requires_grad=True)]
    assert optim.RMSprop(p).defaults == dict(lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0,
                                             momentum=0.0, centered=False, maximize=False)
    assert optim.Adagrad(p).defaults == dict(lr=1e-2, lr_decay=0.0, eps=1e-10,
                                             weight_decay=0.0, initial_accumulator_value=0.0,
                                             maximize=False)
    assert optim.AdamW(p).defaults["amsgrad"] is False


def test_sgd_dampening_skips_the_first_step(device, fused):
    """torch: the first step copies d into the buffer (no dampening), later steps dampen."""
    p = gg.tensor([1.0, 2.0], dtype=np.float64, device=device, requires_grad=True)
    opt = optim.SGD([p], lr=0.1, momentum=0.9, dampening=0.5)
    p.grad = gg.tensor([1.0, -1.0], dtype=np.float64, device=device)
    opt.step()
    np.testing.assert_allclose(p.numpy(), [0.9, 2.1], rtol=1e-15)
    opt.step()  # buf = 0.9 * g + 0.5 * g = 1.4 g
    np.testing.assert_allclose(p.numpy(), [0.9 - 0.14, 2.1 + 0.14], rtol=1e-14)


def test_new_options_take_the_composite_path_defaults_stay_fused(device, monkeypatch):
    """The kernels implement neither amsgrad nor maximize: those groups must not reach them,
    while default groups still make exactly one fused call per step."""
    fused = gg.device(device).backend.fused
    calls = []
    real_adam, real_sgd = fused.adam_step, fused.sgd_step
    monkeypatch.setattr(gg.backend.config, "_FUSED", True)
    monkeypatch.setattr(fused, "adam_step", lambda *a, **k: (calls.append("adam"),
                                                            real_adam(*a, **k)))
    monkeypatch.setattr(fused, "sgd_step", lambda *a, **k: (calls.append("sgd"),
                                                           real_sgd(*a, **k)))
    for cls, kw in ((optim.Adam, dict(amsgrad=True)), (optim.AdamW, dict(maximize=True)),
                    (optim.SGD, dict(lr=0.1, maximize=True))):
        run(cls, device, np.float32, steps=2, **kw)
    assert calls == []
    for cls, kw in ((optim.Adam, {}), (optim.SGD, dict(lr=0.1, momentum=0.9))):
        run(cls, device, np.float32, steps=2, **kw)
    assert calls == ["adam", "adam", "sgd", "sgd"]
    # one optimizer, two groups: only the default group goes through the kernel
    calls.clear()
    a = gg.tensor(P0[0], device=device, requires_grad=True)
    b = gg.tensor(P0[1], device=device, requires_grad=True)
    opt = optim.Adam([{"params": [a]}, {"params": [b], "amsgrad": True}], lr=0.1)
    a.grad, b.grad = gg.ones(*a.shape, device=device), gg.ones(*b.shape, device=device)
    opt.step()
    assert calls == ["adam"] and "max_exp_avg_sq" in opt.state[b]
    assert "max_exp_avg_sq" not in opt.state[a]


def test_centered_rmsprop_with_alpha_0_is_exact(device, fused):
    """alpha = 0: grad_avg = g exactly (lerp's w = 1 branch), so v - grad_avg² = 0, never a tiny
    negative number whose square root would be NaN; each step is p -= lr·g / eps."""
    params, _ = run(optim.RMSprop, device, np.float64, lr=0.1, alpha=0.0, eps=1.0, centered=True)
    for i, (p, p0) in enumerate(zip(params, P0)):
        np.testing.assert_allclose(p.numpy(), p0 - 0.1 * sum(gs[i] for gs in GRADS), rtol=1e-12)


def test_amsgrad_keeps_the_running_maximum(device, fused):
    p = gg.tensor([0.0], dtype=np.float64, device=device, requires_grad=True)
    opt = optim.Adam([p], lr=0.1, betas=(0.0, 0.5), amsgrad=True)
    for g in (4.0, 0.0):
        p.grad = gg.tensor([g], dtype=np.float64, device=device)
        opt.step()
    st = opt.state[p]
    assert st["exp_avg_sq"].item() == pytest.approx(4.0)  # 0.5 * (0.5 * 16)
    assert st["max_exp_avg_sq"].item() == pytest.approx(8.0)


def test_params_without_grad_keep_their_state(device):
    a = gg.tensor(P0[0], device=device, requires_grad=True)
    b = gg.tensor(P0[1], device=device, requires_grad=True)
    for cls in (optim.RMSprop, optim.Adagrad):
        opt = cls([a, b])
        before = b.numpy()
        a.grad, b.grad = gg.ones(*a.shape, device=device), None
        opt.step()
        opt.step()
        np.testing.assert_array_equal(b.numpy(), before)
        assert opt.state[a]["step"] == 2
        assert b not in opt.state if cls is optim.RMSprop else opt.state[b]["step"] == 0
        a.grad = None


def test_adagrad_creates_state_up_front_like_torch():
    p = gg.zeros(3, requires_grad=True)
    opt = optim.Adagrad([p], initial_accumulator_value=0.25)
    np.testing.assert_array_equal(opt.state[p]["sum"].numpy(), [0.25] * 3)
    q = gg.zeros(2, requires_grad=True)
    opt.add_param_group({"params": [q], "initial_accumulator_value": 1.0})
    np.testing.assert_array_equal(opt.state[q]["sum"].numpy(), [1.0, 1.0])
    assert opt.state_dict()["state"][1]["step"] == 0


def test_validation_errors():
    p = [gg.zeros(2, requires_grad=True)]
    for bad in (dict(alpha=-0.1), dict(eps=-1), dict(momentum=-0.5), dict(weight_decay=-1),
                dict(lr=-1), dict(alpha=float("nan"))):
        with pytest.raises(ValueError, match="RMSprop"):
            optim.RMSprop(p, **bad)
    for bad in (dict(lr_decay=-1), dict(initial_accumulator_value=-1), dict(eps=-1),
                dict(weight_decay=-0.1)):
        with pytest.raises(ValueError, match="Adagrad"):
            optim.Adagrad(p, **bad)
    with pytest.raises(ValueError, match="unknown option"):
        optim.Adagrad([{"params": p, "momentum": 0.9}])


# -- gradient clipping ------------------------------------------------------------------------
SHAPES = [(4, 3), (5,), (2, 2)]


def _grads(scale: float):
    rng = np.random.default_rng(7)
    return [scale * rng.standard_normal(s) for s in SHAPES]


def _params_with(grads, device, dtype=np.float64):
    params = []
    for g in grads:
        p = gg.zeros(*g.shape, dtype=dtype, device=device, requires_grad=True)
        p.grad = gg.tensor(g, dtype=dtype, device=device)
        params.append(p)
    return params


def _norm(grads, p):
    flat = np.abs(np.concatenate([g.ravel() for g in grads]))
    return flat.max() if p == math.inf else (flat**p).sum() ** (1 / p)


@pytest.mark.parametrize("norm_type", [2.0, 1.0, 3.5, math.inf])
@pytest.mark.parametrize("max_norm", [0.5, 1e3])
def test_clip_grad_norm_matches_the_formula(device, norm_type, max_norm):
    grads = _grads(2.0)
    params = _params_with(grads, device)
    params.append(gg.zeros(3, device=device, requires_grad=True))  # no grad: ignored
    total = gg.nn.utils.clip_grad_norm_(params, max_norm, norm_type=norm_type)
    assert isinstance(total, gg.Tensor) and total.shape == () and total.device == gg.device(device)
    want = _norm(grads, norm_type)
    assert total.item() == pytest.approx(want, rel=1e-12)
    coef = min(max_norm / (want + 1e-6), 1.0)
    for p, g in zip(params, grads):
        np.testing.assert_allclose(p.grad.numpy(), g * coef, rtol=1e-12)
    if max_norm < want:  # clipped to the bound
        assert _norm([p.grad.numpy() for p in params[:3]], norm_type) == pytest.approx(
            max_norm, rel=1e-5)
    assert params[3].grad is None


@pytest.mark.parametrize("norm_type", [2.0, 1.0, 0.5, math.inf, 0.0])
def test_clip_grad_norm_matches_torch(device, norm_type):
    torch = pytest.importorskip("torch")
    for dtype, rtol in ((np.float64, 1e-12), (np.float32, 1e-5)):  # any reduction order
        grads = _grads(3.0)
        params = _params_with(grads, device, dtype)
        tparams = [torch.zeros(g.shape, dtype=getattr(torch, np.dtype(dtype).name),
                               requires_grad=True) for g in grads]
        for tp, g in zip(tparams, grads):
            tp.grad = torch.tensor(g, dtype=tp.dtype)
        total = gg.nn.utils.clip_grad_norm_(params, 1.5, norm_type)
        ttotal = torch.nn.utils.clip_grad_norm_(tparams, 1.5, norm_type)
        assert total.dtype == dtype
        np.testing.assert_allclose(total.numpy(), ttotal.numpy(), rtol=rtol)
        for p, tp in zip(params, tparams):
            np.testing.assert_allclose(p.grad.numpy(), tp.grad.numpy(), rtol=rtol, atol=1e-7)


def test_clip_grad_norm_nonfinite_and_edge_cases(device):
    grads = _grads(1.0)
    grads[1][2] = np.inf
    params = _params_with(grads, device)
    with pytest.raises(RuntimeError, match="non-finite"):
        gg.nn.utils.clip_grad_norm_(params, 1.0, error_if_nonfinite=True)
    np.testing.assert_array_equal(params[0].grad.numpy(), grads[0])  # untouched on error
    total = gg.nn.utils.clip_grad_norm_(params, 1.0)  # like torch: scales by 1/inf
    assert math.isinf(total.item())
    assert np.all(params[0].grad.numpy() == 0)
    # a single tensor, a generator, no gradients at all
    p = _params_with([np.array([3.0, 4.0])], device)[0]
    assert gg.nn.utils.clip_grad_norm_(p, 1.0).item() == pytest.approx(5.0)
    np.testing.assert_allclose(p.grad.numpy(), [0.6, 0.8], rtol=1e-6)
    assert gg.nn.utils.clip_grad_norm_((q for q in [p]), 10.0).item() == pytest.approx(1.0)
    empty = gg.nn.utils.clip_grad_norm_([gg.zeros(2, device=device, requires_grad=True)], 1.0)
    assert empty.item() == 0.0 and empty.device == gg.device(device)


def test_clip_grad_value(device):
    grads = _grads(2.0)
    params = _params_with(grads, device)
    assert gg.nn.utils.clip_grad_value_(params, 0.75) is None
    for p, g in zip(params, grads):
        np.testing.assert_array_equal(p.grad.numpy(), np.clip(g, -0.75, 0.75))
    torch = pytest.importorskip("torch")
    tparams = [torch.zeros(g.shape, dtype=torch.float64, requires_grad=True) for g in grads]
    for tp, g in zip(tparams, grads):
        tp.grad = torch.tensor(g)
    torch.nn.utils.clip_grad_value_(tparams, 0.75)
    for p, tp in zip(params, tparams):
        np.testing.assert_array_equal(p.grad.numpy(), tp.grad.numpy())


def test_clipping_in_a_training_step(device):
    model = gg.nn.MLP([4, 8, 2]).to(device)
    x = gg.tensor(np.random.default_rng(0).standard_normal((16, 4)), device=device)
    loss = (model(x) ** 2).sum() * 100
    loss.backward()
    total = gg.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    assert total.item() > 1.0
    after = math.sqrt(sum(float((p.grad.numpy().astype(np.float64) ** 2).sum())
                          for p in model.parameters()))
    assert after == pytest.approx(1.0, rel=1e-4)


SCALAR_CASES = [(optim.SGD, dict(lr=0.1, momentum=0.9)), (optim.Adam, dict(amsgrad=True)),
                (optim.AdamW, {}), (optim.RMSprop, dict(momentum=0.9, centered=True)),
                (optim.Adagrad, {})]


@pytest.mark.parametrize("cls,kw", SCALAR_CASES, ids=[c.__name__ for c, _ in SCALAR_CASES])
def test_a_0d_parameter_steps_and_resumes(device, fused, cls, kw, tmp_path):
    def step(opt, p):
        p.grad = gg.tensor(0.5, dtype=np.float64, device=device)
        opt.step()

    p = gg.tensor(1.0, dtype=np.float64, device=device, requires_grad=True)
    opt = cls([p], **kw)
    step(opt, p)
    save({"o": opt.state_dict()}, tmp_path / "o.safetensors")
    for sd in (opt.state_dict(), load(tmp_path / "o.safetensors", device=device)["o"]):
        q = gg.tensor(p.item(), dtype=np.float64, device=device, requires_grad=True)
        resumed = cls([q], **kw)
        resumed.load_state_dict(sd)
        step(resumed, q)
        assert q.shape == ()
        reference = cls([gg.tensor(p.item(), dtype=np.float64, device=device,
                                   requires_grad=True)], **kw)
        reference.load_state_dict(sd)
        r = reference.param_groups[0]["params"][0]
        step(reference, r)
        assert q.item() == r.item()
    step(opt, p)
    assert p.item() == q.item()  # resuming equals not stopping


@pytest.mark.parametrize("clip", [lambda ps: gg.nn.utils.clip_grad_norm_(ps, 1.0),
                                  lambda ps: gg.nn.utils.clip_grad_value_(ps, 1.0)],
                         ids=["norm", "value"])
def test_clipping_never_changes_a_gradient_a_graph_saved(device, clip):
    """A gradient penalty built with create_graph=True saves the gradient's array."""
    w = gg.tensor([3.0, 4.0], dtype=np.float64, device=device, requires_grad=True)
    x = gg.tensor([1.0, 2.0], dtype=np.float64, device=device)
    ((w * w) * x).sum().backward(create_graph=True)
    penalty = (w.grad * w.grad).sum()  # Σ (2 w x)²
    clip([w])
    assert float(np.abs(w.grad.numpy()).max()) <= 1.0 + 1e-12
    (g,) = gg.grad(penalty, [w])
    np.testing.assert_allclose(g.numpy(), 8 * w.numpy() * x.numpy() ** 2)  # [24, 128]


def test_clip_grad_norm_ignores_empty_gradients(device):
    e = gg.zeros(0, 3, device=device, requires_grad=True)
    w = gg.tensor([3.0, 4.0], device=device, requires_grad=True)
    e.grad, w.grad = gg.zeros(0, 3, device=device), gg.tensor([3.0, 4.0], device=device)
    for norm_type, expect in ((math.inf, 4.0), (2.0, 5.0)):
        total = gg.nn.utils.clip_grad_norm_([e, w], 100.0, norm_type=norm_type)
        assert total.item() == pytest.approx(expect)
    assert gg.nn.utils.clip_grad_norm_([e], 1.0, norm_type=math.inf).item() == 0.0
