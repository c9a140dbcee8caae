"""Learning-rate schedulers vs torch.optim.lr_scheduler (the lr -- and momentum -- sequence over
40 steps, state_dict keys and round trips through a checkpoint), and vs hand-computed values
where torch is not needed."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

import gpugrad as gg
import gpugrad.optim as optim
import gpugrad.optim.lr_scheduler as sched_mod
from gpugrad.serialization import load, save

STEPS = 40


def make_opt(device, kind="sgd", lib=None):
    """Two param groups (lr 0.1 and 1.0) on gpugrad (lib=None) or on torch."""
    if lib is None:
        p = [gg.zeros(2, device=device, requires_grad=True) for _ in range(2)]
        mod = optim
    else:
        p = [lib.zeros(2, requires_grad=True) for _ in range(2)]
        mod = lib.optim
    groups = [{"params": [p[0]]}, {"params": [p[1]], "lr": 1.0}]
    if kind == "sgd":
        return mod.SGD(groups, lr=0.1, momentum=0.9)
    if kind == "adam":
        return mod.Adam(groups, lr=0.1)
    return mod.Adagrad(groups, lr=0.1)


class Warmup:
    """A callable object: LambdaLR's state_dict keeps its __dict__."""

    def __init__(self, k: int) -> None:
        self.k = k

    def __call__(self, epoch: int) -> float:
        return min(1.0, (epoch + 1) / self.k)


# (id, optimizer kind, factory(module, optimizer)); the modules have the same names and options
CASES = [
    ("step", "sgd", lambda m, o: m.StepLR(o, step_size=7, gamma=0.5)),
    ("multistep", "sgd", lambda m, o: m.MultiStepLR(o, milestones=[3, 10, 10, 25], gamma=0.3)),
    ("exponential", "sgd", lambda m, o: m.ExponentialLR(o, gamma=0.93)),
    ("cosine", "sgd", lambda m, o: m.CosineAnnealingLR(o, T_max=12, eta_min=0.01)),
    ("linear", "sgd", lambda m, o: m.LinearLR(o)),
    ("linear-decay", "sgd", lambda m, o: m.LinearLR(o, start_factor=1.0, end_factor=0.05,
                                                    total_iters=30)),
    ("lambda", "sgd", lambda m, o: m.LambdaLR(o, lambda e: 0.97**e * (1 + e % 3))),
    ("lambda-list", "sgd", lambda m, o: m.LambdaLR(o, [Warmup(10), lambda e: 1 / (1 + e)])),
    ("onecycle", "sgd", lambda m, o: m.OneCycleLR(o, max_lr=[0.5, 2.0], total_steps=STEPS)),
    ("onecycle-adam-linear", "adam",
     lambda m, o: m.OneCycleLR(o, max_lr=0.3, epochs=4, steps_per_epoch=10, pct_start=0.25,
                               anneal_strategy="linear", div_factor=10.0,
                               final_div_factor=100.0)),
    ("onecycle-3phase", "sgd", lambda m, o: m.OneCycleLR(o, max_lr=1.0, total_steps=STEPS + 5,
                                                         three_phase=True, base_momentum=0.8,
                                                         max_momentum=[0.9, 0.99])),
    ("onecycle-nomomentum", "adagrad",
     lambda m, o: m.OneCycleLR(o, max_lr=1.0, total_steps=STEPS, cycle_momentum=False)),
    ("sequential", "sgd",
     lambda m, o: m.SequentialLR(o, [m.LinearLR(o, start_factor=0.1, total_iters=5),
                                     m.CosineAnnealingLR(o, T_max=20)], milestones=[5])),
    ("sequential-3", "sgd",
     lambda m, o: m.SequentialLR(o, [m.ExponentialLR(o, gamma=0.9),
                                     m.StepLR(o, step_size=4, gamma=0.5),
                                     m.MultiStepLR(o, milestones=[3, 6])], milestones=[8, 20])),
    ("chained", "sgd",
     lambda m, o: m.ChainedScheduler([m.ExponentialLR(o, gamma=0.95),
                                      m.LinearLR(o, start_factor=0.2, total_iters=8)])),
    ("chained-cosine", "sgd",
     lambda m, o: m.ChainedScheduler([m.CosineAnnealingLR(o, T_max=10, eta_min=0.001),
                                      m.StepLR(o, step_size=5, gamma=0.7),
                                      m.MultiStepLR(o, milestones=[12], gamma=0.1)])),
]
IDS = [c[0] for c in CASES]


