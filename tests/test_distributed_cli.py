"""``gpugrad train --distributed`` (under ``mpiexec -n 2`` and alone) and ``gpugrad info``'s MPI
and NCCL lines."""

from __future__ import annotations

import argparse
import json
import sys
from types import SimpleNamespace

import pytest
from _dist_launch import launch, requires_mpi

from gpugrad.cli import _dist, main

TINY = ["--device", "cpu", "--hidden", "32", "--batch-size", "64", "--epochs", "2",
        "--no-progress"]


def test_info_reports_mpi_and_nccl(tmp_path, capsys):
    assert main(["info", "--json", str(tmp_path / "info.json")]) == 0
    out = capsys.readouterr().out
    assert "MPI: " in out and "NCCL: " in out
    d = json.loads((tmp_path / "info.json").read_text())["distributed"]
    assert set(d) == {"mpi", "nccl"} and isinstance(d["nccl"]["available"], bool)
    if d["mpi"]["available"]:
        assert d["mpi"]["mpi4py"] in out and d["mpi"]["standard"].count(".") == 1


def test_distributed_flag_without_mpiexec_trains_as_one_rank(tmp_path, capsys):
    assert main(["train", *TINY, "--distributed", "--json", str(tmp_path / "a.json")]) == 0
    assert "training as one rank" in capsys.readouterr().out
    assert main(["train", *TINY, "--json", str(tmp_path / "b.json")]) == 0
    a, b = (json.loads((tmp_path / f).read_text()) for f in ("a.json", "b.json"))
    assert a["history"][-1]["train_loss"] == b["history"][-1]["train_loss"]


def test_only_rank_0_prints_and_writes(monkeypatch):
    """What setup() does to a non-main rank's arguments (the launch test sees the output)."""
    fake = SimpleNamespace(rank=1, size=2, local_rank=1)
    monkeypatch.setattr("gpugrad.distributed.init", lambda: fake)
    monkeypatch.setattr(sys, "stdout", sys.stdout)  # setup() silences stdout; restored after
    args = argparse.Namespace(distributed=True, device="cpu", no_progress=False,
                              save="ck.safetensors", json="m.json", batch_size=64)
    _dist.setup(args)
    assert (args.save, args.json, args.no_progress) == (None, None, True)
    assert _dist.loader_args(args) == {"batch_size": 32, "rank": 1, "world_size": 2}
    args.batch_size = 63
    with pytest.raises(_dist.CliError, match="--batch-size 63 is the global batch"):
        _dist.loader_args(args)


@requires_mpi
def test_two_ranks_train_like_one_process_and_resume_with_one(tmp_path):
    ck, m2, m1, m_resumed = (str(tmp_path / f) for f in ("ck.safetensors", "m2.json",
                                                          "m1.json", "m3.json"))
    two, _ = launch(["-m", "gpugrad", "train", *TINY, "--distributed", "--save", ck,
                     "--json", m2])
    assert two.returncode == 0, two.stderr
    out = two.stdout.splitlines()
    assert sum(line.startswith("epoch   1/2") for line in out) == 1  # rank 0 alone prints
    assert any("distributed: 2 ranks (MPI all-reduce)" in line for line in out)
    assert main(["train", *TINY, "--json", m1]) == 0
    r2, r1 = json.loads(open(m2).read()), json.loads(open(m1).read())
    for a, b in zip(r2["history"], r1["history"]):  # float32: sums in another order
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
        assert a["train_accuracy"] == pytest.approx(b["train_accuracy"], abs=2e-3)
    assert r2["test_accuracy"] == pytest.approx(r1["test_accuracy"], abs=3e-3)
    # a 2-rank checkpoint resumed by one process (the batch is global, the keys plain)
    assert main(["train", *TINY[:-3], "--epochs", "3", "--no-progress", "--resume", ck,
                 "--json", m_resumed]) == 0
    assert json.loads(open(m_resumed).read())["epochs_completed"] == 3


@requires_mpi
def test_two_ranks_compiled_train_like_eager(tmp_path):
    """``--distributed --compile``: each rank replays a program whose backward writes the
    gradients into DataParallel's buckets (gradient_as_bucket_view); the run is bitwise the
    eager 2-rank run."""
    runs = {}
    for flags in ((), ("--compile",)):
        path = str(tmp_path / f"m{len(flags)}.json")
        done, _ = launch(["-m", "gpugrad", "train", *TINY[:-3], "--epochs", "1", "--no-progress",
                          "--distributed", *flags, "--json", path])
        assert done.returncode == 0, done.stderr
        runs[flags] = json.loads(open(path).read())
    eager, compiled = runs[()], runs[("--compile",)]
    assert compiled["history"][0]["train_loss"] == eager["history"][0]["train_loss"]
    assert compiled["test_accuracy"] == eager["test_accuracy"]
