"""Each script in examples/ runs on the CPU and prints a sensible metric."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_example(name: str, *args: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / name), "--device", "cpu",
                           *args], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def metric(out: str, label: str) -> float:
    m = re.search(rf"{label}:\s*([-0-9.]+)", out)
    assert m, f"{label!r} not printed:\n{out}"
    return float(m.group(1))


def test_worked_sigmoid(tmp_path):
    dot = tmp_path / "g.dot"
    out = run_example("worked_sigmoid.py", "--dot", str(dot))
    assert re.search(r"dh/dw = 0\.25\b", out), out
    rows = {line.split("|")[0].strip(): line for line in out.splitlines() if "|" in line}
    for name in ("h1", "h2", "h3", "h4", "h5"):
        assert name in rows, out
    # The textbook values: h3 = e^0 = 1, h4 = 2, h5 = 0.5; upstream gradient into h1 is 0.25.
    assert rows["h5"].split("|")[2].strip() == "0.5"
    assert rows["h4"].split("|")[2].strip() == "2"
    assert rows["h1"].split("|")[4].strip() == "0.25"
    assert dot.read_text().startswith("digraph")


def test_regression():
    out = run_example("regression.py")
    assert metric(out, "test R2") > 0.4
    assert 30 < metric(out, "test RMSE") < 80  # in the target's original units (25..346)


def test_binary_classification():
    assert metric(run_example("binary_classification.py"), "test accuracy") >= 0.93


def test_multiclass():
    assert metric(run_example("multiclass.py"), "test accuracy") >= 0.95


def test_from_scratch():
    out = run_example("from_scratch.py")
    losses = [float(v) for v in re.findall(r"loss ([0-9.]+)", out)]
    assert losses[0] == 0.6931 and losses[-1] < 0.1  # log 2 at w = 0, then it learns
    assert metric(out, "test accuracy") >= 0.95