def momenta(opt):
    """Each group's momentum (Adam's beta1); None for optimizers without one (Adagrad), which
    pytest.approx refuses to compare, so callers check those slots apart."""
    return [g["betas"][0] if "betas" in g else g.get("momentum") for g in opt.param_groups]


def assert_same_momenta(ours, theirs, step):
    a, b = momenta(ours), momenta(theirs)
    assert [x is None for x in a] == [x is None for x in b], step
    assert [x for x in a if x is not None] == pytest.approx([x for x in b if x is not None],
                                                            rel=1e-12), step


def run_pair(device, kind, factory, steps=STEPS):
    """Step our scheduler and torch's side by side; return both, checked at every step."""
    torch = pytest.importorskip("torch")
    ours_opt, theirs_opt = make_opt(device, kind), make_opt(device, kind, torch)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's notes on step order and epoch arguments
        ours, theirs = factory(sched_mod, ours_opt), factory(torch.optim.lr_scheduler, theirs_opt)
        for step in range(steps):
            assert ours.get_last_lr() == pytest.approx(theirs.get_last_lr(), rel=1e-12), step
            lrs = [g["lr"] for g in ours_opt.param_groups]
            assert lrs == pytest.approx([g["lr"] for g in theirs_opt.param_groups], rel=1e-12)
            assert_same_momenta(ours_opt, theirs_opt, step)
            ours_opt.step()
            theirs_opt.step()
            ours.step()
            theirs.step()
    return ours, theirs


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_lr_sequence_matches_torch(device, case):
    _, kind, factory = case
    ours, theirs = run_pair(device, kind, factory)
    assert ours.get_last_lr() == pytest.approx(theirs.get_last_lr(), rel=1e-12)
    # the state_dict has torch's keys (torch's has one more: a flag for its get_lr warning)
    ours_sd, theirs_sd = ours.state_dict(), theirs.state_dict()
    assert set(ours_sd) <= set(theirs_sd)
    assert set(theirs_sd) - set(ours_sd) <= {"_get_lr_called_within_step"}


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_state_dict_resumes_through_a_checkpoint(device, case, tmp_path):
    _, kind, factory = case
    opt = make_opt(device, kind)
    sched = factory(sched_mod, opt)
    for _ in range(13):
        opt.step()
        sched.step()
    save({"optimizer": opt.state_dict(), "scheduler": sched.state_dict()}, tmp_path / "c.st")
    ckpt = load(tmp_path / "c.st", device=device)
    opt2 = make_opt(device, kind)
    sched2 = factory(sched_mod, opt2)
    opt2.load_state_dict(ckpt["optimizer"])
    sched2.load_state_dict(ckpt["scheduler"])
    assert sched2.get_last_lr() == sched.get_last_lr()
    for _ in range(STEPS - 14):
        for o, s in ((opt, sched), (opt2, sched2)):
            o.step()
            s.step()
        assert sched2.get_last_lr() == sched.get_last_lr()
        assert [g["lr"] for g in opt2.param_groups] == [g["lr"] for g in opt.param_groups]
        assert momenta(opt2) == momenta(opt)


def test_closed_form_jump_with_an_epoch(device):
    torch = pytest.importorskip("torch")
    for factory in (CASES[0][2], CASES[1][2], CASES[2][2], CASES[3][2], CASES[5][2]):
        ours_opt, theirs_opt = make_opt(device), make_opt(device, lib=torch)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ours, theirs = factory(sched_mod, ours_opt), factory(torch.optim.lr_scheduler,
                                                                theirs_opt)
            for epoch in (11, 3, 27):
                ours.step(epoch)
                theirs.step(epoch)
                assert ours.get_last_lr() == pytest.approx(theirs.get_last_lr(), rel=1e-12)


