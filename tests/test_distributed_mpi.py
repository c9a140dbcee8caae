"""Two ranks under ``mpiexec -n 2``: one launch runs the checks in tests/_dist_worker.py, the
failure scenarios get a launch each (they end the job on purpose)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from _dist_launch import launch, requires_mpi

from gpugrad.data import DataLoader

pytestmark = requires_mpi
WORKER = "tests/_dist_worker.py"


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict]:
    out = tmp_path_factory.mktemp("dist")
    result, _ = launch([WORKER, "checks", str(out)])
    assert result.returncode == 0, result.stdout + result.stderr
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]


def test_world(ranks):
    assert [(r["rank"], r["world_size"], r["is_main"]) for r in ranks] == [(0, 2, True),
                                                                            (1, 2, False)]
    assert sorted(r["local_rank"] for r in ranks) == [0, 1]  # one node: local = global


def test_collectives(ranks):
    for r in ranks:
        assert r["sum"] == [3.0, 30.0]
        assert r["mean"] == [1.5, 3.0]
        assert r["max"] == [1, 0] and r["min"] == [0, -1]
        assert r["sum_strided"] == (np.arange(6.0).reshape(2, 3) * 3).T.tolist()
        assert r["broadcast"] == [1.0, 6.0]  # src=1
        assert r["all_gather"] == [[[0, 10]], [[1, 11]]]


def test_mismatched_collective_raises_on_every_rank(ranks):
    for r in ranks:
        assert "all_reduce" in r["shape_mismatch"] and "element counts range 2..3" in \
            r["shape_mismatch"]


@pytest.mark.parametrize("drop_last", [False, True])
def test_shards_are_the_single_process_batches(ranks, drop_last):
    single = DataLoader(np.arange(37.0)[:, None], np.arange(37), batch_size=8, seed=3,
                        drop_last=drop_last)
    for epoch in range(2):
        shards = [r[f"shards_drop_last={drop_last}"][epoch] for r in ranks]
        assert len(shards[0]) == len(shards[1]) == len(single)
        perm = single.permutation(epoch)
        for i, (a, b) in enumerate(zip(*shards)):
            if (i + 1) * 8 <= 37:  # a full global batch: exactly the one-process batch
                assert a + b == perm[i * 8:(i + 1) * 8].tolist()
        seen = [s for shard in shards for batch in shard for s in batch]
        if drop_last:  # disjoint; 32 of 37 covered
            assert len(seen) == len(set(seen)) == 32
        else:  # every sample; the last batch (5 left, 3 per rank) repeats one from the start
            assert set(seen) == set(range(37)) and len(seen) == 38
            assert shards[0][-1] + shards[1][-1] == perm[32:].tolist() + perm[:1].tolist()


def test_broadcast_at_wrap(ranks):
    assert ranks[0]["wrap_changed_weights"] is False  # rank 0 keeps its own weights
    assert ranks[1]["wrap_changed_weights"] is True
    assert all(r["wrap_equals_rank0"] for r in ranks)
    assert ranks[0]["wrap_weights_sum"] == ranks[1]["wrap_weights_sum"]


def test_mismatched_models_raise_on_every_rank(ranks):
    for r in ranks:
        assert "DataParallel: the ranks' models differ" in r["model_mismatch"]
        assert "[16, 6]" in r["model_mismatch"] and "[17, 6]" in r["model_mismatch"]
        assert "bucket sizes" in r["bucket_mismatch"]


def test_skipped_backward_is_detected_on_every_rank(ranks):
    for r in ranks:
        assert "ranks are out of step" in r["step_mismatch"]


@pytest.mark.parametrize("case", ["float64/sgd", "float64/adam", "float32/sgd", "float32/adam"])
def test_two_ranks_match_one_process_at_the_global_batch(ranks, case):
    """50 steps; each rank at batch 8, the reference at 16; losses all-reduced (mean)."""
    for r in ranks:
        c = r[case]
        assert c["loss_moved"]
        assert c["loss_rel"] <= c["rtol"], c
        assert c["weight_rel"] <= c["rtol"], c
        assert c["rerun_bitwise"]
    assert ranks[0][case]["weights_sum"] == ranks[1][case]["weights_sum"]  # replicas agree


def test_shared_memory_reduction_equals_mpi(ranks):
    """One node: host buckets go through the shared window, bitwise as MPI's all-reduce."""
    for r in ranks:
        c = r["shm_vs_mpi"]
        assert c["buckets"] > 1 and c["shm_buckets"] == c["buckets"]
        assert c["shm_buckets_when_off"] == 0  # GPUGRAD_DIST_SHM=0: MPI
        assert c["bitwise"]


