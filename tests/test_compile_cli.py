"""gg.compile in the command line, the bench rows and the static-vs-dynamic example."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from gpugrad.bench.suites import workloads
from gpugrad.cli import main

ROOT = Path(__file__).resolve().parents[1]
TINY = ["train", "--device", "cpu", "--hidden", "16", "--batch-size", "128", "--no-progress",
        "--epochs", "2", "--dropout", "0.1", "--clip-grad-norm", "1.0"]


def test_train_compile_matches_eager(tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    assert main(TINY + ["--json", str(a)]) == 0
    assert main(TINY + ["--compile", "--json", str(b)]) == 0
    ma, mb = json.loads(a.read_text()), json.loads(b.read_text())
    assert ma["train_loss"] == mb["train_loss"]  # the same bits: same ops in the same order
    assert ma["test_accuracy"] == mb["test_accuracy"]


def test_bench_has_eager_and_compiled_rows():
    rows = [(w.name, w.case, w.variant) for w in workloads(["mlp"], quick=True)]
    for name, case, _ in rows:
        assert (name, case, "eager") in rows and (name, case, "compiled") in rows
    step = next(w for w in workloads(["mlp"], quick=True) if w.variant == "compiled")
    import gpugrad as gg

    run = step.make(gg.device("cpu"))
    run()
    run()
    assert run.traces == 1 and len(run.program.steps) > 10


def test_static_vs_dynamic_example():
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "static_vs_dynamic.py"),
                           "--device", "cpu", "--epochs", "1"], capture_output=True, text=True,
                          env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "identical losses and weights: True" in out
    assert "gg.compile program" in out and "memory plan: peak" in out


def test_compile_sits_between_ops_and_cli():
    """gpugrad/compile imports only downward, and nothing below it imports it."""
    pkg = ROOT / "gpugrad"
    for path in (pkg / "compile").glob("*.py"):
        text = path.read_text()
        for upper in ("..cli", "..bench", "cupy"):
            assert f"from {upper}" not in text and f"import {upper}" not in text, path
    # the layering test allows imports within a layer; the hooks go the other way (a tracer
    # registered in autograd), so nothing beside compile imports it either
    above = {"compile", "cli", "bench"}
    lower = [p for p in pkg.rglob("*.py") if p.relative_to(pkg).parts[0] not in above
             and p != pkg / "__init__.py"]
    assert pkg / "tensor.py" in lower and pkg / "optim" / "lr_scheduler" / "base.py" in lower
    pattern = re.compile(r"^\s*(from\s+(\.+|gpugrad\.)compile\b|import\s+gpugrad\.compile)",
                         re.MULTILINE)
    for path in lower:
        assert not pattern.search(path.read_text()), path
