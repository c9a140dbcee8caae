"""One MLP training step (forward, cross-entropy, backward, SGD) on one CPU thread:
gpugrad vs a hand-written NumPy MLP (manual backprop, preallocated in-place buffers) vs PyTorch CPU
when importable, all in one run, interleaved, medians after warm-up.

    PYTHONPATH=. python benchmarks/bench_mlp.py [--repeats 15] [--sizes all] [--json out.json]

The thread caps are set before NumPy is imported (threadpoolctl also pins them when installed),
so the comparison is op for op, not a contest of thread pools.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"  # before numpy/torch import: their pools size themselves at load

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

try:
    import gpugrad as gg
except ImportError:  # run from a checkout without PYTHONPATH=.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import gpugrad as gg

import gpugrad.functional as F  # noqa: E402
from gpugrad.bench.report import machine_info  # noqa: E402
from gpugrad.bench.timing import Timer, summarize  # noqa: E402

CONFIGS = {"small": ((784, 128, 10), 64), "medium": ((784, 512, 512, 10), 256),
           "large": ((1024, 2048, 2048, 10), 512)}
LR = 0.01


def _data(sizes: tuple[int, ...], batch: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, sizes[0])).astype(np.float32)
    y = rng.integers(0, sizes[-1], size=batch).astype(np.int64)
    return x, y


class NumpyMLP:
    """A strong hand-written baseline: ReLU MLP, fused softmax-CE gradient, in-place SGD.

    Every buffer is allocated once; each step runs BLAS matmuls into ``out=`` buffers and
    elementwise ufuncs in place. Weights are stored (in, out) so no transpose is materialized.

    ``torch_conventions=True`` keeps what a framework's API keeps, and nothing else changes:
    weights stored (out, in) as ``torch.nn.Linear`` and gpugrad store them (so the forward
    multiplies by ``W.T``), each ReLU writes a new activation (its input is not overwritten), and
    the update ``W -= lr·gW`` leaves the gradients intact. What that costs the script is the
    part of the compiled step's gap to the plain script that no replay can remove.
    """

    def __init__(self, weights: list[np.ndarray], biases: list[np.ndarray], batch: int,
                 torch_conventions: bool = False) -> None:
        self.torch = torch_conventions
        # copies: the caller's arrays (a model's, another script's) are never trained in place
        self.W = [np.array(w.T if self.torch else w, dtype=np.float32, order="C")
                  for w in weights]
        self.b = [np.array(b, dtype=np.float32) for b in biases]
        outs = [b.shape[0] for b in self.b]
        self.z = [np.empty((batch, n), np.float32) for n in outs]  # pre-activations / activations
        self.act = [np.empty((batch, n), np.float32) for n in outs[:-1]] if self.torch else self.z
        self.dz = [np.empty((batch, n), np.float32) for n in outs]
        self.mask = [np.empty((batch, n), np.bool_) for n in outs[:-1]]
        self.gW = [np.empty_like(w) for w in self.W]
        self.gb = [np.empty_like(b) for b in self.b]
        self.rows = np.arange(batch)
        self.rowmax = np.empty((batch, 1), np.float32)
        self.rowsum = np.empty((batch, 1), np.float32)

    def step(self, x: np.ndarray, y: np.ndarray, lr: float) -> float:
        W, b, z, dz, act, torch = self.W, self.b, self.z, self.dz, self.act, self.torch
        n_layers = len(W)
        h = x
        for i in range(n_layers):  # forward
            np.matmul(h, W[i].T if torch else W[i], out=z[i])
            z[i] += b[i]
            h = z[i]
            if i < n_layers - 1:
                h = np.maximum(z[i], 0, out=act[i])  # ReLU (in place unless torch_conventions)
        # Softmax cross-entropy, fused: shift, exp, normalise; gradient = (p - onehot) / B.
        logits, p = z[-1], dz[-1]
        np.max(logits, axis=1, keepdims=True, out=self.rowmax)
        np.subtract(logits, self.rowmax, out=p)
        picked = p[self.rows, y]  # shifted logit of the true class (a small gather)
        np.exp(p, out=p)
        np.sum(p, axis=1, keepdims=True, out=self.rowsum)
        loss = float(np.mean(np.log(self.rowsum[:, 0]) - picked))
        p /= self.rowsum
        p[self.rows, y] -= 1.0
        p *= 1.0 / x.shape[0]
        for i in range(n_layers - 1, -1, -1):  # backward
            h_in = x if i == 0 else act[i - 1]
            if torch:
                np.matmul(dz[i].T, h_in, out=self.gW[i])
            else:
                np.matmul(h_in.T, dz[i], out=self.gW[i])
            np.sum(dz[i], axis=0, out=self.gb[i])
            if i > 0:
                np.matmul(dz[i], W[i] if torch else W[i].T, out=dz[i - 1])
                np.greater(h_in, 0, out=self.mask[i - 1])
                np.multiply(dz[i - 1], self.mask[i - 1], out=dz[i - 1])
        lr32 = np.float32(lr)
        for i in range(n_layers):  # SGD in place
            if torch:  # the gradients stay as they are
                W[i] -= self.gW[i] * lr32
                b[i] -= self.gb[i] * lr32
                continue
            self.gW[i] *= lr
            W[i] -= self.gW[i]
            self.gb[i] *= lr
            b[i] -= self.gb[i]
        return loss


def gpugrad_setup(sizes: tuple[int, ...], batch: int) -> tuple[Callable[[], Any], Any]:
    gg.manual_seed(0)
    model = gg.nn.MLP(list(sizes))
    opt = gg.optim.SGD(model.parameters(), lr=LR)
    xh, yh = _data(sizes, batch)
    x, y = gg.tensor(xh), gg.tensor(yh)

    def step() -> float:
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return loss

    return step, model


def numpy_setup(sizes: tuple[int, ...], batch: int, model: Any,
                torch_conventions: bool = False) -> Callable[[], Any]:
    # Start from gpugrad's initial weights (Linear stores (out, in); we keep (in, out)).
    linears = [m for m in model.modules() if isinstance(m, gg.nn.Linear)]
    mlp = NumpyMLP([m.weight.numpy().T for m in linears], [m.bias.numpy() for m in linears],
                   batch, torch_conventions)
    x, y = _data(sizes, batch)
    return lambda: mlp.step(x, y, LR)


def torch_setup(sizes: tuple[int, ...], batch: int) -> Callable[[], Any]:
    import torch

    torch.manual_seed(0)
    layers: list[Any] = []
    for i, (a, c) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers += [torch.nn.Linear(a, c)] + ([torch.nn.ReLU()] if i < len(sizes) - 2 else [])
    model = torch.nn.Sequential(*layers)
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    xh, yh = _data(sizes, batch)
    x, y = torch.from_numpy(xh), torch.from_numpy(yh)

    def step() -> Any:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return loss

    return step


def check_baseline(sizes: tuple[int, ...], batch: int, steps: int = 5) -> float:
    """Largest |loss difference| over a few steps between gpugrad and the NumPy MLP started from
    the same weights: the baseline must compute the same thing to be a fair yardstick."""
    gstep, model = gpugrad_setup(sizes, batch)
    nstep = numpy_setup(sizes, batch, model)
    return max(abs(float(gstep().item()) - nstep()) for _ in range(steps))


def bench_config(sizes: tuple[int, ...], batch: int, repeats: int, warmup: int,
                 use_torch: bool) -> dict[str, Any]:
    gstep, model = gpugrad_setup(sizes, batch)
    impls = {"gpugrad": gstep, "numpy": numpy_setup(sizes, batch, model)}
    if use_torch:
        impls["torch"] = torch_setup(sizes, batch)
    timer = Timer("cpu")
    first = {k: timer(f) for k, f in impls.items()}
    for _ in range(warmup):
        for f in impls.values():
            f()
    # Interleave the implementations, so drifting machine load hits all of them alike.
    samples: dict[str, list[float]] = {k: [] for k in impls}
    for _ in range(repeats):
        for k, f in impls.items():
            samples[k].append(timer(f))
    res = {k: summarize(v, 1, first[k], timer.clock).to_dict() for k, v in samples.items()}
    out = {"sizes": list(sizes), "batch": batch, "results": res,
           "ratio_gpugrad_over_numpy": res["gpugrad"]["median_s"] / res["numpy"]["median_s"]}
    if "torch" in res:
        out["ratio_gpugrad_over_torch"] = res["gpugrad"]["median_s"] / res["torch"]["median_s"]
    return out


def _blas() -> list[dict[str, Any]]:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return []
    return [{k: p.get(k) for k in ("user_api", "internal_api", "num_threads", "architecture")}
            for p in threadpool_info()]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="gpugrad vs hand-written NumPy vs torch: MLP step")
    p.add_argument("--sizes", default="small,medium,large",
                   help=f"comma-separated subset of {', '.join(CONFIGS)}")
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--no-torch", action="store_true")
    p.add_argument("--json", metavar="PATH")
    args = p.parse_args(argv)

    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)  # belt and braces: also caps pools loaded before our env vars
    except ImportError:
        pass
    use_torch = not args.no_torch
    torch_version = None
    if use_torch:
        try:
            import torch

            torch.set_num_threads(1)
            torch_version = torch.__version__
        except ImportError:
            use_torch = False

    diff = check_baseline(*CONFIGS["small"])
    print(f"# MLP training step, one thread; lr={LR}, SGD, float32; {args.repeats} interleaved "
          f"repeats after {args.warmup} warm-up steps")
    print(f"# machine: {machine_info(['cpu'])['cpu']['summary']}; BLAS: {_blas()}")
    print(f"# env: OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE')} "
          f"OPENBLAS_L2_SIZE={os.environ.get('OPENBLAS_L2_SIZE')}")
    print(f"# numpy baseline check: max |loss(gpugrad) - loss(numpy)| over 5 steps = {diff:.2e}")
    print(f"{'config':<24} {'gpugrad':>10} {'numpy':>10} {'torch':>10} {'gg/np':>7} "
          f"{'gg/torch':>9}")
    runs = []
    for name in args.sizes.split(","):
        sizes, batch = CONFIGS[name]
        r = bench_config(sizes, batch, args.repeats, args.warmup, use_torch)
        runs.append(r)
        med = {k: v["median_s"] * 1e3 for k, v in r["results"].items()}
        label = "-".join(map(str, sizes)) + f" b{batch}"
        tm = f"{med['torch']:8.2f}ms" if "torch" in med else f"{'—':>10}"
        tr = f"{r['ratio_gpugrad_over_torch']:8.2f}×" if "torch" in med else f"{'—':>9}"
        print(f"{label:<24} {med['gpugrad']:8.2f}ms {med['numpy']:8.2f}ms {tm} "
              f"{r['ratio_gpugrad_over_numpy']:6.2f}× {tr}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({
            "benchmark": "MLP training step (forward, cross-entropy, backward, SGD), 1 thread",
            "machine": machine_info(["cpu"]), "blas": _blas(),
            "versions": {"gpugrad": gg.__version__, "numpy": np.__version__,
                         "python": platform.python_version(), "torch": torch_version},
            "env": {k: os.environ.get(k) for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE",
                                                   "OMP_NUM_THREADS")},
            "baseline_check_max_loss_diff": diff, "repeats": args.repeats, "runs": runs,
        }, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
