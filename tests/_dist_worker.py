"""Run by tests/test_distributed_mpi.py as ``mpiexec -n 2 python _dist_worker.py SCENARIO OUTDIR``.

``checks`` runs many checks in one launch (launches cost seconds) and writes each rank's results
to OUTDIR/rank<r>.json; the test asserts on them. The failure scenarios end the job on purpose.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np

import gpugrad as gg
import gpugrad.functional as F
from gpugrad import distributed as dist
from gpugrad.data import DataLoader

N_SAMPLES, N_FEATURES, N_CLASSES, GLOBAL_BATCH, STEPS = 160, 6, 3, 16, 50


def _data(dtype):
    rng = np.random.default_rng(123)
    x = rng.standard_normal((N_SAMPLES, N_FEATURES))
    y = np.argmax(x @ rng.standard_normal((N_FEATURES, N_CLASSES)), axis=1)  # learnable
    return x.astype(dtype), y


def _model(dtype, seed=0):
    gg.manual_seed(seed)
    return gg.nn.MLP([N_FEATURES, 16, 16, N_CLASSES], activation="tanh").to(dtype=dtype)


def _optimizer(name, params):
    if name == "sgd":
        return gg.optim.SGD(params, lr=0.1, momentum=0.9)
    return gg.optim.Adam(params, lr=1e-2)


def train(dtype, opt_name, world_size, rank, wrap, clip=None, model_seed=0, bucket_cap_mb=4.0,
          compiled=False, programs=None):
    """``STEPS`` steps at global batch ``GLOBAL_BATCH``; returns (losses, final weights).
    ``compiled``: the step runs under gg.compile (its programs' listings go to ``programs``)."""
    x, y = _data(dtype)
    model = _model(dtype, model_seed)
    net = dist.DataParallel(model, bucket_cap_mb=bucket_cap_mb) if wrap else model
    opt = _optimizer(opt_name, list(model.parameters()))
    loader = DataLoader(x, y, batch_size=GLOBAL_BATCH // world_size, seed=7, rank=rank,
                        world_size=world_size)

    def step(xb, yb):
        opt.zero_grad()
        loss = F.cross_entropy(net(xb), yb)
        loss.backward()
        if clip is not None:
            gg.nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        return loss

    run = gg.compile(step) if compiled else step
    losses = []
    while len(losses) < STEPS:
        for xb, yb in loader:
            loss = run(xb, yb)
            if wrap:
                loss = dist.all_reduce(loss.detach(), op="mean")
            losses.append(float(loss.item()))
            if len(losses) == STEPS:
                break
    if compiled and programs is not None:
        programs += [(run.traces, p.listing()) for p in run.programs]
    return losses, [p.numpy() for p in model.parameters()]


def _rel(a, b):
    """Largest difference relative to the reference's scale (per-element ratios blow up where
    a weight passes near zero)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def _raises(fn, exc=dist.DistributedError):
    try:
        fn()
    except exc as e:
        return str(e)
    return None


def checks(out: Path) -> None:
    r, n = dist.rank(), dist.world_size()
    res: dict = {"rank": r, "world_size": n, "local_rank": dist.local_rank(),
                 "is_main": dist.is_main()}
    # -- plain collectives ------------------------------------------------------------------
    t = gg.tensor([1.0 + r, 10.0 * (r + 1)], dtype="float64")
    res["sum"] = dist.all_reduce(t.detach(), "sum").tolist()
    res["mean"] = dist.all_reduce(gg.tensor([1.0 + r, 3.0]), "mean").tolist()
    res["max"] = dist.all_reduce(gg.tensor([r, -r], dtype="int64"), "max").tolist()
    res["min"] = dist.all_reduce(gg.tensor([r, -r], dtype="int64"), "min").tolist()
    strided = gg.tensor(np.arange(6.0).reshape(2, 3) * (r + 1)).T  # not contiguous
    res["sum_strided"] = dist.all_reduce(strided, "sum").tolist()
    res["broadcast"] = dist.broadcast(gg.tensor([float(r), 5.0 + r]), src=1).tolist()
    res["all_gather"] = dist.all_gather(gg.tensor([[r, r + 10]], dtype="int32")).tolist()
    res["shape_mismatch"] = _raises(lambda: dist.all_reduce(gg.zeros(2 + r)))
    dist.barrier()
    # -- sharding ---------------------------------------------------------------------------
    for drop_last in (False, True):
        loader = DataLoader(np.arange(37.0)[:, None], np.arange(37), batch_size=4, seed=3,
                            rank=r, world_size=n, drop_last=drop_last)
        epochs = [[yb.tolist() for _, yb in loader] for _ in range(2)]
        res[f"shards_drop_last={drop_last}"] = epochs
    # -- broadcast at wrap ------------------------------------------------------------------
    model = _model(np.float64, seed=100 + r)  # different weights on each rank
    before = [p.numpy() for p in model.parameters()]
    dist.DataParallel(model)
    res["wrap_changed_weights"] = any(not np.array_equal(a, p.numpy())
                                      for a, p in zip(before, model.parameters()))
    res["wrap_weights_sum"] = float(sum(p.numpy().sum() for p in model.parameters()))
    ref = _model(np.float64, seed=100)
    res["wrap_equals_rank0"] = all(np.array_equal(a.numpy(), b.numpy())
                                   for a, b in zip(ref.parameters(), model.parameters()))
    # -- mismatched models ------------------------------------------------------------------
    other = gg.nn.MLP([N_FEATURES, 16 + r, N_CLASSES])
    res["model_mismatch"] = _raises(lambda: dist.DataParallel(other))
    res["bucket_mismatch"] = _raises(  # would allocate different shared windows: no hang
        lambda: dist.DataParallel(_model(np.float64), bucket_cap_mb=1.0 if r else 0.001))
    # -- a rank that skips a backward -------------------------------------------------------
    m = _model(np.float64)
    dp = dist.DataParallel(m)
    xb, yb = gg.tensor(np.ones((4, N_FEATURES))), gg.tensor(np.zeros(4, dtype=np.int64))
    F.cross_entropy(dp(xb), yb).backward()
    if r == 1:
        dp._step += 1  # as if this rank ran one backward more than the other
    res["step_mismatch"] = _raises(lambda: F.cross_entropy(dp(xb), yb).backward())
    # -- equivalence with one process at the global batch -------------------------------------
    for dtype, rtol in (("float64", 1e-12), ("float32", 1e-5)):
        for opt_name in ("sgd", "adam"):
            ref_losses, ref_w = train(dtype, opt_name, 1, 0, wrap=False)
            losses, w = train(dtype, opt_name, n, r, wrap=True, bucket_cap_mb=0.001)
            again_losses, again_w = train(dtype, opt_name, n, r, wrap=True, bucket_cap_mb=0.001)
            res[f"{dtype}/{opt_name}"] = {
                "rtol": rtol,
                "loss_rel": _rel(losses, ref_losses),
                "weight_rel": max(_rel(a, b) for a, b in zip(w, ref_w)),
                "rerun_bitwise": losses == again_losses
                and all(np.array_equal(a, b) for a, b in zip(w, again_w)),
                "weights_sum": float(sum(a.astype(np.float64).sum() for a in w)),
                "loss_moved": ref_losses[-1] < ref_losses[0],
            }
    # the shared-memory reduction (the default on one node) against MPI's all-reduce
    shm_runs = {}
    for mode in ("1", "0"):
        os.environ["GPUGRAD_DIST_SHM"] = mode
        shm_runs[mode] = train("float64", "adam", n, r, wrap=True, bucket_cap_mb=0.001)
        probe = dist.DataParallel(_model(np.float64), bucket_cap_mb=0.001)
        shm_runs[mode] += (sum(b.shm is not None for b in probe._buckets), len(probe._buckets))
    del os.environ["GPUGRAD_DIST_SHM"]
    (l1, w1, used1, nb), (l0, w0, used0, _) = shm_runs["1"], shm_runs["0"]
    res["shm_vs_mpi"] = {"buckets": nb, "shm_buckets": used1, "shm_buckets_when_off": used0,
                         "bitwise": l1 == l0 and all(np.array_equal(a, b) for a, b in zip(w1, w0))}
    # gg.compile: the bucketed average is a step of the program
    ref_losses, ref_w = train("float64", "sgd", 1, 0, wrap=False, clip=0.5)
    eager = train("float64", "sgd", n, r, wrap=True, clip=0.5, bucket_cap_mb=0.001)
    programs: list = []
    comp = train("float64", "sgd", n, r, wrap=True, clip=0.5, bucket_cap_mb=0.001,
                 compiled=True, programs=programs)
    res["compiled"] = {
        "bitwise_vs_eager": comp[0] == eager[0]
        and all(np.array_equal(a, b) for a, b in zip(comp[1], eager[1])),
        "loss_rel": _rel(comp[0], ref_losses),
        "weight_rel": max(_rel(a, b) for a, b in zip(comp[1], ref_w)),
        "traces": [t for t, _ in programs],
        "average_steps": [listing.count("DataParallel.average_gradients")
                          for _, listing in programs],
    }
    # clipping after the average; one bucket for everything vs many small ones
    ref_losses, ref_w = train("float64", "sgd", 1, 0, wrap=False, clip=0.5)
    losses, w = train("float64", "sgd", n, r, wrap=True, clip=0.5)
    res["clip"] = {"loss_rel": _rel(losses, ref_losses),
                   "weight_rel": max(_rel(a, b) for a, b in zip(w, ref_w))}
    res["calls_per_step_one_bucket"] = _calls_per_step(4.0)
    res["calls_per_step_small_buckets"] = _calls_per_step(0.001)
    # -- a weight used twice (its bucket is re-sent) and an unused parameter ------------------
    res["shared_and_unused"] = _shared_and_unused(r, n)
    res["no_sync"] = _accumulation(r, n)
    res["no_sync_compiled"] = _accumulation(r, n, compiled=True)
    res["no_sync_views"] = _accumulation(r, n, views=True)
    res["no_sync_compiled_views"] = _accumulation(r, n, compiled=True, views=True)
    res["shared_and_unused_views"] = _shared_and_unused(r, n, views=True)
    res["bucket_views"] = _bucket_views(r, n)
    if gg.cuda.device_count() >= n:
        res["cuda"] = _cuda_checks(r, n)
    (out / f"rank{r}.json").write_text(json.dumps(res), encoding="utf-8")


def _bucket_views(r: int, n: int) -> dict:
    """gradient_as_bucket_view under gg.compile: the replayed backward writes each gradient into
    this rank's part of its bucket (a shared-memory slot, or with GPUGRAD_DIST_SHM=0 the buffer
    MPI reduces in place); 5 steps stay bitwise equal to eager steps without the option, also
    after the caller kept a .grad (the program then writes a new array)."""
    out = {}
    for shm in ("1", "0"):
        os.environ["GPUGRAD_DIST_SHM"] = shm
        try:
            out[f"shm={shm}"] = _bucket_views_run(r, n)
        finally:
            del os.environ["GPUGRAD_DIST_SHM"]
    return out


def _bucket_views_run(r: int, n: int) -> dict:
    x, y = _data(np.float64)
    mine = slice(r * 16 // n, (r + 1) * 16 // n)
    full = gg.tensor(x[mine]), gg.tensor(y[mine])
    short = gg.tensor(x[mine][:3]), gg.tensor(y[mine][:3])  # a second program (a retrace)
    out: dict = {}
    weights = {}
    for mode in ("reference", "eager", "compiled"):  # reference: without the option
        model = _model(np.float64)
        dp = dist.DataParallel(model, bucket_cap_mb=0.001,
                               gradient_as_bucket_view=mode != "reference")
        opt = gg.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)

        def step(xb, yb, dp=dp, opt=opt):
            opt.zero_grad()
            F.cross_entropy(dp(xb), yb).backward()
            opt.step()

        run = gg.compile(step) if mode == "compiled" else step
        params = list(model.parameters())
        for batch in (full, full, short, full, short):  # traces, then each program replays
            run(*batch)
        before = dp.comm_stats["packed_bytes"]
        run(*short)
        run(*full)
        if mode != "reference":
            out[mode] = {
                "packed": dp.comm_stats["packed_bytes"] - before,
                "grad_bytes": sum(p.data.nbytes for p in params),
                "in_slots": [bool(np.shares_memory(
                    p.grad.data, dp._buckets[dp._bucket_of[dp._index[id(p)]]].flat))
                    for p in params]}
        if mode == "compiled":
            out["listing_says"] = "DataParallel's bucket views" in run.program.listing()
        kept = params[0].grad  # noqa: F841 -- held: the next replay writes a new array instead
        for _ in range(3):
            run(*full)
        if mode == "compiled":
            out["packed_while_kept"] = dp.comm_stats["packed_bytes"] - before
        weights[mode] = [p.numpy() for p in params]
    out["bitwise"] = [all(np.array_equal(a, b) for a, b in zip(weights["reference"], weights[m]))
                      for m in ("eager", "compiled")]
    return out


def _calls_per_step(cap_mb: float) -> list[int]:
    m = _model(np.float64)
    dp = dist.DataParallel(m, bucket_cap_mb=cap_mb)
    F.cross_entropy(dp(gg.tensor(np.ones((2, N_FEATURES)))), gg.tensor([0, 1])).backward()
    return [dp.comm_stats["calls"], len(dp._buckets), dp.comm_stats["steps"]]


def _cuda_checks(r: int, n: int) -> dict:
    """The GPU path (NCCL, or its fallbacks): one GPU per rank, cuda:<local_rank>."""
    dev = f"cuda:{dist.local_rank()}"
    out = {"transport": dist.gpu_transport()}
    out["sum"] = dist.all_reduce(gg.tensor([1.0 + r, 2.0], device=dev), "sum").tolist()
    out["broadcast"] = dist.broadcast(gg.tensor([float(r)], device=dev), src=1).tolist()
    out["all_gather"] = dist.all_gather(gg.tensor([r], device=dev)).tolist()
    x, y = _data(np.float64)
    ref = _model(np.float64)
    F.cross_entropy(ref(gg.tensor(x[:8])), gg.tensor(y[:8])).backward()
    model = _model(np.float64).to(dev)
    dp = dist.DataParallel(model)
    half = 8 // n
    F.cross_entropy(dp(gg.tensor(x[r * half:(r + 1) * half], device=dev)),
                    gg.tensor(y[r * half:(r + 1) * half], device=dev)).backward()
    out["grad_rel"] = max(_rel(a.grad.numpy(), b.grad.numpy())
                          for a, b in zip(model.parameters(), ref.parameters()))
    return out


def _accumulation(r: int, n: int, compiled: bool = False, views: bool = False) -> dict:
    """Two micro-batches per rank, the first under no_sync: one average, of the sum.
    ``compiled``: one gg.compile program for both, traced under no_sync (read per replay);
    ``views``: gradient_as_bucket_view."""
    x, y = _data(np.float64)
    ref = _model(np.float64)
    F.cross_entropy(ref(gg.tensor(x[:16])), gg.tensor(y[:16])).backward()
    model = _model(np.float64)
    dp = dist.DataParallel(model, gradient_as_bucket_view=views)

    def micro(xb, yb):
        (F.cross_entropy(dp(xb), yb) / 2).backward()

    run = gg.compile(micro) if compiled else micro
    mine = slice(r * 16 // n, (r + 1) * 16 // n)
    xs, ys = np.array_split(x[mine], 2), np.array_split(y[mine], 2)
    with dp.no_sync():
        run(gg.tensor(xs[0]), gg.tensor(ys[0]))
    calls_after_first = dp.comm_stats["calls"]
    run(gg.tensor(xs[1]), gg.tensor(ys[1]))
    return {"calls_after_first": calls_after_first, "steps": dp.comm_stats["steps"],
            "traces": getattr(run, "traces", None),
            "grad_rel": max(_rel(a.grad.numpy(), b.grad.numpy())
                            for a, b in zip(model.parameters(), ref.parameters()))}


class _Tied(gg.nn.Module):
    def __init__(self, seed):
        super().__init__()
        gg.manual_seed(seed)
        self.w = gg.nn.Parameter(gg.randn(N_FEATURES, N_FEATURES, dtype="float64"))
        self.unused = gg.nn.Parameter(gg.randn(3, dtype="float64"))
        self.head = gg.nn.Linear(N_FEATURES, N_CLASSES).to(dtype=np.float64)

    def forward(self, x):
        return self.head(gg.tanh(gg.tanh(x @ self.w) @ self.w))  # w reached twice


def _shared_and_unused(r: int, n: int, views: bool = False) -> dict:
    x, y = _data(np.float64)
    ref = _Tied(0)
    F.cross_entropy(ref(gg.tensor(x[:8])), gg.tensor(y[:8])).backward()
    model = _Tied(0)
    # one bucket per parameter
    dp = dist.DataParallel(model, bucket_cap_mb=0.0001, gradient_as_bucket_view=views)
    half = 8 // n
    F.cross_entropy(dp(gg.tensor(x[r * half:(r + 1) * half])),
                    gg.tensor(y[r * half:(r + 1) * half])).backward()
    return {"w_rel": _rel(model.w.grad.numpy(), ref.w.grad.numpy()),
            "unused_grad": None if model.unused.grad is None else model.unused.grad.tolist()}


def three(out: Path) -> None:
    """Three ranks, 4 samples each: the shared-memory and MPI averages against one process
    at 12 (sums of three are rounded in different orders: equal within 1e-12, not bitwise)."""
    r, n = dist.rank(), dist.world_size()
    x, y = _data(np.float64)
    ref = _model(np.float64)
    F.cross_entropy(ref(gg.tensor(x[:12])), gg.tensor(y[:12])).backward()
    res = {"world_size": n}
    for mode in ("1", "0"):
        os.environ["GPUGRAD_DIST_SHM"] = mode
        model = _model(np.float64)
        dp = dist.DataParallel(model, bucket_cap_mb=0.001)
        F.cross_entropy(dp(gg.tensor(x[4 * r:4 * r + 4])), gg.tensor(y[4 * r:4 * r + 4])).backward()
        res[mode] = {"shm_buckets": sum(b.shm is not None for b in dp._buckets),
                     "grad_rel": max(_rel(a.grad.numpy(), b.grad.numpy())
                                     for a, b in zip(model.parameters(), ref.parameters())),
                     "grad_sum": float(sum(p.grad.numpy().sum() for p in model.parameters()))}
    (out / f"rank{r}.json").write_text(json.dumps(res), encoding="utf-8")


def raising_in_shm(out: Path) -> None:
    """Rank 1 fails inside the shared-memory reduction, after its slot is in: rank 0 waits at
    the next barrier of the window until the abort ends the job."""
    from gpugrad.distributed import shm

    dist.init()
    model = _model(np.float64)
    dp = dist.DataParallel(model)
    if dist.rank() == 1:
        def broken(reducers, what):
            raise RuntimeError("deliberate failure inside the shared-memory reduction")
        shm.sync = broken
    xb, yb = gg.tensor(np.ones((4, N_FEATURES))), gg.tensor(np.zeros(4, dtype=np.int64))
    F.cross_entropy(dp(xb), yb).backward()
    dist.barrier()
    (out / "rank0_passed_barrier").write_text("bad", encoding="utf-8")


def raising(out: Path) -> None:
    dist.init()
    if dist.rank() == 1:
        raise ValueError("deliberate failure on rank 1")
    dist.barrier()  # rank 0 would wait here forever without the abort
    (out / "rank0_passed_barrier").write_text("bad", encoding="utf-8")


def killed(out: Path) -> None:
    dist.init()
    dist.barrier()
    if dist.rank() == 1:
        os.kill(os.getpid(), 9)
    dist.barrier()
    (out / "rank0_passed_barrier").write_text("bad", encoding="utf-8")


def silent(out: Path) -> None:
    """Rank 1 never joins the all-reduce: rank 0 times out (GPUGRAD_DIST_TIMEOUT) and aborts."""
    dist.init()
    if dist.rank() == 1:
        time.sleep(60)
    else:
        dist.all_reduce(gg.ones(3))


if __name__ == "__main__":
    scenario, outdir = sys.argv[1], Path(sys.argv[2])
    {"checks": checks, "raising": raising, "killed": killed, "silent": silent, "three": three,
     "raising_in_shm": raising_in_shm}[scenario](outdir)
