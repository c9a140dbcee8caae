"""Malformed optimizer and scheduler state dicts are a ValueError saying what is wrong, checked
before anything changes."""

from __future__ import annotations

import pytest

import gpugrad as gg
from gpugrad import optim


def _opt():
    w = gg.tensor([1.0, 2.0], requires_grad=True)
    return optim.Adam([w], lr=0.1)


@pytest.mark.parametrize("state_dict, why", [
    ({"state": 5, "param_groups": "x"}, "'param_groups' is a str"),
    ({"state": 5, "param_groups": [{"params": [0], "lr": 0.1}]}, "'state' is a int"),
    ({"state": {}, "param_groups": [5]}, "param group 0 is a int"),
    ({"state": {}, "param_groups": [{"params": "ab"}]}, "'params' is 'ab'"),
    ({"state": {}, "param_groups": [{"params": [0.5]}]}, "not a list of ints"),
    ({"state": {"x": {}}, "param_groups": [{"params": [0]}]}, "not a parameter index"),
    ({"state": {0: 7}, "param_groups": [{"params": [0]}]}, "not a dict of named values"),
    ({"state": {}, "param_groups": [{"params": [0], 3: 1}]}, "non-string option"),
])
def test_malformed_optimizer_state_dicts(state_dict, why):
    opt = _opt()
    before = opt.state_dict()
    with pytest.raises(ValueError, match="Adam.load_state_dict") as info:
        opt.load_state_dict(state_dict)
    assert why in str(info.value)
    assert opt.state_dict()["param_groups"] == before["param_groups"]


@pytest.mark.parametrize("state_dict, why", [
    (5, "expected a dict"),
    ("abc", "expected a dict"),
    ({"step_size": "x"}, "'step_size' is 'x'"),
    ({"base_lrs": [0.1, 0.2]}, "'base_lrs'"),
    ({"last_epoch": [1]}, "'last_epoch'"),
])
def test_malformed_scheduler_state_dicts(state_dict, why):
    sched = optim.StepLR(_opt(), step_size=2)
    if isinstance(state_dict, dict):
        state_dict = {**sched.state_dict(), **state_dict}
    with pytest.raises(ValueError, match="StepLR.load_state_dict") as info:
        sched.load_state_dict(state_dict)
    assert why in str(info.value)
    sched.step()  # still usable
