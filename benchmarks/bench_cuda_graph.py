"""Compiled vs eager training steps on a GPU: eager gpugrad, ``gg.compile`` replayed without
graphs (``GPUGRAD_CUDA_GRAPHS=0``) and with CUDA graphs, interleaved, medians of synchronized
step times after warm-up, plus whether the three runs' losses agree bit for bit.

    PYTHONPATH=. python benchmarks/bench_cuda_graph.py [--device cuda] [--repeats 50]
        [--json out.json]

``--device cpu`` runs the same script without graphs (a smoke test of the script itself).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

import gpugrad as gg  # noqa: E402
import gpugrad.functional as F  # noqa: E402

CONFIGS = [((784, 128, 10), 64, "adam"), ((784, 512, 512, 10), 256, "sgd")]


def make_step(dev, sizes, opt_name: str, mode: str):
    gg.manual_seed(0)
    model = gg.nn.MLP(list(sizes)).to(dev)
    if opt_name == "adam":
        opt = gg.optim.Adam(model.parameters(), lr=1e-3)
    else:
        opt = gg.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)

    def step(x, y):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss

    if mode == "eager":
        return step
    compiled = gg.compile(step)
    compiled.graphs = mode == "graphs"
    return compiled


def call(fn, x, y):
    graphs = getattr(fn, "graphs", None)
    if graphs is None:
        return fn(x, y)
    saved = os.environ.get("GPUGRAD_CUDA_GRAPHS")
    os.environ["GPUGRAD_CUDA_GRAPHS"] = "1" if graphs else "0"  # read when a program first replays
    try:
        return fn(x, y)
    finally:
        if saved is None:
            os.environ.pop("GPUGRAD_CUDA_GRAPHS", None)
        else:
            os.environ["GPUGRAD_CUDA_GRAPHS"] = saved


def bench(dev, sizes, batch: int, opt_name: str, repeats: int, warmup: int) -> dict:
    rng = np.random.default_rng(0)
    x = gg.tensor(rng.standard_normal((batch, sizes[0])).astype(np.float32), device=dev)
    y = gg.tensor(rng.integers(0, sizes[-1], batch), device=dev)
    modes = ["eager", "compiled", "graphs"]
    fns = {m: make_step(dev, sizes, opt_name, m) for m in modes}
    times: dict[str, list[float]] = {m: [] for m in modes}
    losses: dict[str, list] = {m: [] for m in modes}
    for i in range(warmup + repeats):
        for m in modes:  # interleaved: drift hits every mode alike
            dev.synchronize()
            t0 = time.perf_counter()
            loss = call(fns[m], x, y)
            dev.synchronize()
            if i >= warmup:
                times[m].append(time.perf_counter() - t0)
            losses[m].append(loss)
    med = {m: statistics.median(t) * 1e6 for m, t in times.items()}
    host = {m: [v.item() for v in ls] for m, ls in losses.items()}
    row = {"sizes": list(sizes), "batch": batch, "optimizer": opt_name,
           "median_us": med, "eager_over_compiled": med["eager"] / med["compiled"],
           "eager_over_graphs": med["eager"] / med["graphs"],
           "bitwise_equal": host["eager"] == host["compiled"] == host["graphs"]}
    if dev.type != "cpu":
        row["graph_replay"] = fns["graphs"].program.notes
    return row


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--repeats", type=int, default=50)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    dev = gg.device(args.device)
    rows = []
    for sizes, batch, opt_name in CONFIGS:
        row = bench(dev, sizes, batch, opt_name, args.repeats, args.warmup)
        rows.append(row)
        med = row["median_us"]
        print(f"{'-'.join(map(str, sizes))} b{batch} {opt_name} on {dev}: eager "
              f"{med['eager']:.0f} us, compiled {med['compiled']:.0f} us, graphs "
              f"{med['graphs']:.0f} us (eager/graphs {row['eager_over_graphs']:.2f}x), "
              f"bitwise equal: {row['bitwise_equal']}")
        for note in row.get("graph_replay", []):
            print("  " + note)
    if args.json:
        args.json.write_text(json.dumps({"device": str(dev), "rows": rows}, indent=1))
    return 0 if all(r["bitwise_equal"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
