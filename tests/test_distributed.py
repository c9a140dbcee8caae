"""gpugrad.distributed in one process (a single-rank world), the leaf-gradient hook it rests
on, and the DataLoader's shards. Multi-rank behaviour: tests/test_distributed_mpi.py."""

from __future__ import annotations

import gc

import numpy as np
import pytest

import gpugrad as gg
import gpugrad.functional as F
from gpugrad import distributed as dist
from gpugrad.backend import nccl
from gpugrad.data import DataLoader


def test_single_rank_world():
    dist.init()
    assert (dist.rank(), dist.world_size(), dist.local_rank(), dist.is_main()) == (0, 1, 0, True)
    dist.barrier()  # nothing to wait for
    with pytest.raises(ValueError, match="timeout must be positive"):
        dist.init(timeout=0)


def test_launched_size_reads_the_launcher(monkeypatch):
    for var in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_SIZE", "MV2_COMM_WORLD_SIZE"):
        monkeypatch.delenv(var, raising=False)
    assert dist.launched_size() == 1
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "4")
    assert dist.launched_size() == 4


@pytest.mark.parametrize("op", ["sum", "mean", "max", "min"])
def test_collectives_are_identities_with_one_rank(device, op):
    x = np.arange(6.0).reshape(2, 3)
    t = gg.tensor(x, dtype="float64", device=device)
    assert dist.all_reduce(t, op) is t
    np.testing.assert_array_equal(t.numpy(), x)
    assert dist.broadcast(t, src=0) is t
    g = dist.all_gather(t)
    assert g.shape == (1, 2, 3) and str(g.device) == str(t.device)
    np.testing.assert_array_equal(g.numpy()[0], x)


def test_collective_errors(device):
    t = gg.ones(3, device=device)
    with pytest.raises(ValueError, match="op must be one of"):
        dist.all_reduce(t, "avg")
    with pytest.raises(TypeError, match="op='mean' needs a float tensor, got int64"):
        dist.all_reduce(gg.tensor([1, 2], device=device), "mean")
    with pytest.raises(TypeError, match="all_reduce: dtype bool is not supported"):
        dist.all_reduce(gg.tensor([True], device=device))
    with pytest.raises(TypeError, match="expected a gpugrad Tensor, got ndarray"):
        dist.all_reduce(np.ones(3))
    with pytest.raises(ValueError, match=r"src must be a rank in \[0, 1\), got 1"):
        dist.broadcast(t, src=1)


def test_data_parallel_single_rank_is_transparent(device):
    gg.manual_seed(0)
    model = gg.nn.MLP([4, 8, 3]).to(device)
    hooks_before = dict(gg.autograd._grad_hooks)
    dp = dist.DataParallel(model)
    assert gg.autograd._grad_hooks == hooks_before  # one rank: nothing registered, no overhead
    x = gg.tensor(np.random.default_rng(0).standard_normal((5, 4)), device=device)
    y = gg.tensor([0, 1, 2, 0, 1], device=device)
    F.cross_entropy(dp(x), y).backward()
    grads = [p.grad.numpy() for p in model.parameters()]
    model.zero_grad()
    with dp.no_sync():  # nothing to skip with one rank
        F.cross_entropy(dp(x), y).backward()
    for g, p in zip(grads, model.parameters()):
        np.testing.assert_array_equal(g, p.grad.numpy())
    model.zero_grad()
    F.cross_entropy(model(x), y).backward()
    for g, p in zip(grads, model.parameters()):
        np.testing.assert_array_equal(g, p.grad.numpy())
    assert list(dp.state_dict()) == list(model.state_dict())  # checkpoints work either way
    dp.load_state_dict(model.state_dict())


def test_data_parallel_errors():
    with pytest.raises(TypeError, match="DataParallel: expected a gg.nn.Module, got list"):
        dist.DataParallel([])
    with pytest.raises(ValueError, match="bucket_cap_mb must be positive"):
        dist.DataParallel(gg.nn.Linear(2, 2), bucket_cap_mb=0)


