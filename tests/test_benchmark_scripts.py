"""The benchmark scripts run end to end with tiny settings and write the JSON they promise (they
are measured on quiet machines, not here: this only keeps them from rotting)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from _dist_launch import requires_mpi

ROOT = Path(__file__).resolve().parents[1]


def _run(script: str, *args: str, tmp_path: Path) -> object:
    out = tmp_path / "out.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *args,
                           "--json", str(out)], capture_output=True, text=True, env=env,
                          timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    return json.loads(out.read_text())


def test_bench_compile(tmp_path):
    result = _run("bench_compile.py", "--sizes", "small", "--repeats", "2", "--warmup", "1",
                  tmp_path=tmp_path)
    run = result["runs"][0]
    assert run["sizes"] == [784, 128, 10] and run["memory_plan"]["lowered_steps"] > 0
    assert {"numpy", "eager", "compiled"} <= set(run["results"])


def test_bench_mlp(tmp_path):
    result = _run("bench_mlp.py", "--sizes", "small", "--repeats", "2", "--warmup", "1",
                  "--no-torch", tmp_path=tmp_path)
    run = result["runs"][0]
    assert run["sizes"] == [784, 128, 10] and {"gpugrad", "numpy"} <= set(run["results"])


def test_bench_overhead(tmp_path):
    result = _run("bench_overhead.py", "--repeats", "3", "--min-batch-ms", "1",
                  tmp_path=tmp_path)
    assert result["overhead_per_op_s"] > 0 and result["results"]


@requires_mpi
@pytest.mark.parametrize("flags", [(), ("--compile", "--bucket-views")])
def test_bench_distributed(tmp_path, flags):
    rows = _run("bench_distributed.py", "--steps", "2", "--warmup", "1", "--rounds", "1",
                *flags, tmp_path=tmp_path)
    assert [(r["ranks"], r["mode"]) for r in rows] == [(1, "alone"), (2, "dp"),
                                                       (2, "no-reduce"), (2, "lock-step")]
    dp = rows[1]
    grad = dp["gradient_bytes"]
    assert dp["calls_per_step"] >= 2 and grad <= dp["bytes_per_step"] <= grad + 1024
    # eager steps copy every gradient into the buckets; the compiled backward writes there
    assert dp["packed_bytes_per_step"] == (0 if flags else grad)
