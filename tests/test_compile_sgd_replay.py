"""gg.compile's specialised plain SGD step (CPU): the replay updates the traced parameters with
eager's arithmetic, reads lr and the options per call, and hands any group that no longer
matches the trace -- new options, an edited or replaced parameter list, a gradient of another
dtype -- to the general step, so compiled and eager runs stay bit for bit the same."""

from __future__ import annotations

import numpy as np
import pytest
from _helpers import compiled_train_step

import gpugrad as gg
import gpugrad.functional as F
from gpugrad import nn, optim

STEPS = 8


def _batches(device: str):
    rng = np.random.default_rng(2)
    return [(gg.tensor(rng.standard_normal((5, 6)).astype(np.float32), device=device),
             gg.tensor(rng.integers(0, 3, 5), device=device)) for _ in range(STEPS)]


def _edit(kind: str, opt, model, i: int) -> None:
    """Between calls: what a user or a scheduler may change."""
    group = opt.param_groups[0]
    if kind == "lr":
        group["lr"] = 0.1 / (i + 1)
    elif kind == "momentum" and i == 3:
        group["momentum"] = 0.9
    elif kind == "params-replaced" and i == 3:
        group["params"] = list(group["params"])
    elif kind == "params-trimmed" and i == 3:
        group["params"].pop()  # the last bias is no longer optimized
    elif kind == "new-group" and i == 3:
        extra = group["params"].pop()  # the last bias, now in a group of its own
        opt.add_param_group({"params": [extra], "lr": 0.5})


def _run(compiled: bool, device: str, kind: str, grad_dtype=None):
    gg.manual_seed(0)
    model = nn.MLP([6, 8, 3]).to(device)
    opt = optim.SGD(model.parameters(), lr=0.1)

    def step(x, y):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        if grad_dtype is not None:  # a gradient of another dtype: the general step casts it
            w = next(iter(model.parameters()))
            w.grad = w.grad.astype(grad_dtype)
        opt.step()
        return loss

    fn = gg.compile(step) if compiled else step
    losses = []
    for i, (x, y) in enumerate(_batches(device)):
        losses.append(fn(x, y).numpy())
        _edit(kind, opt, model, i)
    return losses, [p.numpy() for p in model.parameters()], fn


@pytest.mark.parametrize("kind", ["none", "lr", "momentum", "params-replaced",
                                  "params-trimmed", "new-group"])
def test_specialised_sgd_step_matches_eager(device, kind):
    eager = _run(False, device, kind)
    compiled = _run(True, device, kind)
    for e, c in zip(eager[0], compiled[0]):
        np.testing.assert_array_equal(e, c)
    for e, c in zip(eager[1], compiled[1]):
        np.testing.assert_array_equal(e, c)
    labels = [step.label for step in compiled[2].program.steps]
    assert ("SGD.step_groups (specialised)" in labels) == (device == "cpu")


def test_gradient_of_another_dtype_takes_the_general_step(device):
    eager = _run(False, device, "none", np.float64)
    compiled = _run(True, device, "none", np.float64)
    for e, c in zip(eager[1], compiled[1]):
        np.testing.assert_array_equal(e, c)


def test_not_specialised_with_momentum_or_buffers_off(monkeypatch):
    gg.manual_seed(0)
    model = nn.MLP([6, 8, 3])
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)

    step = compiled_train_step(model, opt)

    x, y = _batches("cpu")[0]
    step(x, y)
    assert "SGD.step_groups" in [s.label for s in step.program.steps]
    opt.param_groups[0]["momentum"] = 0.0
    monkeypatch.setenv("GPUGRAD_COMPILE_BUFFERS", "0")
    step(gg.tensor(np.ones((2, 6), np.float32)), gg.tensor(np.array([0, 1])))  # a new trace
    assert "SGD.step_groups" in [s.label for s in step.program.steps]
