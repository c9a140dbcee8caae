"""The workloads behind ``gpugrad bench``: the same work on each device, optionally against torch.

Suites:
- ``mlp``: one full training step (forward, cross-entropy, backward, SGD) for three MLP sizes,
  plus one whole epoch on the bundled digits (Adam, batch 64).
- ``kernels``: the fused kernels against their unfused composition (``set_fused(True/False)``):
  sigmoid fwd+bwd, cross-entropy fwd+bwd, BCE-with-logits fwd+bwd, an Adam step.
- ``ops``: matmul, an elementwise product and a full sum, from tiny to large sizes, so the size
  where the GPU starts to win is visible.

A workload that fails (say, a library part that is missing) is reported as skipped with its
reason instead of aborting the whole run.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from .timing import Timer, measure

__all__ = ["SUITES", "Workload", "run_suites", "workloads"]

SUITES = ("mlp", "kernels", "ops")
MLP_CONFIGS = (((784, 128, 10), 64), ((784, 512, 512, 10), 256), ((1024, 2048, 2048, 10), 512))


@dataclass
class Workload:
    suite: str
    name: str  # family, e.g. "matmul"
    case: str  # e.g. "n=256"
    size: float  # x axis of the plots
    size_unit: str
    work: float  # throughput numerator per call (samples, bytes or flops)
    unit: str  # "samples/s" | "GB/s" | "GFLOP/s"
    make: Callable[[Any], Callable[[], Any]]  # gg.Device -> step
    make_torch: Callable[[Any], Callable[[], Any]] | None = None  # torch.device -> step
    variant: str = ""  # "fused" | "unfused" (kernels suite), "eager" | "compiled" (mlp suite)
    slow: bool = False  # a whole-epoch workload: fewer repeats


def _host(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _labels(n: int, classes: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, classes, size=n).astype(np.int64)


# -- mlp ----------------------------------------------------------------------------------------
def _mlp_step(sizes: tuple[int, ...], batch: int,
              compiled: bool = False) -> Callable[[Any], Callable[[], Any]]:
    def make(dev: Any) -> Callable[[], Any]:
        import gpugrad as gg
        import gpugrad.functional as F

        gg.manual_seed(0)
        model = gg.nn.MLP(list(sizes)).to(dev)
        opt = gg.optim.SGD(model.parameters(), lr=0.01)
        x = gg.tensor(_host(batch, sizes[0]), device=dev)
        y = gg.tensor(_labels(batch, sizes[-1]), device=dev)

        def step() -> None:
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()

        return gg.compile(step) if compiled else step

    return make


def _torch_mlp_step(sizes: tuple[int, ...], batch: int) -> Callable[[Any], Callable[[], Any]]:
    def make(dev: Any) -> Callable[[], Any]:
        import torch

        torch.manual_seed(0)
        layers: list[Any] = []
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            layers.append(torch.nn.Linear(a, b))
            if i < len(sizes) - 2:
                layers.append(torch.nn.ReLU())
        model = torch.nn.Sequential(*layers).to(dev)
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        x = torch.from_numpy(_host(batch, sizes[0])).to(dev)
        y = torch.from_numpy(_labels(batch, sizes[-1])).to(dev)

        def step() -> None:
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()

        return step

    return make


def _digits_epoch(dev: Any, compiled: bool = False) -> Callable[[], Any]:
    import gpugrad as gg
    import gpugrad.functional as F
    from gpugrad.data import DataLoader, load_digits

    split = load_digits()
    gg.manual_seed(0)
    model = gg.nn.MLP([split.num_features, 128, split.num_classes]).to(dev)
    opt = gg.optim.Adam(model.parameters(), lr=1e-3)
    loader = DataLoader.from_split(split, batch_size=64, seed=0, device=dev)

    def step(xb: Any, yb: Any) -> None:
        opt.zero_grad()
        F.cross_entropy(model(xb), yb).backward()
        opt.step()

    run = gg.compile(step) if compiled else step

    def epoch() -> None:
        for xb, yb in loader:
            run(xb, yb)

    return epoch


def _mlp_workloads(quick: bool) -> list[Workload]:
    out = []
    for sizes, batch in MLP_CONFIGS[:2] if quick else MLP_CONFIGS:
        label = "-".join(map(str, sizes)) + f" b{batch}"
        for compiled in (False, True):  # eager (the tape) and gg.compile (a replayed program)
            out.append(Workload("mlp", "train step", label, float(batch), "batch", float(batch),
                                "samples/s", _mlp_step(sizes, batch, compiled),
                                None if compiled else _torch_mlp_step(sizes, batch),
                                variant="compiled" if compiled else "eager"))
    from gpugrad.data import load_digits

    n = load_digits().x_train.shape[0]
    for compiled in (False, True):
        out.append(Workload("mlp", "digits epoch", "64-128-10 b64 adam", float(n), "samples",
                            float(n), "samples/s",
                            lambda dev, c=compiled: _digits_epoch(dev, c), slow=True,
                            variant="compiled" if compiled else "eager"))
    return out


# -- kernels ------------------------------------------------------------------------------------
def _sigmoid(n: int) -> tuple[Callable, Callable]:
    def make(dev: Any) -> Callable[[], Any]:
        import gpugrad as gg

        x = gg.tensor(_host(n), device=dev, requires_grad=True)
        g = gg.tensor(_host(n, seed=2), device=dev)

        def step() -> None:
            x.grad = None
            gg.sigmoid(x).backward(g)

        return step

    def make_torch(dev: Any) -> Callable[[], Any]:
        import torch

        x = torch.from_numpy(_host(n)).to(dev).requires_grad_()
        g = torch.from_numpy(_host(n, seed=2)).to(dev)

        def step() -> None:
            x.grad = None
            torch.sigmoid(x).backward(g)

        return step

    return make, make_torch


def _cross_entropy(b: int, c: int) -> tuple[Callable, Callable]:
    def make(dev: Any) -> Callable[[], Any]:
        import gpugrad as gg
        import gpugrad.functional as F

        z = gg.tensor(_host(b, c), device=dev, requires_grad=True)
        y = gg.tensor(_labels(b, c), device=dev)

        def step() -> None:
            z.grad = None
            F.cross_entropy(z, y).backward()

        return step

    def make_torch(dev: Any) -> Callable[[], Any]:
        import torch

        z = torch.from_numpy(_host(b, c)).to(dev).requires_grad_()
        y = torch.from_numpy(_labels(b, c)).to(dev)

        def step() -> None:
            z.grad = None
            torch.nn.functional.cross_entropy(z, y).backward()

        return step

    return make, make_torch


def _bce_logits(n: int) -> tuple[Callable, Callable]:
    target = (np.random.default_rng(3).random(n) < 0.5).astype(np.float32)

    def make(dev: Any) -> Callable[[], Any]:
        import gpugrad as gg
        import gpugrad.functional as F

        z = gg.tensor(_host(n), device=dev, requires_grad=True)
        t = gg.tensor(target, device=dev)

        def step() -> None:
            z.grad = None
            F.binary_cross_entropy_with_logits(z, t).backward()

        return step

    def make_torch(dev: Any) -> Callable[[], Any]:
        import torch

        z = torch.from_numpy(_host(n)).to(dev).requires_grad_()
        t = torch.from_numpy(target).to(dev)

        def step() -> None:
            z.grad = None
            torch.nn.functional.binary_cross_entropy_with_logits(z, t).backward()

        return step

    return make, make_torch


def _adam(n: int) -> tuple[Callable, Callable]:
    def make(dev: Any) -> Callable[[], Any]:
        import gpugrad as gg

        p = gg.nn.Parameter(gg.tensor(_host(n), device=dev))
        p.grad = gg.tensor(_host(n, seed=2), device=dev)
        return gg.optim.Adam([p], lr=1e-3).step

    def make_torch(dev: Any) -> Callable[[], Any]:
        import torch

        p = torch.nn.Parameter(torch.from_numpy(_host(n)).to(dev))
        p.grad = torch.from_numpy(_host(n, seed=2)).to(dev)
        return torch.optim.Adam([p], lr=1e-3).step

    return make, make_torch


def _kernel_workloads(quick: bool) -> list[Workload]:
    sizes = (2**12, 2**18) if quick else (2**12, 2**16, 2**20, 2**23)
    ce_sizes = ((64, 10), (1024, 100)) if quick else ((64, 10), (1024, 100), (8192, 1000))
    out: list[Workload] = []

    def add(name: str, case: str, size: float, nbytes: float, pair: tuple) -> None:
        make, make_torch = pair
        for variant in ("fused", "unfused"):
            out.append(Workload("kernels", name, case, size, "elements", nbytes, "GB/s", make,
                                make_torch if variant == "fused" else None, variant=variant))

    # work = the minimum memory traffic of fwd+bwd in bytes (float32), so GB/s is comparable
    # to the card's bandwidth: e.g. sigmoid reads x, writes y, then reads y and g, writes dx.
    for n in sizes:
        add("sigmoid", f"n={n}", n, 5 * 4 * n, _sigmoid(n))
    for b, c in ce_sizes:
        add("cross_entropy", f"{b}x{c}", b * c, 2 * 4 * b * c, _cross_entropy(b, c))
    for n in sizes:
        add("bce_with_logits", f"n={n}", n, 5 * 4 * n, _bce_logits(n))
    for n in sizes:
        add("adam step", f"n={n}", n, 7 * 4 * n, _adam(n))
    return out


# -- ops ----------------------------------------------------------------------------------------
def _binary_op(shape_a: tuple, shape_b: tuple, op: str) -> tuple[Callable, Callable]:
    def make(dev: Any) -> Callable[[], Any]:
        import gpugrad as gg

        a = gg.tensor(_host(*shape_a), device=dev)
        b = gg.tensor(_host(*shape_b, seed=2), device=dev)
        fn = {"matmul": gg.matmul, "mul": lambda u, v: u * v}[op]
        return lambda: fn(a, b)

    def make_torch(dev: Any) -> Callable[[], Any]:
        import torch

        a = torch.from_numpy(_host(*shape_a)).to(dev)
        b = torch.from_numpy(_host(*shape_b, seed=2)).to(dev)
        fn = {"matmul": torch.matmul, "mul": torch.mul}[op]
        return lambda: fn(a, b)

    return make, make_torch


def _sum(n: int) -> tuple[Callable, Callable]:
    def make(dev: Any) -> Callable[[], Any]:
        import gpugrad as gg

        a = gg.tensor(_host(n), device=dev)
        return lambda: gg.sum(a)

    def make_torch(dev: Any) -> Callable[[], Any]:
        import torch

        a = torch.from_numpy(_host(n)).to(dev)
        return lambda: torch.sum(a)

    return make, make_torch


def _ops_workloads(quick: bool) -> list[Workload]:
    mm = (16, 128, 512) if quick else (16, 64, 256, 1024, 2048, 4096)
    ns = (10**3, 10**5, 10**6) if quick else (10**3, 10**4, 10**5, 10**6, 10**7, 10**8 // 2)
    out = []
    for n in mm:
        make, mt = _binary_op((n, n), (n, n), "matmul")
        out.append(Workload("ops", "matmul", f"{n}x{n}", n, "n (n×n @ n×n)", 2.0 * n**3,
                            "GFLOP/s", make, mt))
    for n in ns:
        make, mt = _binary_op((n,), (n,), "mul")
        out.append(Workload("ops", "mul", f"n={n:.0e}", n, "elements", 3 * 4.0 * n, "GB/s",
                            make, mt))
    for n in ns:
        make, mt = _sum(n)
        out.append(Workload("ops", "sum", f"n={n:.0e}", n, "elements", 4.0 * n, "GB/s", make, mt))
    return out


def workloads(suites: list[str], quick: bool) -> list[Workload]:
    build = {"mlp": _mlp_workloads, "kernels": _kernel_workloads, "ops": _ops_workloads}
    out: list[Workload] = []
    for s in suites:
        if s not in build:
            raise ValueError(f"unknown suite {s!r}; choose from {', '.join(SUITES)}")
        out += build[s](quick)
    return out


# -- running ------------------------------------------------------------------------------------
def kernel_build_times(dev: Any) -> dict[str, Any]:
    """Seconds to build each ``kernels/*.cu`` module on a CUDA device: NVRTC compilation, or a
    load from CuPy's on-disk cache when an earlier process compiled it. Run before the timed
    workloads, so this cold cost is reported apart and stays out of every row."""
    from gpugrad.backend import kernels

    out: dict[str, Any] = {}
    for family in kernels.families():
        try:
            with dev.backend.use():
                t0 = time.perf_counter()
                kernels._module(family, dev.index).compile()  # the module fused_cuda launches from
                dev.synchronize()
                out[family] = time.perf_counter() - t0
        except Exception as exc:  # report it; the kernels rows will then show the failure too
            out[family] = f"{type(exc).__name__}: {exc}"
    return out



@contextlib.contextmanager
def _fused(variant: str) -> Iterator[None]:
    from gpugrad import backend

    if variant not in ("fused", "unfused"):  # eager/compiled rows use the default
        yield
        return
    prev = backend.fused_enabled()
    backend.set_fused(variant == "fused")
    try:
        yield
    finally:
        backend.set_fused(prev)


def _torch_device(spec: str) -> tuple[Any, Timer]:
    import torch

    if spec == "cpu":
        return torch.device("cpu"), Timer("cpu")
    if not torch.cuda.is_available():
        raise RuntimeError("this torch build has no CUDA (torch.cuda.is_available() is False)")
    dev = torch.device(spec)
    return dev, Timer("sync", sync=lambda: torch.cuda.synchronize(dev))


def _timing(w: Workload, quick: bool) -> dict[str, Any]:
    if quick:
        return {"warmup": 1, "repeats": 5, "max_total_s": 0.5 if not w.slow else 2.0}
    if w.slow:
        return {"warmup": 1, "repeats": 5, "max_total_s": 10.0}
    return {"warmup": 3, "repeats": 15, "max_total_s": 3.0}


def run_suites(
    devices: list[str],
    suites: list[str],
    quick: bool = False,
    against_torch: bool = False,
    progress: Callable[[str], None] | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Run every workload on every device (and torch when asked): ``(rows, skipped)``."""
    import gpugrad as gg

    rows: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    todo = workloads(suites, quick)
    if against_torch:
        try:
            import torch  # noqa: F401
        except ImportError as exc:
            skipped.append({"suite": "*", "name": "*", "case": "", "impl": "torch", "variant": "",
                            "device": ",".join(devices),
                            "reason": f"torch is not importable ({exc})"})
            against_torch = False
    # All gpugrad workloads first, then all torch ones: alternating would let one library's
    # spinning thread pool (OpenMP, OpenBLAS) steal cores from the other's next measurement.
    impls = ["gpugrad"] + (["torch"] if against_torch else [])
    order = []
    for di, spec in enumerate(devices):
        dev = gg.device(spec)
        for impl in impls:
            for wi, w in enumerate(todo):
                make = w.make if impl == "gpugrad" else w.make_torch
                if make is None:
                    continue
                base = {"suite": w.suite, "name": w.name, "case": w.case, "impl": impl,
                        "variant": w.variant if impl == "gpugrad" else "", "device": str(dev)}
                if progress:
                    progress(f"{w.suite}/{w.name} {w.case} on {dev} ({impl} {w.variant})".strip())
                try:
                    if impl == "torch":
                        tdev, timer = _torch_device(str(dev))
                        m = measure(make(tdev), timer, **_timing(w, quick))
                    else:
                        with _fused(w.variant):
                            m = measure(make(dev), Timer.for_device(dev), **_timing(w, quick))
                except Exception as exc:  # report, don't abort: other rows are still worth having
                    skipped.append({**base, "case": w.case,
                                    "reason": f"{type(exc).__name__}: {exc}"})
                    continue
                rows.append({**base, "size": w.size, "size_unit": w.size_unit, "work": w.work,
                             "unit": w.unit, **m.to_dict()})
                order.append((wi, impls.index(impl), di))
    # Present each case's rows together: gpugrad (fused, unfused), then torch, per device.
    rows = [r for _, r in sorted(zip(order, rows), key=lambda t: t[0])]
    return rows, skipped