RESUMABLE = [
    lambda m, o, e: m.StepLR(o, step_size=3, gamma=0.5, last_epoch=e),
    lambda m, o, e: m.MultiStepLR(o, milestones=[2, 7, 9], last_epoch=e),
    lambda m, o, e: m.ExponentialLR(o, gamma=0.9, last_epoch=e),
    lambda m, o, e: m.CosineAnnealingLR(o, T_max=9, eta_min=0.02, last_epoch=e),
    lambda m, o, e: m.LinearLR(o, start_factor=0.2, total_iters=10, last_epoch=e),
    lambda m, o, e: m.LambdaLR(o, lambda k: 0.9**k, last_epoch=e),
    lambda m, o, e: m.OneCycleLR(o, max_lr=1.0, total_steps=30, last_epoch=e),
]


@pytest.mark.parametrize("factory", RESUMABLE)
def test_resume_with_last_epoch_matches_torch(device, factory):
    """Building a scheduler with last_epoch=k on an optimizer that already holds the rates of
    epoch k (torch's resume pattern): the constructor's step must not advance them twice."""
    torch = pytest.importorskip("torch")
    seqs = []
    for opt, mod in ((make_opt(device), sched_mod),
                     (make_opt(device, lib=torch), torch.optim.lr_scheduler)):
        seq = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            s = factory(mod, opt, -1)
            for _ in range(5):
                opt.step()
                s.step()
            s = factory(mod, opt, s.last_epoch)
            for _ in range(15):
                seq.append(s.get_last_lr())
                opt.step()
                s.step()
        seqs.append(seq)
    for step, (a, b) in enumerate(zip(*seqs)):
        assert a == pytest.approx(b, rel=1e-12), step


def test_hand_computed_values(device):
    """Without torch: a few values worked out by hand."""
    opt = make_opt(device)
    s = optim.MultiStepLR(opt, milestones=[2, 4, 4], gamma=0.5)
    seen = []
    for _ in range(6):
        seen.append(s.get_last_lr()[0])
        opt.step()
        s.step()
    assert seen == pytest.approx([0.1, 0.1, 0.05, 0.05, 0.0125, 0.0125])
    opt = make_opt(device)
    s = optim.LinearLR(opt, start_factor=0.25, total_iters=3)
    seen = []
    for _ in range(5):
        seen.append(s.get_last_lr()[1])
        s.step()
    assert seen == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0])
    opt = make_opt(device)
    s = optim.OneCycleLR(opt, max_lr=1.0, total_steps=10, pct_start=0.5)
    assert s.get_last_lr()[0] == pytest.approx(1.0 / 25)
    assert opt.param_groups[0]["momentum"] == pytest.approx(0.95)
    for _ in range(4):
        s.step()
    assert s.get_last_lr()[0] == pytest.approx(1.0) and momenta(opt)[0] == pytest.approx(0.85)
    for _ in range(5):
        s.step()
    assert s.get_last_lr()[0] == pytest.approx(1.0 / 25 / 1e4)
    s.step()  # step 10 = total_steps is still allowed, as in torch
    with pytest.raises(ValueError, match="total_steps"):
        s.step()
    opt = make_opt(device)
    s = optim.ChainedScheduler([optim.ExponentialLR(opt, gamma=0.5),
                                optim.StepLR(opt, step_size=2, gamma=0.1)])
    for _ in range(2):
        s.step()
    assert s.get_last_lr()[0] == pytest.approx(0.1 * 0.25 * 0.1)


def test_lambda_state_dict_leaves_functions_out(device):
    opt = make_opt(device)
    w = Warmup(10)
    s = optim.LambdaLR(opt, [w, lambda e: 1.0])
    sd = s.state_dict()
    assert sd["lr_lambdas"] == [{"k": 10}, None]
    sd["lr_lambdas"][0]["k"] = 4
    s2 = optim.LambdaLR(make_opt(device), [Warmup(10), lambda e: 1.0])
    s2.load_state_dict(sd)
    assert s2.lr_lambdas[0].k == 4 and w.k == 10
    s2.step()
    assert s2.get_last_lr()[0] == pytest.approx(0.1 * 2 / 4)
    with pytest.raises(ValueError, match="2 lr_lambdas"):
        optim.LambdaLR(opt, [lambda e: 1.0])


