"""Static vs dynamic on one CPU thread: the same MLP training step (forward, cross-entropy,
backward, SGD) as a hand-written NumPy MLP, as eager gpugrad, and as ``gg.compile``'d gpugrad,
all in one run, interleaved, medians after warm-up, ratios side by side.

    PYTHONPATH=. python benchmarks/bench_compile.py [--repeats 30] [--sizes small,medium]

Columns: "np-t/np" is the hand-written script rewritten to keep torch's conventions
(``NumpyMLP(torch_conventions=True)``: weights stored (out, in), each ReLU a new array, the
gradients left intact by the update) over the plain script -- the part of the gap that comes
with the API, not the replay -- and "comp/np-t" the compiled step over that script. "over
np/step" is (compiled - numpy) / number of program steps: what each replayed
step costs above the hand-written script (which does the same math in fewer, fused passes);
"replay/step" is the replay machinery alone -- the generated function run with every op call
replaced by a stub returning that op's recorded result -- per step; "peak KiB" is the largest
amount of host memory allocated during one step (tracemalloc: NumPy reports its buffers), eager
vs compiled; "lowered" counts the program's steps written as array calls into its buffers
(``out=``) and "buffers" the buffers they share (the JSON adds their bytes and the listing's
memory-plan peaks).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"  # before numpy imports: its BLAS pool sizes itself at load

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import timeit  # noqa: E402
import tracemalloc  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import bench_mlp  # noqa: E402

import gpugrad as gg  # noqa: E402
import gpugrad.functional as F  # noqa: E402
from gpugrad.bench.report import machine_info  # noqa: E402
from gpugrad.bench.timing import Timer, summarize  # noqa: E402


def gpugrad_steps(sizes: tuple[int, ...], batch: int) -> tuple[Any, Any, Any]:
    """(eager step, compiled step, model of the compiled one), each with its own model."""
    steps = []
    for compiled in (False, True):
        gg.manual_seed(0)
        model = gg.nn.MLP(list(sizes))
        opt = gg.optim.SGD(model.parameters(), lr=bench_mlp.LR)
        xh, yh = bench_mlp._data(sizes, batch)
        x, y = gg.tensor(xh), gg.tensor(yh)

        def step(x, y, model=model, opt=opt):
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            return loss

        fn = gg.compile(step) if compiled else step
        fn.bench_args = (x, y)
        steps.append((lambda fn=fn, x=x, y=y: fn(x, y), model, fn))
    return steps[0][0], steps[1][0], steps[1][2]


def peak_bytes(step: Any) -> int:
    """Host bytes allocated at the peak of one call of ``step`` (after a warm-up call)."""
    step()
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        step()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


class _GradSink:
    """A captured tensor's stand-in for the stubbed replay: its array, and a .grad that drops
    what is assigned to it."""

    def __init__(self, t: Any) -> None:
        self.data, self.device = t.data, t.device

    grad = property(lambda self: None, lambda self, value: None)


def replay_machinery_s(program: Any, *args: Any) -> float:
    """Seconds per replay of ``program`` with every call stubbed (returning what the real call
    returned): the cost of the generated code itself -- locals, calls, unpacking, ``del``. The
    buffer plan's own checks (``refs``, ``fresh``, ``stale``) stay real, and so do the array
    methods lowered lines call on buffers (``.sum(out=)``, ``.view``, ``.T``)."""
    results: dict[str, Any] = {}
    real = dict(program.namespace)

    def recorder(name: str, fn: Any) -> Any:
        def call(*a: Any, **k: Any) -> Any:
            results[name] = out = fn(*a, **k)
            return out
        return call

    def stub(name: str) -> Any:
        value = results[name]
        return lambda *a, **k: value

    callables = [n for n, v in real.items() if callable(v) and not isinstance(v, type)
                 and n not in ("replay", "refs", "fresh", "stale")]
    ns = {**real, **{n: recorder(n, real[n]) for n in callables}}
    exec(program.source, ns)  # noqa: S102 -- the program's own source
    ns["replay"](*args)
    ns = {**real, **{n: stub(n) for n in callables if n in results}}
    # the captured tensors, as tensors whose .grad stays None: with the optimizer's zero_grad
    # stubbed, a .grad set inline by one stubbed replay would otherwise hold its buffer, and
    # every later replay would allocate new ones (fresh), timing allocations, not the code
    ns.update({n: _GradSink(v) for n, v in real.items() if isinstance(v, gg.Tensor)})
    exec(program.source, ns)  # noqa: S102
    fn = ns["replay"]
    n = 2000
    return min(timeit.repeat(lambda: fn(*args), number=n, repeat=5)) / n


def bench_config(sizes: tuple[int, ...], batch: int, repeats: int, warmup: int) -> dict:
    eager, compiled, cfn = gpugrad_steps(sizes, batch)
    _, model = bench_mlp.gpugrad_setup(sizes, batch)
    impls = {"numpy": bench_mlp.numpy_setup(sizes, batch, model),
             "numpy_torch": bench_mlp.numpy_setup(sizes, batch, model, torch_conventions=True),
             "eager": eager, "compiled": compiled}
    timer = Timer("cpu")
    for _ in range(warmup):
        for f in impls.values():
            f()
    samples: dict[str, list[float]] = {k: [] for k in impls}
    for _ in range(repeats):  # interleaved: drifting load hits all alike
        for k, f in impls.items():
            samples[k].append(timer(f))
    res = {k: summarize(v, 1, v[0], timer.clock).to_dict() for k, v in samples.items()}
    med = {k: v["median_s"] for k, v in res.items()}
    n_steps = len(cfn.program.steps)
    machinery = replay_machinery_s(cfn.program, *cfn.bench_args)
    peaks = {k: peak_bytes(impls[k]) for k in ("eager", "compiled")}
    prog = cfn.program
    plan = {"buffers": len(prog.buffers), "buffer_bytes": sum(b.nbytes for b in prog.buffers),
            "lowered_steps": sum(s.lowered is not None for s in prog.steps),
            "plan_peak_bytes": prog.memory_plan()[0],
            "unbuffered_peak_bytes": prog.unbuffered_peak()}
    return {"replay_machinery_per_step_us": machinery / n_steps * 1e6, "memory_plan": plan,
            "peak_bytes": peaks, "sizes": list(sizes), "batch": batch, "results": res,
            "program_steps": n_steps,
            "eager_over_numpy": med["eager"] / med["numpy"],
            "compiled_over_numpy": med["compiled"] / med["numpy"],
            "compiled_over_numpy_torch": med["compiled"] / med["numpy_torch"],
            "numpy_torch_over_numpy": med["numpy_torch"] / med["numpy"],
            "eager_over_compiled": med["eager"] / med["compiled"],
            "overhead_per_step_us": (med["compiled"] - med["numpy"]) / n_steps * 1e6}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="hand-written NumPy vs eager vs gg.compile")
    p.add_argument("--sizes", default="small,medium",
                   help=f"comma-separated subset of {', '.join(bench_mlp.CONFIGS)}")
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--json", metavar="PATH")
    args = p.parse_args(argv)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except ImportError:
        pass
    print(f"# MLP training step, one thread, SGD lr={bench_mlp.LR}, float32; {args.repeats} "
          f"interleaved repeats after {args.warmup} warm-up steps")
    print(f"# machine: {machine_info(['cpu'])['cpu']['summary']}")
    print(f"{'config':<22} {'numpy':>9} {'eager':>9} {'compiled':>9} {'eager/np':>9} "
          f"{'comp/np':>8} {'np-t/np':>8} {'comp/np-t':>9} {'steps':>6} {'over np/step':>12} "
          f"{'replay/step':>11} "
          f"{'peak KiB eager/compiled':>24} {'lowered':>8} {'buffers':>8}")
    runs = []
    for name in args.sizes.split(","):
        sizes, batch = bench_mlp.CONFIGS[name]
        r = bench_config(sizes, batch, args.repeats, args.warmup)
        runs.append(r)
        med = {k: v["median_s"] * 1e3 for k, v in r["results"].items()}
        peak, plan = r["peak_bytes"], r["memory_plan"]
        label = "-".join(map(str, sizes)) + f" b{batch}"
        print(f"{label:<22} {med['numpy']:7.3f}ms {med['eager']:7.3f}ms "
              f"{med['compiled']:7.3f}ms {r['eager_over_numpy']:8.2f}x "
              f"{r['compiled_over_numpy']:7.2f}x {r['numpy_torch_over_numpy']:7.3f}x "
              f"{r['compiled_over_numpy_torch']:8.3f}x {r['program_steps']:6d} "
              f"{r['overhead_per_step_us']:10.2f}us {r['replay_machinery_per_step_us']:9.3f}us "
              f"{peak['eager'] / 1024:12.0f} / {peak['compiled'] / 1024:<9.0f}"
              f"{plan['lowered_steps']:8d} {plan['buffers']:8d}",
              flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"benchmark": "static vs dynamic MLP step",
                                               "machine": machine_info(["cpu"]),
                                               "repeats": args.repeats, "runs": runs},
                                              indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
