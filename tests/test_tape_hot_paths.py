"""The tape's fast paths keep their meaning: NumPy's floating-point state is quiet inside ops and
the caller's own state is back after every op, backward walk and error; the ``gg.compile`` hooks
are skipped only while no thread traces (``_tracers.count``), and ``Tensor.grad`` is the bare
slot only until a thread first traces."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

import gpugrad as gg
from gpugrad.autograd import _tracing
from gpugrad.tensor import Tensor, _tracers

ROOT = Path(__file__).resolve().parents[1]
RAISE_ALL = {"divide": "raise", "over": "raise", "under": "raise", "invalid": "raise"}


def test_ops_ignore_the_callers_errstate_and_leave_it_as_it_was(device):
    with np.errstate(all="raise"):
        x = gg.tensor([0.0, 1000.0, -1.0], dtype="float64", device=device, requires_grad=True)
        y = gg.log(x) + gg.exp(x) + gg.sqrt(x) + 1 / x  # inf and NaN in forward and backward
        assert np.geterr() == RAISE_ALL
        (g,) = gg.grad(y.sum(), x, create_graph=True)  # the walk, and ops recorded inside it
        assert np.geterr() == RAISE_ALL
        g.sum().backward()
        assert np.geterr() == RAISE_ALL
        assert np.isnan(x.grad.numpy()[2])
        with pytest.raises(FloatingPointError):  # the caller's own NumPy code still raises
            np.log(np.float64(0.0))


def test_errors_inside_ops_and_walks_restore_the_callers_state(device):
    a = gg.ones(2, 3, device=device, requires_grad=True)
    with np.errstate(all="raise"):
        with pytest.raises(ValueError, match="add"):
            a + gg.ones(4, device=device)  # fails inside forward
        assert np.geterr() == RAISE_ALL
        loss = (a * 2).sum()
        loss.backward()
        with pytest.raises(RuntimeError, match="second time"):
            loss.backward()  # fails inside the walk
        assert np.geterr() == RAISE_ALL and gg.is_grad_enabled()


class _Recorder:
    """A stand-in tracer that records which hooks were called."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def on_apply(self, *args) -> None:
        self.calls.append("apply")

    def on_grad_set(self, t) -> None:
        self.calls.append("grad")

    def on_untracked(self, t) -> None:
        self.calls.append("untracked")

    def on_new_tensor(self, t, data) -> None:
        self.calls.append("new")


def _grad_is_plain_slot() -> bool:
    return type(Tensor.__dict__["grad"]).__name__ == "member_descriptor"


def test_grad_is_the_bare_slot_until_something_traces():
    code = ("import gpugrad as gg; from gpugrad.tensor import Tensor, _tracing; "
            "kind = lambda: type(Tensor.__dict__['grad']).__name__; "
            "t = gg.ones(2, requires_grad=True); (t * t).sum().backward(); before = kind(); "
            "f = gg.compile(lambda x: (x * 2).sum()); f(gg.ones(2)); f(gg.ones(2)); "
            "t.grad = None; print(before, kind(), t.grad)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["member_descriptor", "property", "None"]


def test_hooks_reach_the_tracing_thread_only():
    assert _tracers.count == 0
    recorder = _Recorder()
    installed, release = threading.Event(), threading.Event()
    seen: dict[str, object] = {}

    def tracing_thread() -> None:
        _tracing.tracer = recorder
        _tracing.tracer = recorder  # set twice: still one thread tracing
        seen["count"], seen["plain"] = _tracers.count, _grad_is_plain_slot()
        t = gg.ones(2, requires_grad=True)
        (t * 2).sum()
        t.grad = None
        installed.set()
        release.wait(30)
        _tracing.tracer = None
        _tracing.tracer = None  # cleared twice: not below zero

    worker = threading.Thread(target=tracing_thread)
    worker.start()
    try:
        assert installed.wait(30)
        assert seen == {"count": 1, "plain": False}
        before = list(recorder.calls)
        assert "apply" in before and "grad" in before
        u = gg.ones(2, requires_grad=True)  # this thread does not trace: nothing reported
        (u * 3).sum().backward()
        u.grad = None
        assert recorder.calls == before
    finally:
        release.set()
        worker.join(30)
    assert _tracers.count == 0
    v = gg.ones(2, requires_grad=True)
    (v * v).sum().backward()
    assert v.grad.tolist() == [2.0, 2.0]


def test_compile_installs_and_removes_its_tracer():
    w = gg.ones(3, requires_grad=True)
    during: list[tuple[int, bool]] = []

    def step(x):
        during.append((_tracers.count, _grad_is_plain_slot()))
        w.grad = None
        loss = (w * x).sum()
        loss.backward()
        return loss

    compiled = gg.compile(step)
    x = gg.tensor([1.0, 2.0, 3.0])
    for _ in range(3):
        compiled(x)
    assert during[0] == (1, False)  # the trace
    assert _tracers.count == 0
    assert w.grad.tolist() == [1.0, 2.0, 3.0]
