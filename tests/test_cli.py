"""The ``gpugrad`` command line: info, train (json, save/resume, NaN stop), bench (json, plot).

Runs in-process through ``gpugrad.cli.main`` (fast), plus one subprocess for ``python -m gpugrad``.
Training runs are kept tiny (a hidden layer of 16, one or two epochs); no timing is asserted.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gpugrad.cli import DEFAULTS, main

ROOT = Path(__file__).resolve().parents[1]
TINY = ["train", "--device", "cpu", "--hidden", "16", "--batch-size", "128", "--no-progress"]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_info_runs(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "gpugrad" in out and "cpu" in out and "fused kernels" in out
    assert "numpy" in out


def test_info_json_and_module_entry_point(tmp_path):
    # `python -m gpugrad` must work from a checkout, like the console script.
    path = tmp_path / "info.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, "-m", "gpugrad", "info", "--json", str(path)],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    info = json.loads(path.read_text())
    assert info["devices"][0]["device"] == "cpu"
    assert {"gpugrad", "python", "numpy"} <= set(info["versions"])
    assert "fused_enabled" in info["kernels"]
    if not info["cuda_available"]:
        assert info["cuda_unavailable_reason"]


def test_train_json_keys(tmp_path, capsys):
    path = tmp_path / "m.json"
    assert main(TINY + ["--epochs", "1", "--json", str(path)]) == 0
    m = json.loads(path.read_text())
    for key in ("test_accuracy", "train_loss", "seconds", "device", "config"):
        assert key in m
    assert m["device"] == "cpu" and m["epochs_completed"] == 1 and m["stopped"] is None
    assert 0.0 <= m["test_accuracy"] <= 1.0 and m["train_loss"] > 0
    assert m["config"]["hidden"] == [16] and m["config"]["optimizer"] == DEFAULTS["optimizer"]
    out = capsys.readouterr().out
    assert "epoch   1/1" in out and "test accuracy" in out


def test_save_resume_matches_an_uninterrupted_run(tmp_path):
    ck, a, b = tmp_path / "ck.safetensors", tmp_path / "a.json", tmp_path / "b.json"
    assert main(TINY + ["--epochs", "2", "--json", str(a)]) == 0
    assert main(TINY + ["--epochs", "1", "--save", str(ck)]) == 0
    assert ck.exists()
    # Flags left out on resume come from the checkpoint (hidden, batch size, lr, seed).
    assert main(["train", "--device", "cpu", "--no-progress", "--epochs", "2",
                 "--resume", str(ck), "--json", str(b)]) == 0
    full, resumed = json.loads(a.read_text()), json.loads(b.read_text())
    assert resumed["epochs_completed"] == 2
    assert [h["epoch"] for h in resumed["history"]] == [2]
    # Model, optimizer state and loader epoch restored: epoch 2 is the same as without a break.
    assert resumed["train_loss"] == pytest.approx(full["train_loss"], rel=1e-6)
    assert resumed["test_accuracy"] == pytest.approx(full["test_accuracy"])


def test_resume_rejects_another_architecture(tmp_path, capsys):
    ck = tmp_path / "ck.safetensors"
    assert main(TINY + ["--epochs", "1", "--save", str(ck)]) == 0
    assert main(["train", "--device", "cpu", "--hidden", "32", "--resume", str(ck)]) == 2
    assert "--hidden" in capsys.readouterr().err


def test_nan_stops_and_keeps_last_good_checkpoint(tmp_path, capsys):
    ck, path = tmp_path / "ck.safetensors", tmp_path / "m.json"
    assert main(TINY + ["--epochs", "1", "--save", str(ck)]) == 0
    good = _sha(ck)
    # An absurd learning rate on resume: the weights overflow and the loss turns NaN.
    rc = main(["train", "--device", "cpu", "--no-progress", "--epochs", "3", "--lr", "1e30",
               "--resume", str(ck), "--save", str(ck), "--json", str(path)])
    assert rc == 1
    err = capsys.readouterr().err
    assert "training stopped" in err and "last good checkpoint" in err and "--lr" in err
    assert _sha(ck) == good  # untouched: still the epoch-1 checkpoint
    m = json.loads(path.read_text())
    assert m["stopped"] and m["epochs_completed"] == 1
    assert main(TINY + ["--epochs", "2", "--resume", str(ck)]) == 0  # and it still loads


def test_regularisers_and_other_optimizers(tmp_path, capsys):
    ck, path = tmp_path / "ck.safetensors", tmp_path / "m.json"
    flags = ["--epochs", "1", "--optimizer", "rmsprop", "--lr", "1e-3", "--weight-decay", "1e-4",
             "--dropout", "0.2", "--label-smoothing", "0.1", "--clip-grad-norm", "1.0"]
    assert main(TINY + flags + ["--save", str(ck), "--json", str(path)]) == 0
    m = json.loads(path.read_text())
    assert m["config"]["optimizer"] == "rmsprop" and m["config"]["dropout"] == 0.2
    assert m["config"]["label_smoothing"] == 0.1 and m["config"]["clip_grad_norm"] == 1.0
    assert m["config"]["weight_decay"] == 1e-4 and m["test_accuracy"] > 0.5
    assert "dropout 0.2" in capsys.readouterr().out
    # On resume the regularisers come from the checkpoint unless given again.
    assert main(["train", "--device", "cpu", "--no-progress", "--epochs", "2", "--resume", str(ck),
                 "--dropout", "0", "--json", str(path)]) == 0
    m = json.loads(path.read_text())
    assert m["config"]["dropout"] == 0.0 and m["config"]["label_smoothing"] == 0.1
    assert main(TINY + ["--epochs", "1", "--optimizer", "adagrad", "--lr", "0.05"]) == 0


def test_clip_grad_norm_changes_the_run(tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    sgd = TINY + ["--epochs", "2", "--optimizer", "sgd", "--lr", "0.5"]  # Adam ignores grad scale
    assert main(sgd + ["--json", str(a)]) == 0
    assert main(sgd + ["--clip-grad-norm", "0.01", "--json", str(b)]) == 0
    plain, clipped = json.loads(a.read_text()), json.loads(b.read_text())
    assert clipped["train_loss"] > plain["train_loss"] + 0.1  # tiny steps learn less


@pytest.mark.parametrize("flag, value", [("--dropout", "1"), ("--label-smoothing", "-0.1"),
                                         ("--clip-grad-norm", "0"), ("--weight-decay", "-1")])
def test_bad_regulariser_values_are_clear_errors(flag, value, capsys):
    assert main(TINY + ["--epochs", "1", flag, value]) == 2
    assert flag in capsys.readouterr().err


def test_bad_device_is_a_clear_error(capsys):
    assert main(["train", "--device", "tpu"]) == 2
    assert "unknown device" in capsys.readouterr().err


def test_parity_without_cuda_says_so(capsys):
    import gpugrad as gg

    if gg.cuda.is_available():
        pytest.skip("CUDA present: the parity run itself is exercised by gpu_check.sh")
    assert main(["train", "--parity"]) == 2
    assert "CUDA is unavailable" in capsys.readouterr().err


def test_parity_report_path(tmp_path, monkeypatch, capsys):
    """The --parity report and JSON, with CPU standing in for CUDA (a same-seed CPU rerun must
    be bit-identical, so the difference is exactly 0)."""
    import gpugrad as gg
    import gpugrad.parity

    real = gpugrad.parity.parity
    monkeypatch.setattr(gg.cuda, "is_available", lambda: True)
    monkeypatch.setattr(gpugrad.parity, "parity",
                        lambda **kw: real(**{**kw, "devices": ("cpu", "cpu")}))
    path = tmp_path / "parity.json"
    assert main(["train", "--parity", "--parity-steps", "20", "--json", str(path)]) == 0
    out = capsys.readouterr().out
    assert "parity OK" in out and "cpu loss" in out
    r = json.loads(path.read_text())
    assert r["ok"] and r["max_rel_diff"] == 0.0 and len(r["losses"][r["devices"][0]]) == 20


def test_bench_quick_json_structure(tmp_path, capsys):
    path = tmp_path / "bench.json"
    assert main(["bench", "--quick", "--devices", "cpu", "--json", str(path), "--quiet"]) == 0
    r = json.loads(path.read_text())
    for key in ("schema", "date", "versions", "machine", "devices", "config", "kernels",
                "kernel_build_s", "rows", "skipped"):
        assert key in r
    assert r["devices"] == ["cpu"] and r["config"]["quick"] is True
    assert r["machine"]["cpu"]["threads"] >= 1 and r["machine"]["cpu"]["model"]
    assert {row["suite"] for row in r["rows"]} == {"mlp", "kernels", "ops"}
    assert not r["skipped"], r["skipped"]
    for row in r["rows"]:
        for key in ("name", "case", "device", "impl", "median_s", "q1_s", "q3_s", "min_s",
                    "max_s", "first_call_s", "repeats", "throughput", "unit", "speedup_vs_cpu"):
            assert key in row, key
        assert row["min_s"] <= row["median_s"] <= row["max_s"]
    variants = {row["variant"] for row in r["rows"] if row["suite"] == "kernels"}
    assert variants == {"fused", "unfused"}
    assert "== mlp ==" in capsys.readouterr().out


def test_bench_plot_without_matplotlib_is_a_clear_message(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` fail
    rc = main(["bench", "--quick", "--devices", "cpu", "--suite", "ops",
               "--plot", str(tmp_path / "b.png")])
    assert rc == 2
    err = capsys.readouterr().err
    assert "matplotlib" in err and "gpugrad[plot]" in err
    assert not (tmp_path / "b.png").exists()


def test_bench_plot_writes_png(tmp_path):
    pytest.importorskip("matplotlib")
    png = tmp_path / "b.png"
    assert main(["bench", "--quick", "--devices", "cpu", "--suite", "ops", "--quiet",
                 "--plot", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_rejects_unknown_suite(capsys):
    assert main(["bench", "--suite", "nope"]) == 2
    assert "unknown suite" in capsys.readouterr().err


def test_resume_with_dropout_continues_the_uninterrupted_run(tmp_path):
    ck, a, b = tmp_path / "ck.safetensors", tmp_path / "a.json", tmp_path / "b.json"
    run = TINY + ["--dropout", "0.2"]
    assert main(run + ["--epochs", "2", "--json", str(a)]) == 0
    assert main(run + ["--epochs", "1", "--save", str(ck)]) == 0
    assert main(run + ["--epochs", "2", "--resume", str(ck), "--json", str(b)]) == 0
    full, resumed = json.loads(a.read_text()), json.loads(b.read_text())
    assert resumed["train_loss"] == pytest.approx(full["train_loss"], rel=1e-6)


def test_resume_applies_a_new_weight_decay(tmp_path):
    import gpugrad as gg

    ck, ck2 = tmp_path / "ck.safetensors", tmp_path / "ck2.safetensors"
    assert main(TINY + ["--epochs", "1", "--weight-decay", "0.5", "--save", str(ck)]) == 0
    assert gg.load(ck)["optimizer"]["param_groups"][0]["weight_decay"] == 0.5
    assert main(TINY + ["--epochs", "2", "--weight-decay", "0", "--resume", str(ck),
                        "--save", str(ck2)]) == 0
    assert gg.load(ck2)["optimizer"]["param_groups"][0]["weight_decay"] == 0.0
