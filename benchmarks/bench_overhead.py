"""Tape overhead per recorded op: forward + backward of ``(a*b + c).sum()`` on 4-element float32
tensors, divided by its 3 recorded ops (mul, add, sum).

Side by side in one run: gpugrad, raw NumPy doing the same arithmetic by hand (so gpugrad − NumPy
is the pure cost of recording and walking the tape), and PyTorch CPU when it is importable.

    PYTHONPATH=. python benchmarks/bench_overhead.py [--repeats 31] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

import numpy as np

try:
    import gpugrad as gg
except ImportError:  # run from a checkout without PYTHONPATH=.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import gpugrad as gg

from gpugrad.bench.report import machine_info
from gpugrad.bench.timing import Measurement, measure

N_OPS = 3  # mul, add, sum


def _inputs() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return tuple(rng.standard_normal(4).astype(np.float32) for _ in range(3))  # type: ignore


def gpugrad_step() -> Any:
    a, b, c = (gg.tensor(x, requires_grad=True) for x in _inputs())

    def step() -> None:
        a.grad = b.grad = c.grad = None  # like torch's zero_grad(set_to_none=True)
        (a * b + c).sum().backward()

    return step


def numpy_step() -> Any:
    a, b, c = _inputs()

    def step() -> None:
        # The same arithmetic gpugrad does, with no bookkeeping: forward, then the VJPs.
        y = a * b + c
        s = y.sum()
        gy = np.empty_like(y)
        gy[...] = np.ones_like(s)  # d(sum)/dy, materialized like the tape's broadcast
        ga = gy * b  # noqa: F841
        gb = gy * a  # noqa: F841
        gc = gy  # noqa: F841

    return step


def torch_step() -> Any:
    import torch

    a, b, c = (torch.tensor(x, requires_grad=True) for x in _inputs())

    def step() -> None:
        a.grad = b.grad = c.grad = None
        (a * b + c).sum().backward()

    return step


def run(repeats: int, min_batch_s: float) -> dict[str, Any]:
    impls: dict[str, Any] = {"gpugrad": gpugrad_step, "numpy": numpy_step}
    skipped: dict[str, str] = {}
    try:
        import torch

        impls["torch"] = torch_step
        torch_version = torch.__version__
    except ImportError as exc:
        skipped["torch"] = f"not importable ({exc})"
        torch_version = None
    results: dict[str, Measurement] = {}
    for name, make in impls.items():
        results[name] = measure(make(), warmup=200, repeats=repeats, min_batch_s=min_batch_s,
                                max_total_s=30.0)
    per_op = {k: m.median_s / N_OPS for k, m in results.items()}
    return {
        "benchmark": "tape overhead: forward+backward of (a*b + c).sum(), 4-element float32",
        "ops_per_iteration": N_OPS,
        "machine": machine_info(["cpu"]),
        "versions": {"gpugrad": gg.__version__, "numpy": np.__version__,
                     "python": platform.python_version(), "torch": torch_version},
        "env": {k: os.environ.get(k) for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")},
        "results": {
            k: {**m.to_dict(), "per_op_s": per_op[k]} for k, m in results.items()
        },
        "overhead_per_op_s": per_op["gpugrad"] - per_op["numpy"],
        "skipped": skipped,
    }


def print_table(r: dict[str, Any]) -> None:
    print(f"# {r['benchmark']}  ({r['ops_per_iteration']} recorded ops per iteration; "
          "medians over timed batches)")
    print(f"# {r['machine']['cpu']['summary']}")
    print(f"{'impl':<8} {'µs/iter':>9} {'µs/op':>8} {'IQR µs/op':>10} {'min µs/op':>10} "
          f"{'repeats×inner':>14}")
    n = r["ops_per_iteration"]
    for name, m in r["results"].items():
        print(f"{name:<8} {m['median_s'] * 1e6:9.2f} {m['per_op_s'] * 1e6:8.2f} "
              f"{m['iqr_s'] / n * 1e6:10.3f} {m['min_s'] / n * 1e6:10.2f} "
              f"{m['repeats']:>6}×{m['inner']:<7}")
    print(f"gpugrad tape overhead (gpugrad − numpy): {r['overhead_per_op_s'] * 1e6:.2f} µs per op")
    if "torch" in r["results"]:
        ratio = r["results"]["gpugrad"]["median_s"] / r["results"]["torch"]["median_s"]
        print(f"gpugrad / torch CPU: {ratio:.2f}×")
    for name, why in r["skipped"].items():
        print(f"{name}: skipped, {why}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="gpugrad tape overhead per recorded op")
    p.add_argument("--repeats", type=int, default=31, help="timed batches (median is reported)")
    p.add_argument("--min-batch-ms", type=float, default=20.0,
                   help="each timed batch repeats the step until it lasts this long")
    p.add_argument("--json", metavar="PATH", help="write the results as JSON")
    args = p.parse_args(argv)
    r = run(args.repeats, args.min_batch_ms / 1e3)
    print_table(r)
    if args.json:
        Path(args.json).write_text(json.dumps(r, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