def test_compiled_step_averages_like_eager(ranks):
    """gg.compile over a DataParallel model: the average is one recorded step after the walk;
    50 steps replay bitwise as eager and match one process at the global batch."""
    for r in ranks:
        c = r["compiled"]
        assert c["traces"] == [1] and c["average_steps"] == [1]
        assert c["bitwise_vs_eager"]
        assert c["loss_rel"] <= 1e-12 and c["weight_rel"] <= 1e-12


def test_gradient_as_bucket_view(ranks):
    for r in ranks:
        for c in r["bucket_views"].values():  # shared memory, then MPI
            # compiled: both programs write the gradients into the buckets; nothing is packed
            assert c["compiled"]["in_slots"] == [True] * 6 and c["listing_says"]
            assert c["compiled"]["packed"] == 0
            assert c["packed_while_kept"] > 0  # a kept .grad: a new array, copied in
            # eager: every gradient is packed; the averaged buckets are adopted as the .grads
            assert c["eager"]["in_slots"] == [True] * 6
            assert c["eager"]["packed"] == 2 * c["eager"]["grad_bytes"]  # two steps
            assert c["bitwise"] == [True, True]


def test_clipping_after_the_average(ranks):
    for r in ranks:
        assert r["clip"]["loss_rel"] <= 1e-12 and r["clip"]["weight_rel"] <= 1e-12


def test_bucketing(ranks):
    # [calls, buckets, steps]: one bucket (+ the step check) for the small model at 4 MB...
    assert ranks[0]["calls_per_step_one_bucket"] == [2, 1, 1]
    # ... and one per parameter group of the 6 tensors at a 1 kB cap
    calls, buckets, _ = ranks[0]["calls_per_step_small_buckets"]
    assert buckets > 1 and calls == buckets + 1


def test_shared_weight_and_unused_parameter(ranks):
    for r in ranks:
        for key in ("shared_and_unused", "shared_and_unused_views"):
            assert r[key]["w_rel"] <= 1e-12
            assert r[key]["unused_grad"] == [0.0, 0.0, 0.0]


@pytest.mark.parametrize("key", ["no_sync", "no_sync_compiled", "no_sync_views",
                                 "no_sync_compiled_views"])
def test_no_sync_accumulates_then_averages_once(ranks, key):
    for r in ranks:
        assert r[key]["calls_after_first"] == 0 and r[key]["steps"] == 1
        assert r[key]["grad_rel"] <= 1e-12
    if "compiled" in key:  # one program: no_sync is read when it replays
        assert ranks[0][key]["traces"] == 1


def test_cuda_ranks(ranks):
    if "cuda" not in ranks[0]:
        pytest.skip("needs one CUDA device per rank (2)")
    for r in ranks:
        c = r["cuda"]
        assert c["sum"] == [3.0, 4.0] and c["broadcast"] == [1.0]
        assert c["all_gather"] == [[0], [1]]
        assert c["grad_rel"] <= 1e-12


def test_three_ranks_shared_memory_and_mpi(tmp_path):
    result, _ = launch([WORKER, "three", str(tmp_path)], n=3)
    assert result.returncode == 0, result.stdout + result.stderr
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(3)]
    for r in ranks:
        assert r["world_size"] == 3
        assert r["1"]["shm_buckets"] > 1 and r["0"]["shm_buckets"] == 0
        assert r["1"]["grad_rel"] <= 1e-12 and r["0"]["grad_rel"] <= 1e-12
    for mode in ("1", "0"):  # every rank holds the same average, whichever way it was summed
        assert len({r[mode]["grad_sum"] for r in ranks}) == 1


# -- failures end the job, quickly ----------------------------------------------------------
@pytest.mark.parametrize("scenario", ["raising", "killed", "silent", "raising_in_shm"])
def test_a_failing_rank_ends_the_job(tmp_path, scenario):
    """A rank that raises (excepthook -> Abort), is killed, or never joins a collective (the
    other rank times out after GPUGRAD_DIST_TIMEOUT=3 s, then aborts): mpiexec fails fast."""
    result, seconds = launch([WORKER, scenario, str(tmp_path)], timeout=120,
                             env={"GPUGRAD_DIST_TIMEOUT": "3"})
    assert result.returncode != 0
    assert seconds < 60
    assert not (tmp_path / "rank0_passed_barrier").exists()
    if scenario.startswith("raising"):
        assert "[gpugrad rank 1 of 2] failed" in result.stderr
        assert "deliberate failure" in result.stderr
    if scenario == "silent":
        assert "DistributedTimeout" in result.stderr and "rank 0 of 2 waited 3 s" in \
            result.stderr
