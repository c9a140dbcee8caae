"""Data-parallel scaling: the 784-512-512-10 MLP step at global batch 256 on 1 and 2 ranks.

Each rank is one process with one BLAS thread, launched by ``mpiexec``; with N ranks each takes
256/N samples of every batch and ``DataParallel`` averages the gradients. Reported per N:
samples/s, speed-up and scaling efficiency against one rank, the share of the step spent
finishing the gradient all-reduces after backward, the all-reduce calls per step, and the bytes
all-reduced per step against the gradient's size (bucketing works when that is one or a few
calls moving about the gradient's size).

    PYTHONPATH=. python benchmarks/bench_distributed.py [--ranks 1,2] [--steps 40] [--json out.json]
    PYTHONPATH=. python benchmarks/bench_distributed.py --steps 3 --warmup 1   # a quick check

``--device cuda`` puts rank r on ``cuda:<local_rank>`` (NCCL). The target on a 2-core CPU is
>= 1.7x one rank's throughput with 2 ranks.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"  # one thread per rank, set before NumPy loads its BLAS

import argparse  # noqa: E402
import json  # noqa: E402
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
    dp = dist.DataParallel(model, bucket_cap_mb=args.bucket_cap_mb)
    opt = gg.optim.SGD(list(model.parameters()), lr=0.01)
    device = gg.device(dev)

    def step() -> None:
        opt.zero_grad()
        F.cross_entropy(dp(x), y).backward()
        opt.step()

    for _ in range(args.warmup):
        step()
    device.synchronize()
    dist.barrier()
    stats0 = dict(dp.comm_stats)
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step()
    device.synchronize()
    elapsed = time.perf_counter() - t0
    # The slowest rank sets the pace.
    slowest = dist.all_reduce(gg.tensor([elapsed], dtype="float64"), "max").item()
    steps = max(1, dp.comm_stats["steps"] - stats0["steps"])
    result = {
        "ranks": w.size, "device": dev, "per_rank_batch": per_rank,
        "step_seconds": slowest / args.steps,
        "samples_per_second": GLOBAL_BATCH * args.steps / slowest,
        "allreduce_share": (dp.comm_stats["wait_seconds"] - stats0["wait_seconds"]) / elapsed,
        "calls_per_step": (dp.comm_stats["calls"] - stats0["calls"]) / steps if w.size > 1 else 0,
        "bytes_per_step": (dp.comm_stats["bytes"] - stats0["bytes"]) / steps if w.size > 1 else 0,
        "gradient_bytes": sum(p.size * p.dtype.itemsize for p in model.parameters()),
        "buckets": len(dp._buckets),
        "transport": (dist.gpu_transport() if dev != "cpu" else "MPI") if w.size > 1 else "-",
    }
    if w.rank == 0:
        Path(args.out).write_text(json.dumps(result), encoding="utf-8")


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
    ap.add_argument("--json", metavar="PATH", help="also write the rows as JSON")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args)
        return
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in (int(s) for s in args.ranks.split(",")):
            out = Path(tmp) / f"{n}.json"
            cmd = [mpiexec(), "-n", str(n), sys.executable, __file__, "--worker", "--out",
                   str(out), "--steps", str(args.steps), "--warmup", str(args.warmup),
                   "--bucket-cap-mb", str(args.bucket_cap_mb), "--device", args.device]
            env = {**os.environ, "PYTHONPATH": str(ROOT)}
            subprocess.run(cmd, check=True, env=env, timeout=600)
            rows.append(json.loads(out.read_text()))
    base = rows[0]["samples_per_second"] * 1.0 / rows[0]["ranks"]
    print(f"MLP {'-'.join(map(str, SIZES))}, global batch {GLOBAL_BATCH}, one thread per rank, "
          f"{args.steps} timed steps on {args.device}")
    print(f"{'ranks':>5} {'samples/s':>10} {'speed-up':>8} {'efficiency':>10} {'all-reduce':>10} "
          f"{'calls/step':>10} {'MB/step':>8} {'grad MB':>8}  transport")
    for r in rows:
        speedup = r["samples_per_second"] / rows[0]["samples_per_second"]
        r["speedup"] = speedup
        r["efficiency"] = r["samples_per_second"] / (base * r["ranks"])
        print(f"{r['ranks']:>5} {r['samples_per_second']:>10.0f} {speedup:>7.2f}x "
              f"{r['efficiency']:>10.0%} {r['allreduce_share']:>10.1%} "
              f"{r['calls_per_step']:>10.1f} {r['bytes_per_step'] / 2**20:>8.2f} "
              f"{r['gradient_bytes'] / 2**20:>8.2f}  {r['transport']}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