PLATEAU_METRICS = [1.0, 0.9, 0.95, 0.9, 0.91, 0.9, 0.8, 0.8, 0.8, 0.8, 0.8, 0.79995, 0.8, 0.7,
                   0.7, 0.71, 0.72, 0.73, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.5,
                   0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5]
PLATEAU_CASES = [
    dict(),
    dict(patience=1, factor=0.5),
    dict(patience=2, cooldown=2, factor=0.5, min_lr=[0.02, 0.3]),
    dict(mode="max", patience=1, factor=0.3, threshold=0.05, threshold_mode="abs"),
    dict(mode="max", patience=0, threshold=0.01),
    dict(patience=0, threshold=0.2, threshold_mode="abs", factor=0.5, min_lr=0.012),
    dict(patience=0, factor=0.9, eps=0.05),  # changes below eps are skipped
]


@pytest.mark.parametrize("kw", PLATEAU_CASES)
def test_reduce_on_plateau_matches_torch(device, kw):
    torch = pytest.importorskip("torch")
    ours_opt, theirs_opt = make_opt(device), make_opt(device, lib=torch)
    ours = optim.ReduceLROnPlateau(ours_opt, **kw)
    theirs = torch.optim.lr_scheduler.ReduceLROnPlateau(theirs_opt, **kw)
    metrics = PLATEAU_METRICS if kw.get("mode") != "max" else [-m for m in PLATEAU_METRICS]
    for i, m in enumerate(metrics):
        ours.step(gg.tensor(m, device=device) if i % 2 else m)  # a 0-d tensor works too
        theirs.step(m)
        assert ours.get_last_lr() == pytest.approx(theirs.get_last_lr(), rel=1e-12), i
        assert [g["lr"] for g in ours_opt.param_groups] == pytest.approx(
            [g["lr"] for g in theirs_opt.param_groups], rel=1e-12)
        for key in ("best", "num_bad_epochs", "cooldown_counter", "last_epoch"):
            assert getattr(ours, key) == pytest.approx(getattr(theirs, key)), (i, key)
    assert ours.get_last_lr() != [0.1, 1.0]  # the sequence did reduce the rates
    assert set(ours.state_dict()) == set(theirs.state_dict()) - {"_get_lr_called_within_step"}


def test_reduce_on_plateau_state_dict_and_errors(device, tmp_path):
    opt = make_opt(device)
    s = optim.ReduceLROnPlateau(opt, patience=1, cooldown=1)
    for m in PLATEAU_METRICS[:9]:
        s.step(m)
    save({"s": s.state_dict()}, tmp_path / "s.st")
    opt2 = make_opt(device)
    s2 = optim.ReduceLROnPlateau(opt2, patience=1, cooldown=1)
    s2.load_state_dict(load(tmp_path / "s.st")["s"])
    assert [g["lr"] for g in opt2.param_groups] == [g["lr"] for g in opt.param_groups]
    for m in PLATEAU_METRICS[9:]:
        s.step(m)
        s2.step(m)
        assert s2.get_last_lr() == s.get_last_lr() and s2.best == s.best
    for bad in (dict(factor=1.0), dict(mode="up"), dict(threshold_mode="x"), dict(patience=-1),
                dict(min_lr=[0.1])):
        with pytest.raises(ValueError):
            optim.ReduceLROnPlateau(opt, **bad)


