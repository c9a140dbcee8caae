"""gpugrad.optim: update formulas vs a float64 reference of PyTorch's rules (and vs torch itself
when it is installed), param groups, skipped params, state_dict round trips, validation, and the
schedulers vs their closed forms."""

from __future__ import annotations

import math

import numpy as np
import pytest
from _optim_refs import ref_adam, ref_sgd, stepped

import gpugrad as gg
import gpugrad.optim as optim
from gpugrad.serialization import load, save

RNG = np.random.default_rng(0)
P0 = [RNG.standard_normal((3, 4)), RNG.standard_normal(5)]
GRADS = [[RNG.standard_normal(p.shape) for p in P0] for _ in range(5)]


def run(opt_cls, device, dtype, steps=5, **kw):
    params, opt = stepped(opt_cls, device, dtype, P0, GRADS[:steps], **kw)
    return [p.numpy() for p in params], opt


SGD_CASES = [
    dict(lr=0.1),
    dict(lr=0.1, momentum=0.9),
    dict(lr=0.05, momentum=0.9, dampening=0.3, weight_decay=0.01),
    dict(lr=0.05, momentum=0.8, nesterov=True, weight_decay=0.1),
]
ADAM_CASES = [
    (optim.Adam, dict(), False),
    (optim.Adam, dict(lr=0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1), False),
    (optim.AdamW, dict(), True),
    (optim.AdamW, dict(lr=0.02, weight_decay=0.5, betas=(0.4, 0.9)), True),  # other lerp branch
]


@pytest.mark.parametrize("kw", SGD_CASES)
@pytest.mark.parametrize("dtype,rtol", [(np.float64, 1e-12), (np.float32, 2e-5)])
def test_sgd_matches_reference(device, fused, kw, dtype, rtol):
    got, _ = run(optim.SGD, device, dtype, **kw)
    for g, p0, i in zip(got, P0, range(2)):
        ref = ref_sgd(p0, [gs[i] for gs in GRADS], **kw)
        np.testing.assert_allclose(g, ref, rtol=rtol, atol=rtol)


@pytest.mark.parametrize("cls,kw,decoupled", ADAM_CASES)
@pytest.mark.parametrize("dtype,rtol", [(np.float64, 1e-10), (np.float32, 5e-5)])
def test_adam_adamw_match_reference(device, fused, cls, kw, decoupled, dtype, rtol):
    got, _ = run(cls, device, dtype, **kw)
    if cls is optim.AdamW:
        kw = dict(kw, weight_decay=kw.get("weight_decay", 1e-2))
    for g, p0, i in zip(got, P0, range(2)):
        ref = ref_adam(p0, [gs[i] for gs in GRADS], decoupled=decoupled, **kw)
        np.testing.assert_allclose(g, ref, rtol=rtol, atol=rtol)


def test_matches_real_torch_optim():
    torch = pytest.importorskip("torch")
    cases = [(optim.SGD, torch.optim.SGD, kw) for kw in SGD_CASES] + [
        (ours, getattr(torch.optim, ours.__name__), kw) for ours, kw, _ in ADAM_CASES]
    for ours, theirs, kw in cases:
        got, _ = run(ours, "cpu", np.float64, **kw)
        tparams = [torch.tensor(p, requires_grad=True) for p in P0]
        topt = theirs(tparams, **kw)
        for grads in GRADS:
            for p, g in zip(tparams, grads):
                p.grad = torch.tensor(g)
            topt.step()
        for g, tp in zip(got, tparams):
            np.testing.assert_allclose(g, tp.detach().numpy(), rtol=1e-12, atol=1e-12)


def test_defaults_match_pytorch():
    p = [gg.zeros(2, requires_grad=True)]
    assert optim.Adam(p).defaults == dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8,
                                          weight_decay=0.0, amsgrad=False, maximize=False)
    assert optim.AdamW(p).defaults["weight_decay"] == 1e-2
    d = optim.SGD(p, lr=0.1).defaults
    assert d == dict(lr=0.1, momentum=0.0, dampening=0.0, nesterov=False, weight_decay=0.0,
                     maximize=False)


def test_params_without_grad_are_skipped(device, fused):
    a = gg.tensor(P0[0], device=device, requires_grad=True)
    b = gg.tensor(P0[1], device=device, requires_grad=True)
    for cls, kw in ((optim.SGD, dict(lr=0.1, momentum=0.9)), (optim.Adam, dict(lr=0.1))):
        opt = cls([a, b], **kw)
        before = b.numpy()
        a.grad = gg.ones(*a.shape, device=device)
        b.grad = None
        opt.step()
        np.testing.assert_array_equal(b.numpy(), before)
        assert b not in opt.state and a in opt.state
        # b joins later: it starts its own momentum / step count (two buckets in one step)
        b.grad = gg.ones(*b.shape, device=device)
        opt.step()
        if cls is optim.Adam:
            assert opt.state[a]["step"] == 2 and opt.state[b]["step"] == 1
            np.testing.assert_allclose(b.numpy(), before - 0.1, rtol=1e-5)
        else:
            np.testing.assert_allclose(b.numpy(), before - 0.1, rtol=1e-5)
        a.grad = b.grad = None


