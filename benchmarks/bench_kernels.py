"""Fused CUDA kernels vs the unfused CuPy composition and PyTorch, on one GPU, in one run.

    PYTHONPATH=. python benchmarks/bench_kernels.py [--json kernels.json] [--repeat 15]

Times are CUDA-event medians after warm-up (each sample spans `inner` back-to-back calls, so small
launch-bound cases measure the steady per-call cost, host overhead included). The card's
device-to-device copy bandwidth (cudaMemcpy, read + write) is measured in the same run and every
kernel's effective bandwidth is reported as a fraction of it. Bytes counted per call:
sigmoid forward 2*n*4, backward 3*n*4; softmax-CE forward+backward one read + one write of the
logits (2*N*C*4; labels and the scalar loss are negligible); Adam 7*4 bytes per parameter.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import numpy as np

try:
    import gpugrad  # noqa: F401
except ImportError:  # run from a checkout without PYTHONPATH=.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gpugrad.backend import cuda_runtime  # noqa: E402
from gpugrad.bench.timing import Timer, summarize  # noqa: E402

TARGETS = {  # from issue 4
    "sigmoid_fwd_copy_fraction": 0.85,
    "sigmoid_bwd_copy_fraction": 0.85,
    "ce_large_copy_fraction": 0.80,
    "ce_large_speedup_vs_torch": 1.5,
    "ce_small_speedup_vs_torch": 1.0,
    "adam_speedup_vs_loop": 3.0,
}


def timer(cupy, torch, warmup: int, repeat: int):
    """``run(fn, inner, lib)``: median milliseconds per call, from ``gpugrad.bench.timing``'s CUDA
    event timer. Its events go on the legacy default stream, which also orders PyTorch's default
    stream, so one clock times both libraries (``lib`` is kept for the call sites' clarity)."""
    clock = Timer("cuda", xp=cupy, sync=cupy.cuda.Device().synchronize)

    def run(fn, inner: int = 1, lib: str = "cupy") -> float:
        for _ in range(warmup):
            fn()
        samples = [clock(fn, inner) / inner for _ in range(repeat)]
        return summarize(samples, inner, float("nan"), clock.clock).median_s * 1e3

    return run


class Bench:
    """One method per case; each prints its rows and keeps them in ``self.rows``."""

    def __init__(self, cupy, torch, fc, t) -> None:
        self.cp, self.torch, self.fc, self.t = cupy, torch, fc, t
        self.rows: list[dict] = []
        self.copy_gbs: float | None = None
        self.rng = cupy.random.default_rng(0)

    def record(self, case: str, impl: str, ms: float, nbytes: float) -> dict:
        gbs = nbytes / ms / 1e6
        frac = gbs / self.copy_gbs if self.copy_gbs else None
        row = {"case": case, "impl": impl, "ms": ms, "GB/s": gbs, "copy_fraction": frac}
        self.rows.append(row)
        extra = f"  {frac:6.1%} of copy" if frac else ""
        print(f"  {case:<28} {impl:<18} {ms * 1e3:10.1f} us {gbs:8.1f} GB/s{extra}")
        return row

    def free(self) -> None:
        self.cp.get_default_memory_pool().free_all_blocks()
        if self.torch:
            self.torch.cuda.empty_cache()

    def copy(self) -> None:
        """Device-to-device cudaMemcpy of 1 GiB: the bandwidth every kernel is compared with."""
        cp = self.cp
        src = cp.ones(1 << 28, cp.float32)
        dst = cp.empty_like(src)
        ms = self.t(lambda: dst.data.copy_from_device_async(src.data, src.nbytes))
        self.copy_gbs = 2 * src.nbytes / ms / 1e6
        self.record("d2d copy 1 GiB", "cudaMemcpy", ms, 2 * src.nbytes)

    def sigmoid(self) -> tuple[dict, dict]:
        cp, fc, t, n = self.cp, self.fc, self.t, 1 << 26
        x = self.rng.standard_normal(n, dtype=cp.float32) * 4
        gy = self.rng.standard_normal(n, dtype=cp.float32)
        y = fc.sigmoid_forward(x)
        err = float(cp.abs(y - 1 / (1 + cp.exp(-x.astype(cp.float64)))).max())
        print(f"  sigmoid max abs error vs float64: {err:.2e}")
        case_f, case_b = "sigmoid fwd 2^26", "sigmoid bwd 2^26"
        fwd = self.record(case_f, "fused", t(lambda: fc.sigmoid_forward(x)), 8 * n)
        self.record(case_f, "cupy unfused", t(lambda: 1 / (1 + cp.exp(-x))), 8 * n)
        bwd = self.record(case_b, "fused", t(lambda: fc.sigmoid_backward(y, gy)), 12 * n)
        self.record(case_b, "cupy unfused", t(lambda: gy * y * (1 - y)), 12 * n)
        if self.torch:
            torch = self.torch
            xt, yt, gt = (torch.as_tensor(a, device="cuda") for a in (x, y, gy))
            self.record(case_f, "torch", t(lambda: torch.sigmoid(xt), lib="torch"), 8 * n)
            ms = t(lambda: torch.ops.aten.sigmoid_backward(gt, yt), lib="torch")
            self.record(case_b, "torch", ms, 12 * n)
        return fwd, bwd

    def cross_entropy(self, N: int, C: int, inner: int) -> dict:
        self.free()  # the previous case's buffers (both memory pools cache them)
        cp, fc, t = self.cp, self.fc, self.t
        case = f"softmax-CE f+b ({N}, {C})"
        x = self.rng.standard_normal((N, C), dtype=cp.float32) * 3
        labels = self.rng.integers(0, C, N, dtype=cp.int64)
        loss, grad = fc.softmax_cross_entropy(x, labels, -100, "mean", True)
        ref_loss, ref_grad = ce_unfused(cp, x.astype(cp.float64), labels)
        err = float(cp.abs(grad - ref_grad).max())
        print(f"  {case}: |loss - ref| {abs(float(loss) - float(ref_loss)):.2e}, grad {err:.2e}")
        del grad, ref_grad
        nbytes = 2 * N * C * 4  # one read and one write of the logits
        out = {"fused": self.record(case, "fused", t(lambda: fc.softmax_cross_entropy(
            x, labels, -100, "mean", True), inner), nbytes)}  # fmt: skip
        self.record(case, "cupy unfused", t(lambda: ce_unfused(cp, x, labels), inner), nbytes)
        if self.torch:
            torch = self.torch
            xt = torch.as_tensor(x, device="cuda").requires_grad_()
            lt = torch.as_tensor(labels, device="cuda")

            def torch_ce():
                xt.grad = None
                torch.nn.functional.cross_entropy(xt, lt).backward()

            out["torch"] = self.record(case, "torch", t(torch_ce, inner, "torch"), nbytes)
        return out

    def adam(self) -> dict:
        """Adam over an MLP's parameters (784-512-512-10): one fused launch vs a per-param loop."""
        cp, fc, t = self.cp, self.fc, self.t
        sizes = [(784, 512), (512,), (512, 512), (512,), (512, 10), (10,)]
        ps = [self.rng.standard_normal(s, dtype=cp.float32) for s in sizes]
        gs = [self.rng.standard_normal(s, dtype=cp.float32) for s in sizes]
        ms = [cp.zeros_like(p) for p in ps]
        vs = [cp.zeros_like(p) for p in ps]
        kw = dict(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0, decoupled=False)

        def loop():
            b1, b2, step = 0.9, 0.999, 10
            step_size, bc2 = 1e-3 / (1 - b1**step), (1 - b2**step) ** 0.5
            for p, g, m, v in zip(ps, gs, ms, vs):
                m *= b1
                m += (1 - b1) * g
                v *= b2
                v += (1 - b2) * g * g
                p -= step_size * m / (cp.sqrt(v) / bc2 + 1e-8)

        nbytes = 28 * sum(p.size for p in ps)  # read p, g, m, v; write p, m, v
        case = "Adam MLP 784-512-512-10"
        out = {"fused": self.record(case, "fused (1 launch)",
                                    t(lambda: fc.adam_step(ps, gs, ms, vs, step=10, **kw), 50),
                                    nbytes)}  # fmt: skip
        out["loop"] = self.record(case, "cupy per-param", t(loop, 50), nbytes)
        if self.torch:
            torch = self.torch
            tps = [torch.as_tensor(p, device="cuda").clone().requires_grad_() for p in ps]
            for tp, g in zip(tps, gs):
                tp.grad = torch.as_tensor(g, device="cuda").clone()
            for label, opts in (
                ("torch foreach", {"foreach": True}),
                ("torch fused", {"fused": True}),
            ):
                opt = torch.optim.Adam(tps, lr=1e-3, **opts)
                self.record(case, label, t(opt.step, 50, "torch"), nbytes)
        return out


def ce_unfused(cp, x, labels):
    """Softmax cross-entropy (mean) and its gradient from separate CuPy ops."""
    m = x.max(axis=1, keepdims=True)
    e = cp.exp(x - m)
    s = e.sum(axis=1, keepdims=True)
    rows = cp.arange(x.shape[0])
    loss = (cp.log(s[:, 0]) - (x[rows, labels] - m[:, 0])).mean()
    e /= s
    e[rows, labels] -= 1
    e /= x.shape[0]
    return loss, e


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", type=Path, help="write the results here")
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--warmup", type=int, default=3)
    args = ap.parse_args(argv)
    if not cuda_runtime.is_available():
        print(f"bench_kernels: needs a CUDA GPU; {cuda_runtime.unavailable_reason()}",
              file=sys.stderr)  # fmt: skip
        return 2
    import cupy

    from gpugrad.backend import fused_cuda as fc

    try:
        import torch

        torch = torch if torch.cuda.is_available() else None
    except ImportError:
        torch = None
    t = timer(cupy, torch, args.warmup, args.repeat)
    props = cupy.cuda.runtime.getDeviceProperties(0)
    name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
    info = {"gpu": name, "cupy": cupy.__version__, "numpy": np.__version__,
            "cuda_runtime": cupy.cuda.runtime.runtimeGetVersion(),
            "driver": cupy.cuda.runtime.driverGetVersion(), "python": platform.python_version(),
            "torch": torch.__version__ if torch else None}  # fmt: skip
    print(f"GPU: {name}  (cupy {cupy.__version__}, torch {info['torch']})")
    b = Bench(cupy, torch, fc, t)
    b.copy()
    fwd, bwd = b.sigmoid()
    ce = {N: b.cross_entropy(N, C, inner) for N, C, inner in ((16384, 32768, 1), (256, 10, 200))}
    adam = b.adam()
    rows = b.rows
    checks = {
        "sigmoid_fwd_copy_fraction": fwd["copy_fraction"],
        "sigmoid_bwd_copy_fraction": bwd["copy_fraction"],
        "ce_large_copy_fraction": ce[16384]["fused"]["copy_fraction"],
        "adam_speedup_vs_loop": adam["loop"]["ms"] / adam["fused"]["ms"],
    }
    if torch:
        checks["ce_large_speedup_vs_torch"] = ce[16384]["torch"]["ms"] / ce[16384]["fused"]["ms"]
        checks["ce_small_speedup_vs_torch"] = ce[256]["torch"]["ms"] / ce[256]["fused"]["ms"]
    print("targets (issue 4):")
    verdicts = {}
    for key, value in checks.items():
        verdicts[key] = bool(value >= TARGETS[key])
        print(f"  {key:<28} {value:8.3f}  (target >= {TARGETS[key]})  "
              f"{'PASS' if verdicts[key] else 'MISS'}")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps({"machine": info, "copy_GBps": b.copy_gbs, "rows": rows,
                                         "checks": checks, "targets": TARGETS,
                                         "pass": verdicts}, indent=2))  # fmt: skip
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