def test_errors():
    opt = make_opt("cpu")
    other = make_opt("cpu")
    for bad in (lambda: optim.MultiStepLR(opt, [2.5]), lambda: optim.ExponentialLR(opt, 0.0),
                lambda: optim.LinearLR(opt, start_factor=0.0),
                lambda: optim.LinearLR(opt, end_factor=1.5),
                lambda: optim.LinearLR(opt, total_iters=0),
                lambda: optim.OneCycleLR(opt, max_lr=1.0),
                lambda: optim.OneCycleLR(opt, max_lr=1.0, total_steps=10, pct_start=1),
                lambda: optim.OneCycleLR(opt, max_lr=[1.0], total_steps=10),
                lambda: optim.OneCycleLR(opt, max_lr=1.0, total_steps=10, anneal_strategy="x"),
                lambda: optim.OneCycleLR(make_opt("cpu", "adagrad"), max_lr=1.0, total_steps=9),
                lambda: optim.SequentialLR(opt, [optim.StepLR(opt, 2)], milestones=[3]),
                lambda: optim.SequentialLR(opt, [optim.StepLR(other, 2)], milestones=[]),
                lambda: optim.ChainedScheduler([]),
                lambda: optim.ChainedScheduler([optim.ReduceLROnPlateau(opt)])):
        with pytest.raises(ValueError):
            bad()
    with pytest.raises(TypeError):
        optim.LambdaLR(opt, 0.5)
    with pytest.raises(ValueError, match="unknown keys"):
        optim.StepLR(opt, 2).load_state_dict({"last_epoch": 1, "base_lrs": [0.1, 1], "x": 1})
    with pytest.raises(ValueError, match="missing"):
        optim.ReduceLROnPlateau(opt).load_state_dict({"last_epoch": 1})


def test_param_group_keys_written_by_onecycle_are_accepted():
    opt = make_opt("cpu")
    optim.OneCycleLR(opt, max_lr=1.0, total_steps=10)
    group = {k: v for k, v in opt.param_groups[0].items() if k != "params"}
    assert {"initial_lr", "max_lr", "min_lr", "max_momentum", "base_momentum"} <= set(group)
    optim.SGD([{"params": [gg.zeros(1, requires_grad=True)], **group}])
    assert math.isclose(group["min_lr"], 1.0 / 25 / 1e4)
    assert np.isfinite(group["max_lr"])


def _sgd():
    return gg.optim.SGD([gg.zeros(1, requires_grad=True)], lr=1.0)


def test_loading_a_scheduler_keeps_rates_set_after_its_last_step():
    """Two schedulers on one optimizer, and a rate set by hand: the optimizer's restored rate
    wins, as in PyTorch (loading a scheduler does not rewrite the groups)."""
    opt = _sgd()
    exp, plateau = gg.optim.ExponentialLR(opt, gamma=0.9), gg.optim.ReduceLROnPlateau(
        opt, patience=0, factor=0.5)
    for _ in range(3):
        opt.step()
        exp.step()
        plateau.step(1.0)  # a flat metric: the plateau halves the rate after the first epoch
    saved = {"opt": opt.state_dict(), "exp": exp.state_dict(), "plat": plateau.state_dict()}
    lr = opt.param_groups[0]["lr"]
    assert lr == pytest.approx(0.9**3 / 4)
    opt2 = _sgd()
    exp2, plateau2 = gg.optim.ExponentialLR(opt2, gamma=0.9), gg.optim.ReduceLROnPlateau(
        opt2, patience=0, factor=0.5)
    opt2.load_state_dict(saved["opt"])
    plateau2.load_state_dict(saved["plat"])
    exp2.load_state_dict(saved["exp"])
    assert opt2.param_groups[0]["lr"] == lr
    opt3 = _sgd()
    sched = gg.optim.ExponentialLR(opt3, gamma=0.9)
    opt3.step()
    sched.step()
    opt3.param_groups[0]["lr"] = 0.01  # by hand, after the scheduler's step
    opt4 = _sgd()
    sched4 = gg.optim.ExponentialLR(opt4, gamma=0.9)
    opt4.load_state_dict(opt3.state_dict())
    sched4.load_state_dict(sched.state_dict())
    assert opt4.param_groups[0]["lr"] == 0.01


def test_loading_the_optimizer_before_building_the_scheduler_still_resumes():
    opt = _sgd()
    sched = gg.optim.StepLR(opt, step_size=1, gamma=0.5)
    for _ in range(2):
        opt.step()
        sched.step()
    opt2 = _sgd()
    opt2.load_state_dict(opt.state_dict())
    sched2 = gg.optim.StepLR(opt2, step_size=1, gamma=0.5)  # building it resets the rate ...
    sched2.load_state_dict(sched.state_dict())  # ... and loading its state restores it
    assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"] == 0.25
    opt2.step()
    sched2.step()
    assert opt2.param_groups[0]["lr"] == 0.125