@pytest.mark.parametrize("cls,kw", [(optim.SGD, dict(lr=0.1)),
                                    (optim.SGD, dict(lr=0.1, momentum=0.9)),
                                    (optim.Adam, dict(lr=0.1))])
@pytest.mark.parametrize("grad_dtype", [np.float64, np.float32])  # the param's, or another
def test_step_never_changes_an_array_a_graph_saved(device, fused, cls, kw, grad_dtype):
    """A graph built before the step keeps the old values for its backward; the gradients the
    step read are left as they were."""
    w = gg.tensor(P0[0], dtype=np.float64, device=device, requires_grad=True)
    opt = cls([w], **kw)
    old = w.numpy()
    w.grad = gg.tensor(np.ones(w.shape), dtype=grad_dtype, device=device)
    grad = w.grad
    square = (w * w).sum()  # saves w's array for its backward
    opt.step()
    assert not np.array_equal(w.numpy(), old)
    np.testing.assert_array_equal(grad.numpy(), np.ones(w.shape))
    w.grad = None
    square.backward()
    np.testing.assert_allclose(w.grad.numpy(), 2 * old, rtol=1e-12)


def test_param_groups_have_their_own_options(device):
    a = gg.ones(2, device=device, requires_grad=True)
    b = gg.ones(2, device=device, requires_grad=True)
    opt = optim.SGD([{"params": [a]}, {"params": [b], "lr": 0.5}], lr=0.1)
    a.grad = gg.ones(2, device=device)
    b.grad = gg.ones(2, device=device)
    opt.step()
    np.testing.assert_allclose(a.numpy(), 0.9)
    np.testing.assert_allclose(b.numpy(), 0.5)
    assert opt.param_groups[1]["momentum"] == 0.0
    opt.zero_grad()
    assert a.grad is None and b.grad is None


def test_validation_errors():
    p = [gg.zeros(2, requires_grad=True)]
    for bad in (dict(lr=-0.1), dict(lr=0.1, momentum=-1), dict(lr=0.1, weight_decay=-1),
                dict(lr=0.1, nesterov=True), dict(lr=0.1, momentum=0.9, nesterov=True,
                                                  dampening=0.1), dict(lr=float("nan"))):
        with pytest.raises(ValueError, match="SGD"):
            optim.SGD(p, **bad)
    for bad in (dict(betas=(1.0, 0.9)), dict(betas=(0.9, -0.1)), dict(eps=-1), dict(lr=-1)):
        with pytest.raises(ValueError, match="Adam"):
            optim.Adam(p, **bad)
    with pytest.raises(ValueError, match="empty"):
        optim.SGD([], lr=0.1)
    with pytest.raises(TypeError, match="iterable"):
        optim.SGD(p[0], lr=0.1)
    with pytest.raises(ValueError, match="more than one"):
        optim.SGD(p + p, lr=0.1)
    with pytest.raises(ValueError, match="leaf"):
        optim.SGD([p[0] * 2], lr=0.1)
    with pytest.raises(TypeError, match="floating-point"):
        optim.SGD([gg.tensor([1, 2])], lr=0.1)
    with pytest.raises(ValueError, match="unknown option"):
        optim.SGD([{"params": p, "betas": (0.9, 0.9)}], lr=0.1)


ROUND_TRIP = [(optim.SGD, dict(lr=0.1, momentum=0.9)), (optim.Adam, dict(lr=0.01)),
              (optim.AdamW, dict(lr=0.01)), (optim.Adam, dict(lr=0.01, amsgrad=True)),
              (optim.AdamW, dict(lr=0.01, amsgrad=True, maximize=True)),
              (optim.SGD, dict(lr=0.01, momentum=0.9, maximize=True)),
              (optim.RMSprop, dict(lr=0.01, momentum=0.9, centered=True)),
              (optim.Adagrad, dict(lr=0.1, lr_decay=0.1))]
FIRST_STATE = {optim.SGD: "momentum_buffer", optim.RMSprop: "square_avg", optim.Adagrad: "sum"}


@pytest.mark.parametrize("cls,kw", ROUND_TRIP,
                         ids=[f"{c.__name__}-{'-'.join(kw)}" for c, kw in ROUND_TRIP])
