"""Data-parallel scaling: the 784-512-512-10 MLP step at global batch 256 on 1 and 2 ranks.

Each rank is one process with one BLAS thread, launched by ``mpiexec``; with N ranks each takes
256/N samples of every batch and ``DataParallel`` averages the gradients. Reported per N:
samples/s, speed-up and scaling efficiency against one rank, the share of the step spent
finishing the gradient all-reduces after backward, the all-reduce calls per step, and the bytes
all-reduced per step against the gradient's size (bucketing works when that is one or a few
calls moving about the gradient's size), and the MB per step copied from ``.grad``s into the
buckets (``packed``: 0 when a compiled backward writes into them, see ``--bucket-views``).

Where the time goes, per step (mean over ranks, milliseconds of wall time): ``fwd``
(zero_grad, forward, loss), ``walk`` (the backward walk, with the hooks that pack buckets),
``reduce`` (finishing the all-reduces after the walk: waiting for the slower rank, summing,
writing the averages back), ``opt`` (the optimizer step); ``cpu%`` is the smallest share of its
wall time a rank spent on the CPU (below 100 %: it waited or was descheduled), ``faults`` the
minor page faults per step and rank (memory the allocator handed back to the OS and maps again;
see ``gpugrad/backend/host_malloc.py``). The
``no-reduce`` row runs the same ranks without DataParallel (each its own half batch, nothing
exchanged): the speed-up the machine allows before any communication -- on a VM whose two vCPUs
share one core's execution units it is far from 2x. The ``lock-step`` row adds one barrier after
every step and still exchanges nothing: each step then takes as long as the slower rank's, so
the gap between the two rows is what per-step jitter alone costs any synchronous data
parallelism, and ``lock-step`` is the ceiling for the ``dp`` row.

    PYTHONPATH=. python benchmarks/bench_distributed.py [--ranks 1,2] [--steps 40] [--rounds 3]
    PYTHONPATH=. python benchmarks/bench_distributed.py --steps 3 --warmup 1 --rounds 1  # quick

With ``--compile`` each rank's step is one ``gg.compile`` replay (``walk`` is then the whole
step but the reduction). ``--bucket-views`` wraps with ``DataParallel(...,
gradient_as_bucket_view=True)``: the averaged ``.grad``s are views of the shared buckets (no copy
back), and with ``--compile`` the replayed backward writes the gradients straight into them (no
copy there either). ``--bind`` pins each rank to a core (``mpiexec -bind-to core``).
``--device cuda`` puts rank r on ``cuda:<local_rank>`` (NCCL). ``GPUGRAD_DIST_SHM=0`` makes
host buckets go through MPI's all-reduce instead of the shared-memory window. The target on a
2-core CPU is >= 1.7x one rank's throughput with 2 ranks.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"  # one thread per rank, set before NumPy loads its BLAS

import argparse  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SIZES, GLOBAL_BATCH = (784, 512, 512, 10), 256


def worker(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(ROOT))
    import numpy as np

    import gpugrad as gg
    import gpugrad.functional as F
    from gpugrad import distributed as dist

    w = dist.init()
    dev = f"cuda:{w.local_rank}" if args.device == "cuda" else "cpu"
    per_rank = GLOBAL_BATCH // w.size
    rng = np.random.default_rng(w.rank)
    x = gg.tensor(rng.standard_normal((per_rank, SIZES[0])).astype(np.float32), device=dev)
    y = gg.tensor(rng.integers(0, SIZES[-1], per_rank), device=dev)
    gg.manual_seed(0)
    model = gg.nn.MLP(list(SIZES)).to(dev)
    dp = dist.DataParallel(model, bucket_cap_mb=args.bucket_cap_mb,
                           gradient_as_bucket_view=args.bucket_views) if args.reduce else None
    net = model if dp is None else dp
    opt = gg.optim.SGD(list(model.parameters()), lr=0.01)
    device = gg.device(dev)
    phases = np.zeros(4)  # fwd, backward (walk + reduce), opt, reduce (from comm_stats)

    def eager_step(timed: bool) -> None:
        t0 = time.perf_counter()
        opt.zero_grad()
        loss = F.cross_entropy(net(x), y)
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        opt.step()
        if timed:
            phases[:3] += (t1 - t0, t2 - t1, time.perf_counter() - t2)

    @gg.compile
    def program(xb, yb):
        opt.zero_grad()
        F.cross_entropy(net(xb), yb).backward()
        opt.step()

    def compiled_step(timed: bool) -> None:  # one replay: only the reduction is timed apart
        t0 = time.perf_counter()
        program(x, y)
        if timed:
            phases[1] += time.perf_counter() - t0

    one_step = compiled_step if args.compile else eager_step

    def step(timed: bool) -> None:
        one_step(timed)
        if args.lockstep:  # each step ends when the slower rank's does
            dist.barrier()

    for _ in range(args.warmup):
        step(False)
    device.synchronize()
    dist.barrier()
    stats0 = dict(dp.comm_stats) if dp is not None else None
    faults0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    cpu0, t0 = time.process_time(), time.perf_counter()
    for _ in range(args.steps):
        step(True)
    device.synchronize()
    elapsed = time.perf_counter() - t0
    cpu_share = (time.process_time() - cpu0) / elapsed
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults0) / args.steps
    stats = {k: dp.comm_stats[k] - stats0[k] for k in stats0} if dp is not None else {}
    reduce_s = stats.get("wait_seconds", 0.0)
    phases[3] = reduce_s
    phases[1] -= reduce_s  # the walk alone
    mine = gg.tensor([elapsed, cpu_share, faults, *(phases / args.steps)], dtype="float64")
    every = dist.all_gather(mine).numpy()  # one row per rank
    slowest = every[:, 0].max()  # the slowest rank sets the pace
    fwd, walk, opt_s, red = (every[:, 3:].mean(axis=0) * 1e3).tolist()
    if args.compile:  # the replay's forward, walk and optimizer are one call
        fwd = opt_s = None
    steps = max(1, stats.get("steps", 0))
    result = {
        "ranks": w.size, "device": dev, "per_rank_batch": per_rank, "compiled": args.compile,
        "mode": "alone" if w.size == 1 else "dp" if dp is not None
        else "lock-step" if args.lockstep else "no-reduce",
        "step_seconds": slowest / args.steps,
        "samples_per_second": GLOBAL_BATCH * args.steps / slowest,
        "allreduce_share": red / 1e3 / (slowest / args.steps),
        "phase_ms": {"fwd": fwd, "walk": walk, "reduce": red, "opt": opt_s},
        "min_cpu_share": float(every[:, 1].min()),
        "page_faults_per_step": float(every[:, 2].mean()),
        "per_rank": every.tolist(),
        "calls_per_step": stats.get("calls", 0) / steps if w.size > 1 else 0,
        "bytes_per_step": stats.get("bytes", 0) / steps if w.size > 1 else 0,
        "packed_bytes_per_step": stats.get("packed_bytes", 0) / steps if w.size > 1 else 0,
        "gradient_bytes": sum(p.size * p.dtype.itemsize for p in model.parameters()),
        "buckets": len(dp._buckets) if dp is not None else 0,
        "transport": _transport(dp, dev) if dp is not None and w.size > 1 else "-",
    }
    if w.rank == 0:
        Path(args.out).write_text(json.dumps(result), encoding="utf-8")


def _transport(dp, dev: str) -> str:
    from gpugrad import distributed as dist

    if dev != "cpu":
        return dist.gpu_transport()
    return "shared memory" if all(b.shm is not None for b in dp._buckets) else "MPI"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def mpiexec() -> str:
    here = Path(sys.executable).parent / "mpiexec"
    if here.exists():
        return str(here)
    import shutil

    found = shutil.which("mpiexec")
    if found is None:
        sys.exit("bench_distributed: no mpiexec (pip install 'gpugrad[mpi]')")
    return found


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ranks", default="1,2", help="comma-separated rank counts (default 1,2)")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--bucket-cap-mb", type=float, default=4.0)
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--compile", action="store_true",
                    help="run each rank's step under gg.compile (the average is a program step)")
    ap.add_argument("--bucket-views", action="store_true",
                    help="DataParallel(gradient_as_bucket_view=True): .grads are views of the "
                         "buckets (with --compile, written there by the backward)")
    ap.add_argument("--bind", action="store_true",
                    help="pin each rank to its own core (mpiexec -bind-to core)")
    ap.add_argument("--no-reduce-row", action=argparse.BooleanOptionalAction, default=True,
                    help="also run the multi-rank counts without DataParallel, free-running and "
                         "in lock-step (the ceilings)")
    ap.add_argument("--rounds", type=int, default=3,
                    help="run the whole set of launches this many times, interleaved; each row "
                         "is the round with the median throughput (default 3)")
    ap.add_argument("--json", metavar="PATH", help="also write the rows as JSON")
    ap.add_argument("--no-reduce", dest="reduce", action="store_false", help=argparse.SUPPRESS)
    ap.add_argument("--lockstep", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args)
        return
    rows = []
    runs = [(int(n), "dp") for n in args.ranks.split(",")]
    if args.no_reduce_row:
        runs += [(n, mode) for n, _ in runs if n > 1 for mode in ("no-reduce", "lock-step")]
    rounds: list[list[dict]] = [[] for _ in runs]
    with tempfile.TemporaryDirectory() as tmp:
        for i, (n, mode) in [(i, run) for _ in range(args.rounds) for i, run in enumerate(runs)]:
            out = Path(tmp) / f"{i}.json"
            cmd = [mpiexec(), *(["-bind-to", "core"] if args.bind else []), "-n", str(n),
                   sys.executable, __file__, "--worker", "--out", str(out), "--steps",
                   str(args.steps), "--warmup", str(args.warmup),
                   "--bucket-cap-mb", str(args.bucket_cap_mb), "--device", args.device]
            cmd += [f for f, on in (("--compile", args.compile),
                                    ("--bucket-views", args.bucket_views)) if on]
            if mode != "dp":
                cmd += ["--no-reduce", *(["--lockstep"] if mode == "lock-step" else [])]
            env = {**os.environ, "PYTHONPATH": str(ROOT)}
            subprocess.run(cmd, check=True, env=env, timeout=600)
            rounds[i].append(json.loads(out.read_text()))
    # The machine's speed drifts between launches; rounds interleave the configurations, and
    # each row is its median round, with every round's speed-up over the same round's first row.
    for results in rounds:
        row = sorted(results, key=lambda r: r["samples_per_second"])[len(results) // 2]
        row["round_speedups"] = [r["samples_per_second"] / first["samples_per_second"]
                                 for r, first in zip(results, rounds[0])]
        rows.append(row)
    base = rows[0]["samples_per_second"] * 1.0 / rows[0]["ranks"]
    print(f"MLP {'-'.join(map(str, SIZES))}, global batch {GLOBAL_BATCH}, one thread per rank, "
          f"{args.steps} timed steps on {args.device}{' (gg.compile)' if args.compile else ''}"
          f"{' (bucket views)' if args.bucket_views else ''}"
          f"; median of {args.rounds} interleaved rounds; phases in ms per step, mean over ranks")
    print(f"{'ranks':>5} {'mode':>9} {'samples/s':>10} {'speed-up':>8} {'effic.':>6} "
          f"{'fwd':>6} {'walk':>6} {'reduce':>6} {'opt':>5} {'cpu%':>5} {'faults':>6} "
          f"{'all-red.':>8} "
          f"{'calls/step':>10} {'MB/step':>7} {'packed':>6} {'grad MB':>7}  transport")
    for r in rows:
        speedup = r["samples_per_second"] / rows[0]["samples_per_second"]
        r["speedup"] = speedup
        r["efficiency"] = r["samples_per_second"] / (base * r["ranks"])
        ph = r["phase_ms"]
        print(f"{r['ranks']:>5} {r['mode']:>9} {r['samples_per_second']:>10.0f} {speedup:>7.2f}x "
              f"{r['efficiency']:>6.0%} {_ms(ph['fwd']):>6} {_ms(ph['walk']):>6} "
              f"{_ms(ph['reduce']):>6} {_ms(ph['opt']):>5} {r['min_cpu_share']:>5.0%} "
              f"{r['page_faults_per_step']:>6.0f} "
              f"{r['allreduce_share']:>8.1%} {r['calls_per_step']:>10.1f} "
              f"{r['bytes_per_step'] / 2**20:>7.2f} {r['packed_bytes_per_step'] / 2**20:>6.2f} "
              f"{r['gradient_bytes'] / 2**20:>7.2f}  "
              f"{r['transport']}")
    if args.rounds > 1:
        for r in rows[1:]:
            print(f"speed-up of {r['ranks']} ranks ({r['mode']}) in each round: "
                  + ", ".join(f"{x:.2f}x" for x in r["round_speedups"]))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
