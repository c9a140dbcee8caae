"""Which steps of a compiled program a CUDA replay captures into graphs and which it runs eagerly
between them (gpugrad/compile/graphed.py); decided from the program, so checked on the CPU. The
capture itself runs in the emulator tier (tests/cuda_emulator/test_simt_compile.py)."""

from __future__ import annotations

import numpy as np
from _helpers import compiled_train_step

import gpugrad as gg
from gpugrad.compile import graphed


def _program(dropout: float):
    gg.manual_seed(0)
    model = gg.nn.MLP([6, 8, 3], dropout=dropout)
    opt = gg.optim.Adam(model.parameters(), lr=1e-2)

    step = compiled_train_step(model, opt)

    step(gg.tensor(np.ones((4, 6), np.float32)), gg.tensor(np.arange(4) % 3))
    return step.program


def test_gemms_host_steps_and_per_call_values_run_eagerly():
    prog = _program(dropout=0.5)
    reasons = graphed.eager_reasons(prog)
    by_label: dict[str, set] = {}
    for step, why in zip(prog.steps, reasons):
        by_label.setdefault((step.kind, step.label), set()).add(why)
    assert by_label[("forward", "Linear")] == {"gemm"}
    assert by_label[("backward", "Linear")] == {"gemm"}
    # dropout draws a key per call; its backward reads the mask that forward kept
    assert by_label[("forward", "Dropout")] == {"per-call value"}
    assert by_label[("backward", "Dropout")] == {"per-call value"}
    assert by_label[("call", "Adam.step_groups")] == {"call"}
    assert by_label[("call", "Adam.zero_grad")] == {"call"}
    assert by_label[("leaf-grad", "leaf .grad")] == {"leaf-grad"}
    assert by_label[("read", "read")] == {"read"}
    for key in [("forward", "ReLU"), ("backward", "ReLU"), ("forward", "CrossEntropy"),
                ("backward", "CrossEntropy"), ("seed", "seed")]:
        assert by_label[key] == {None}, key


def test_without_dropout_its_neighbours_are_captured():
    prog = _program(dropout=0.0)
    reasons = graphed.eager_reasons(prog)
    assert "per-call value" not in reasons
    assert sum(r is None for r in reasons) == 5  # ReLU x2, cross-entropy x2, the seed


def test_graphs_switch(monkeypatch):
    monkeypatch.delenv("GPUGRAD_CUDA_GRAPHS", raising=False)
    assert graphed.graphs_enabled()
    monkeypatch.setenv("GPUGRAD_CUDA_GRAPHS", "0")
    assert not graphed.graphs_enabled()