# -- the leaf-gradient hook ------------------------------------------------------------------
def test_post_accumulate_grad_hook(device):
    w = gg.tensor([1.0, 2.0], device=device, requires_grad=True)
    seen = []
    handle = w.register_post_accumulate_grad_hook(lambda t: seen.append(t.grad.numpy().copy()))
    done = []
    cb = gg.autograd.register_backward_done_callback(lambda: done.append(len(seen)))
    try:
        ((w * w).sum() + w.sum()).backward()  # three edges reach w: the hook fires per edge
        assert len(seen) == 3 and done == [3]
        np.testing.assert_allclose(seen[-1], [3.0, 5.0])
        gg.grad((w * w).sum(), w)  # gg.grad leaves .grad alone: no hook, no callback
        assert len(seen) == 3 and done == [3]
        w.backward(gradient=gg.ones(2, device=device))  # backward from the leaf itself
        assert len(seen) == 4 and done == [3, 4]
    finally:
        handle.remove()
        cb.remove()
    handle.remove()  # idempotent
    w.sum().backward()
    assert len(seen) == 4 and done == [3, 4]
    assert gg.autograd._grad_hooks == {} and gg.autograd._backward_done == []


def test_hook_needs_a_leaf_and_is_dropped_with_its_tensor():
    x = gg.tensor([1.0], requires_grad=True)
    with pytest.raises(RuntimeError, match="must be a leaf that requires grad"):
        (x * 2).register_post_accumulate_grad_hook(print)
    with pytest.raises(RuntimeError, match="must be a leaf that requires grad"):
        gg.tensor([1.0]).register_post_accumulate_grad_hook(print)
    x.register_post_accumulate_grad_hook(print)
    assert id(x) in gg.autograd._grad_hooks
    key = id(x)
    del x
    gc.collect()
    assert key not in gg.autograd._grad_hooks


# -- shards ----------------------------------------------------------------------------------
@pytest.mark.parametrize("n,b,total,drop_last", [(2, 4, 37, False), (3, 2, 37, True),
                                                  (3, 5, 40, False), (2, 3, 12, False)])
def test_shards_partition_the_global_batches(device, n, b, total, drop_last):
    x, y = np.arange(total, dtype=np.float64)[:, None], np.arange(total)
    single = DataLoader(x, y, batch_size=n * b, seed=5, drop_last=drop_last, device=device)
    loaders = [DataLoader(x, y, batch_size=b, seed=5, drop_last=drop_last, device=device,
                          rank=r, world_size=n) for r in range(n)]
    assert {len(ld) for ld in loaders} == {len(single)}
    for _ in range(2):  # two epochs: a fresh permutation, the same on every rank
        per_rank = [[yb.numpy().tolist() for _, yb in ld] for ld in loaders]
        for i, batch in enumerate(single):
            got = [s for r in range(n) for s in per_rank[r][i]]
            want = batch[1].numpy().tolist()
            if len(want) == n * b:
                assert got == want
            else:  # the short last batch: split evenly, topped up from the epoch's start
                assert got[:len(want)] == want and len(got) == n * -(-len(want) // n)


def test_shard_features_follow_labels(device):
    x = np.arange(20, dtype=np.float64)[:, None] * 10
    y = np.arange(20)
    ld = DataLoader(x, y, batch_size=3, seed=1, device=device, rank=1, world_size=2)
    for xb, yb in ld:
        np.testing.assert_array_equal(xb.numpy()[:, 0], yb.numpy() * 10)
    assert "rank=1, world_size=2" in repr(ld)


@pytest.mark.parametrize("rank,world", [(2, 2), (-1, 2), (0, 0)])
def test_bad_rank(rank, world):
    with pytest.raises(ValueError, match="DataLoader: need 0 <= rank < world_size"):
        DataLoader(np.ones((4, 1)), np.ones(4), rank=rank, world_size=world)


# -- NCCL ------------------------------------------------------------------------------------
def test_nccl_status_is_reported():
    ok, detail = nccl.status()
    assert isinstance(ok, bool) and detail
    assert dist.gpu_transport() in ("nccl", "cuda-aware-mpi", "host")


@pytest.mark.skipif(not gg.cuda.is_available() or not nccl.is_available(),
                    reason="needs CUDA and NCCL")
def test_one_rank_nccl_communicator():
    dev = gg.device("cuda:0")
    comm = nccl.Communicator(0, 1, 0, nccl.unique_id())
    with dev.activate():
        a = dev.xp.arange(5, dtype=dev.xp.float32)
        comm.all_reduce(a, "sum")
        comm.broadcast(a, 0)
        out = dev.xp.empty(5, dtype=dev.xp.float32)
        comm.all_gather(a, out)
        ev = comm.event()
        dev.synchronize()
    assert comm.done(ev)
    np.testing.assert_array_equal(dev.backend.to_host(a), np.arange(5))
    np.testing.assert_array_equal(dev.backend.to_host(out), np.arange(5))
    with pytest.raises(TypeError, match="NCCL: no NCCL type for dtype bool"):
        with dev.activate():
            comm.all_reduce(dev.xp.zeros(2, dtype=bool))