def test_state_dict_round_trip_resumes_identically(device, cls, kw, tmp_path):
    _, opt = run(cls, device, np.float32, steps=3, **kw)
    sd = opt.state_dict()
    assert sorted(sd) == ["param_groups", "state"] and sd["param_groups"][0]["params"] == [0, 1]
    save({"optimizer": sd}, tmp_path / "opt.safetensors")
    loaded = load(tmp_path / "opt.safetensors", device="cpu")["optimizer"]  # via the host
    params = [p for g in opt.param_groups for p in g["params"]]
    clones = [gg.tensor(p.numpy(), device=device, requires_grad=True) for p in params]
    opt2 = cls(clones, **kw)
    opt2.load_state_dict(loaded)
    assert loaded["param_groups"][0].get("maximize", False) == kw.get("maximize", False)
    for c in clones:
        assert cls is optim.SGD or opt2.state[c]["step"] == 3
        for v in opt2.state[c].values():  # state moved to the parameters' device
            assert not isinstance(v, gg.Tensor) or v.device == c.device
    for extra in GRADS[3:]:
        for o, ps in ((opt, params), (opt2, clones)):
            for p, g in zip(ps, extra):
                p.grad = gg.tensor(g, dtype=np.float32, device=device)
            o.step()
    for a, b in zip(params, clones):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    # loaded state is a copy: stepping opt2 did not touch the dict it came from
    key = FIRST_STATE.get(cls, "exp_avg")
    assert not np.array_equal(loaded["state"][0][key].numpy(),
                              opt2.state[clones[0]][key].numpy())


def test_load_state_dict_errors():
    _, opt = run(optim.Adam, "cpu", np.float32, steps=1)
    sd = opt.state_dict()
    other = optim.Adam([gg.zeros(3, 4, requires_grad=True)])
    with pytest.raises(ValueError, match="param group 0 has 2 parameters"):
        other.load_state_dict(sd)
    wrong = optim.Adam([gg.zeros(3, 4, requires_grad=True), gg.zeros(6, requires_grad=True)])
    with pytest.raises(ValueError, match=r"shape \(5,\).*\(6,\)"):
        wrong.load_state_dict(sd)
    with pytest.raises(ValueError, match="'state' and 'param_groups'"):
        other.load_state_dict({"state": {}})
    assert wrong.state == {}  # nothing changed


def test_closure_is_called():
    p = gg.tensor([1.0], requires_grad=True)
    opt = optim.SGD([p], lr=0.5)

    def closure():
        opt.zero_grad()
        loss = (p * p).sum()
        loss.backward()
        return loss

    assert opt.step(closure).item() == 1.0
    assert p.item() == 0.0


# -- schedulers -------------------------------------------------------------------------------
def _opt(lr=0.1):
    return optim.SGD([{"params": [gg.zeros(1, requires_grad=True)]},
                      {"params": [gg.zeros(1, requires_grad=True)], "lr": lr * 10}], lr=lr)


def test_step_lr_closed_form():
    opt = _opt()
    sched = optim.StepLR(opt, step_size=3, gamma=0.5)
    seen = []
    for _ in range(10):
        seen.append(sched.get_last_lr())
        opt.step()
        sched.step()
    for epoch, lrs in enumerate(seen):
        np.testing.assert_allclose(lrs, [0.1 * 0.5 ** (epoch // 3), 1.0 * 0.5 ** (epoch // 3)])
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1 * 0.5**3)
    assert opt.param_groups[0]["initial_lr"] == 0.1


def test_cosine_closed_form_and_state_dict():
    opt = _opt()
    sched = optim.CosineAnnealingLR(opt, T_max=8, eta_min=0.01)
    for epoch in range(12):
        expect = 0.01 + (0.1 - 0.01) * (1 + math.cos(math.pi * epoch / 8)) / 2
        assert sched.get_last_lr()[0] == pytest.approx(expect, rel=1e-12)
        assert opt.param_groups[0]["lr"] == pytest.approx(expect, rel=1e-12)
        sched.step()
    sd = sched.state_dict()
    assert "optimizer" not in sd and sd["last_epoch"] == 12
    opt2 = _opt()
    sched2 = optim.CosineAnnealingLR(opt2, T_max=8, eta_min=0.01)
    sched2.load_state_dict(sd)
    sched.step()
    sched2.step()
    assert sched.get_last_lr() == sched2.get_last_lr()
    with pytest.raises(ValueError, match="T_max"):
        optim.CosineAnnealingLR(opt, T_max=0)
    with pytest.raises(ValueError, match="step_size"):
        optim.StepLR(opt, step_size=0)
    with pytest.raises(ValueError, match="initial_lr"):
        optim.StepLR(optim.SGD([gg.zeros(1, requires_grad=True)], lr=0.1), 2, last_epoch=3)
