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
    assert {"numpy", "numpy_torch", "eager", "compiled"} <= set(run["results"])


def test_numpy_baselines_train_alike():
    """The hand-written script with torch's conventions computes what the plain one does, and
    leaves the gradients intact where the plain one scales them in place."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import bench_mlp
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    import numpy as np

    rng = np.random.default_rng(1)
    sizes, batch = (20, 16, 12, 5), 8
    weights = [rng.standard_normal((i, o)).astype(np.float32) for i, o in zip(sizes, sizes[1:])]
    biases = [rng.standard_normal(o).astype(np.float32) for o in sizes[1:]]
    x = rng.standard_normal((batch, sizes[0])).astype(np.float32)
    y = rng.integers(0, sizes[-1], batch)
    plain = bench_mlp.NumpyMLP(weights, biases, batch)
    torch_like = bench_mlp.NumpyMLP(weights, biases, batch, torch_conventions=True)
    for _ in range(3):
        assert torch_like.step(x, y, 0.1) == pytest.approx(plain.step(x, y, 0.1), rel=1e-6)
        for gw, gw_torch in zip(plain.gW, torch_like.gW):
            np.testing.assert_allclose(gw, 0.1 * gw_torch.T, rtol=1e-5, atol=1e-6)
    for w, w_torch in zip(plain.W, torch_like.W):
        assert w_torch.shape == w.shape[::-1]
        np.testing.assert_allclose(w, w_torch.T, rtol=1e-5, atol=1e-6)


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
    assert all(r["page_faults_per_step"] >= 0 for r in rows)
    grad = dp["gradient_bytes"]
    assert dp["calls_per_step"] >= 2 and grad <= dp["bytes_per_step"] <= grad + 1024
    # eager steps copy every gradient into the buckets; the compiled backward writes there
    assert dp["packed_bytes_per_step"] == (0 if flags else grad)
