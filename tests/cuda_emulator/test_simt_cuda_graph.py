"""gg.compile's CUDA-graph replay on the emulated GPU (a subprocess: ``cupy`` must be the stand-in
before gpugrad is imported): MLP steps with SGD momentum and Nesterov, Adam with dropout, AdamW
with weight decay and a learning rate halved every step are bit for bit the eager steps, through
captured graph segments between eager GEMMs, with no host read; a capture that hits cuBLAS falls
back to uncaptured replay once, saying why; a bad label in a replayed step raises at the read."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from test_simt_train_step import HERE, _env


@pytest.fixture(scope="module")
def result(prebuilt):
    proc = subprocess.run([sys.executable, str(HERE / "simt_compile_step.py")], env=_env(),
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("case", ["sgd_momentum", "sgd_nesterov_wd", "adam_dropout",
                                  "adamw_schedule"])
def test_captured_replay_is_bitwise_eager(result, case):
    eager, compiled = result[case]["eager"], result[case]["compiled"]
    assert compiled["losses"] == eager["losses"]
    assert compiled["weights"] == eager["weights"]
    assert compiled["reads"] == [0, 0, 0, 0]  # not even the trace reads the device
    # call 1 traces, call 2 captures (and launches), calls 3-4 launch the same graphs
    assert compiled["segments"] >= 3 and compiled["graph_launches"] == 3 * compiled["segments"]
    assert "GEMM step" in compiled["graphed"]
    assert compiled["listing_end"] == compiled["graphed"]  # the program listing says so


def test_cublas_in_a_capture_falls_back_once(result):
    fb, eager = result["fallback"], result["sgd_momentum"]["eager"]
    assert fb["losses"] == eager["losses"] and fb["weights"] == eager["weights"]
    assert fb["graph_launches"] == 0 and fb["segments"] == 0
    assert len(fb["warnings"]) == 1 and "cuBLAS" in fb["warnings"][0]
    assert "replays without CUDA graphs" in fb["warnings"][0]


def test_replayed_label_check_raises_at_the_read(result):
    assert result["bad_label"].startswith("cross_entropy: label 99 at row 2")


def test_the_standin_records_during_capture_as_cuda_does():
    import numpy as np
    import simt_cupy as cp

    a = cp.asarray(np.arange(4.0))
    s = cp.cuda.Stream(non_blocking=True)
    with s:
        s.begin_capture()
        b = a * 2.0  # recorded: allocated, no value yet
        a += 1.0  # recorded, not run
        with pytest.raises(NotImplementedError, match="cuBLAS"):
            cp.matmul(a, a)
        with pytest.raises(RuntimeError, match="capturing"):
            cp.asnumpy(a)
        with pytest.raises(RuntimeError, match="capturing"):
            cp.asarray(np.ones(2))
        graph = s.end_capture()
    assert np.isnan(b.view(np.ndarray)).all()
    assert a.view(np.ndarray).tolist() == [0.0, 1.0, 2.0, 3.0]
    graph.launch(s)
    assert b.view(np.ndarray).tolist() == [0.0, 2.0, 4.0, 6.0]
    assert a.view(np.ndarray).tolist() == [1.0, 2.0, 3.0, 4.0]
    graph.launch(s)  # the same calls on the same memory
    assert b.view(np.ndarray).tolist() == [2.0, 4.0, 6.0, 8.0]
    with pytest.raises(RuntimeError, match="default"):
        cp.cuda.Stream(null=True).begin_capture()
