"""`gpugrad train --resume` restores every flag left out (bit for bit), and bad input is a one-line
error with exit status 2 before any training: checked through the real entry point in a
subprocess (exit code, a single stderr line, no traceback)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import gpugrad as gg
from gpugrad.cli import main
from gpugrad.cli import train as train_cli

ROOT = Path(__file__).resolve().parents[1]
TINY = ["train", "--device", "cpu", "--hidden", "16", "--batch-size", "256", "--no-progress"]


def run_cli(*args: str, env: dict[str, str] | None = None, module: str = "gpugrad",
            script: str | None = None) -> subprocess.CompletedProcess:
    environ = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    cmd = [sys.executable, script] if script else [sys.executable, "-m", module]
    return subprocess.run(cmd + list(args), capture_output=True, text=True, env=environ,
                          timeout=300, cwd=ROOT)


def assert_usage_error(proc: subprocess.CompletedProcess, *fragments: str) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    err = proc.stderr.strip()
    assert "Traceback" not in proc.stderr and len(err.splitlines()) == 1, proc.stderr
    assert "error:" in err
    for fragment in fragments:
        assert fragment in err, err
    assert "epoch" not in proc.stdout, "training started before the error"
    return err


# -- 9. --resume restores every flag ---------------------------------------------------------------
RESUME_CASES = [
    ["--optimizer", "sgd", "--lr", "0.05", "--schedule", "constant", "--weight-decay", "1e-3",
     "--clip-grad-norm", "0.5"],
    ["--optimizer", "adam", "--dropout", "0.2"],
    ["--optimizer", "adamw", "--label-smoothing", "0.1", "--seed", "3"],
    ["--optimizer", "rmsprop", "--lr", "1e-3", "--schedule", "constant", "--dropout", "0.1",
     "--clip-grad-norm", "1.0"],
    ["--optimizer", "adagrad", "--lr", "0.05", "--weight-decay", "1e-4",
     "--label-smoothing", "0.05", "--batch-size", "128"],
]


@pytest.mark.parametrize("flags", RESUME_CASES, ids=lambda f: f[1])
def test_half_run_plus_plain_resume_is_bitwise_the_full_run(tmp_path, monkeypatch, flags):
    full_ck, part_ck = tmp_path / "full.st", tmp_path / "part.st"
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    run = TINY + ["--epochs", "2", *flags]
    assert main(run + ["--save", str(full_ck), "--json", str(a)]) == 0

    real_save = train_cli._save_checkpoint

    def save_then_die(path, model, opt, epoch, *rest):
        real_save(path, model, opt, epoch, *rest)
        if epoch == 1:
            raise KeyboardInterrupt  # killed after the first epoch's checkpoint

    monkeypatch.setattr(train_cli, "_save_checkpoint", save_then_die)
    assert main(run + ["--save", str(part_ck)]) == 130
    monkeypatch.undo()
    # Nothing but the checkpoint: every flag must come back from it.
    assert main(["train", "--no-progress", "--device", "cpu", "--resume", str(part_ck),
                 "--save", str(part_ck), "--json", str(b)]) == 0
    full, resumed = json.loads(a.read_text()), json.loads(b.read_text())
    assert resumed["config"] == full["config"]
    assert resumed["history"][-1]["train_loss"] == full["history"][-1]["train_loss"]
    assert resumed["test_accuracy"] == full["test_accuracy"]
    one, two = gg.load(full_ck), gg.load(part_ck)
    for name in ("model",):
        for k, v in one[name].items():
            np.testing.assert_array_equal(v.numpy(), two[name][k].numpy(), err_msg=k)
    assert one["loader_epoch"] == two["loader_epoch"] == 2 and two["epoch"] == 2


def test_schedule_and_epochs_come_back_from_the_checkpoint(tmp_path, capsys):
    ck = tmp_path / "ck.st"
    assert main(TINY + ["--epochs", "3", "--schedule", "constant", "--save", str(ck)]) == 0
    ckpt = gg.load(ck)
    ckpt["epoch"] = ckpt["loader_epoch"] = 1  # as if stopped after the first epoch
    gg.save(ckpt, ck)
    capsys.readouterr()
    assert main(["train", "--no-progress", "--device", "cpu", "--resume", str(ck)]) == 0
    out = capsys.readouterr().out
    assert "(constant)" in out and "epoch   3/3" in out and "epoch   4/" not in out


# -- 14. one pass over the loader per epoch --------------------------------------------------------
@pytest.mark.parametrize("progress", [False, True])
def test_each_epoch_iterates_the_loader_once(tmp_path, monkeypatch, progress):
    from gpugrad.data import DataLoader

    seen: list[int] = []
    real = DataLoader.permutation
    monkeypatch.setattr(DataLoader, "permutation",
                        lambda self, epoch: seen.append(epoch) or real(self, epoch))
    ck = tmp_path / "ck.st"
    args = [a for a in TINY if progress is False or a != "--no-progress"]
    assert main(args + ["--epochs", "3", "--seed", "5", "--save", str(ck)]) == 0
    assert seen == [0, 1, 2]
    assert gg.load(ck)["loader_epoch"] == 3
    # the documented rule: pass e is ordered by default_rng(seed + e)
    loader = DataLoader(np.zeros((10, 1)), np.zeros(10), seed=5)
    np.testing.assert_array_equal(loader.permutation(2),
                                  np.random.default_rng(7).permutation(10))


# -- 15. effective values in --json ----------------------------------------------------------------
@pytest.mark.parametrize("optimizer, decay", [("adamw", 0.01), ("sgd", 0.0), ("adam", 0.0)])
def test_json_records_the_effective_weight_decay(tmp_path, optimizer, decay):
    path = tmp_path / "m.json"
    assert main(TINY + ["--epochs", "1", "--optimizer", optimizer, "--json", str(path)]) == 0
    config = json.loads(path.read_text())["config"]
    assert config["weight_decay"] == decay and config["epochs"] == 1
    assert config["schedule"] == "cosine"


# -- 11. messages ----------------------------------------------------------------------------------
def test_divergence_after_resume_names_the_resumed_epoch(tmp_path, capsys):
    ck = tmp_path / "ck.st"
    assert main(TINY + ["--epochs", "2", "--save", str(ck)]) == 0
    capsys.readouterr()
    assert main(["train", "--device", "cpu", "--no-progress", "--epochs", "4", "--lr", "1e30",
                 "--resume", str(ck), "--save", str(ck)]) == 1
    err = capsys.readouterr().err
    assert "last good checkpoint (epoch 2)" in err and "the start" not in err


def test_divergence_from_weight_decay_mentions_it(tmp_path, capsys):
    assert main(TINY + ["--epochs", "2", "--optimizer", "sgd", "--lr", "1",
                        "--weight-decay", "1e12", "--schedule", "constant"]) == 1
    err = capsys.readouterr().err
    assert "training stopped" in err and "--weight-decay (now 1e+12)" in err


# -- 10. one-line errors before training -----------------------------------------------------------
def _checkpoint(tmp_path: Path) -> Path:
    ck = tmp_path / "good.st"
    assert main(TINY + ["--epochs", "1", "--save", str(ck)]) == 0
    return ck


def test_bad_arguments_fail_fast_with_one_line(tmp_path):
    (tmp_path / "folder").mkdir()
    ck = _checkpoint(tmp_path)
    no_model = tmp_path / "no_model.st"
    gg.save({"x": 1}, no_model)
    ckpt = gg.load(ck)
    mismatched, bad_rng, bad_epoch = (tmp_path / n for n in ("mm.st", "rng.st", "ep.st"))
    gg.save({**ckpt, "config": {**ckpt["config"], "hidden": [32]}}, mismatched)
    gg.save({**ckpt, "host_rng": "{not json"}, bad_rng)
    gg.save({**ckpt, "epoch": -3}, bad_epoch)
    missing = str(tmp_path / "missing" / "x.json")
    cases = [
        (["--json", missing], ["--json", "does not exist"]),
        (["--json", str(tmp_path / "folder")], ["--json", "folder"]),
        (["--save", str(tmp_path / "missing" / "c.st")], ["--save", "does not exist"]),
        (["--save", str(tmp_path / "folder")], ["--save", "folder"]),
        (["--seed", "-1"], ["--seed"]),
        (["--weight-decay", "inf"], ["--weight-decay"]),
        (["--lr", "nan"], ["--lr"]),
        (["--epochs", "0"], ["--epochs"]),
        (["--resume", str(no_model)], ["'model'"]),
        (["--resume", str(mismatched)], ["weights do not fit"]),
        (["--resume", str(bad_rng)], ["host_rng"]),
        (["--resume", str(bad_epoch)], ["epoch=-3"]),
        (["--resume", str(ck), "--epochs", "1"], ["already holds 1 epochs"]),
        (["--resume", str(tmp_path / "folder")], ["a directory"]),
    ]
    plain = ["train", "--device", "cpu", "--no-progress"]  # on resume, the rest is restored
    for extra, fragments in cases:
        base = plain if extra[0] == "--resume" else TINY
        err = assert_usage_error(run_cli(*base, *extra), *fragments)
        assert ".tmp" not in err
    assert not (tmp_path / "folder" / "c.st").exists()


def test_bench_json_to_a_missing_folder_fails_fast(tmp_path):
    proc = run_cli("bench", "--quick", "--devices", "cpu", "--suite", "ops",
                   "--json", str(tmp_path / "nope" / "b.json"))
    assert_usage_error(proc, "--json", "does not exist")


def test_bench_against_torch_without_torch_is_an_error_up_front(tmp_path):
    fake = tmp_path / "fake"
    (fake / "torch").mkdir(parents=True)
    (fake / "torch" / "__init__.py").write_text("raise ImportError('No module named torch')\n")
    proc = run_cli("bench", "--quick", "--devices", "cpu", "--suite", "ops", "--against", "torch",
                   env={"PYTHONPATH": f"{fake}{os.pathsep}{ROOT}"})
    assert_usage_error(proc, "--against torch", "not installed")
    assert proc.stdout == ""


# -- 13. GPUGRAD_DEVICE=cuda on a machine without CUDA ---------------------------------------------
needs_no_cuda = pytest.mark.skipif(gg.cuda.is_available(), reason="CUDA is available here")


@needs_no_cuda
def test_default_cuda_without_cuda(tmp_path):
    env = {"GPUGRAD_DEVICE": "cuda"}
    info = run_cli("info", env=env)
    assert info.returncode == 0 and "Traceback" not in info.stderr, info.stderr
    assert "default device: unavailable" in info.stdout
    trained = run_cli(*TINY, "--epochs", "1", env=env)
    assert trained.returncode == 0 and "test accuracy" in trained.stdout, trained.stderr
    assert_usage_error(run_cli("train", "--device", "cuda", "--epochs", "1", env=env), "CUDA")
    for script in sorted((ROOT / "examples").glob("*.py")):
        proc = run_cli("--device", "cuda", script=str(script), env=env)
        assert_usage_error(proc, "CUDA")


# -- 16. --version and a bare command --------------------------------------------------------------
def test_version_and_bare_command():
    version = run_cli("--version")
    assert version.returncode == 0 and version.stdout.strip() == f"gpugrad {gg.__version__}"
    bare = run_cli()
    assert bare.returncode == 0 and "usage: gpugrad" in bare.stdout and "train" in bare.stdout
    assert "arguments are required" not in bare.stderr


def test_unwritable_output_folder_is_refused_up_front(tmp_path, monkeypatch, capsys):
    """(As root every folder is writable, so the permission answer is simulated.)"""
    from gpugrad.cli import common

    real_access = os.access
    locked = str(tmp_path / "locked")
    os.mkdir(locked)
    def access(path, mode):
        return False if str(path).startswith(locked) else real_access(path, mode)

    monkeypatch.setattr(common.os, "access", access)
    for flag in ("--json", "--save"):
        assert main(TINY + ["--epochs", "1", flag, os.path.join(locked, "out")]) == 2
        err = capsys.readouterr().err
        assert flag in err and "not writable" in err and len(err.strip().splitlines()) == 1
