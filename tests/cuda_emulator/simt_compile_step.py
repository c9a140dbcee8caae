"""gg.compile's CUDA-graph replay on the CuPy stand-in (a subprocess of test_simt_compile): MLP
training steps compiled and eager, same seed, compared bit for bit. Prints one JSON line."""

from __future__ import annotations

import json
import warnings

import numpy as np
import simt_cupy
import simt_graph
from simt_train_step import install_standin

STEPS = 4
CASES = {
    "sgd_momentum": dict(opt=("SGD", dict(lr=0.1, momentum=0.9)), dropout=0.0),
    "sgd_nesterov_wd": dict(opt=("SGD", dict(lr=0.05, momentum=0.8, nesterov=True,
                                             weight_decay=1e-3)), dropout=0.0),
    "adam_dropout": dict(opt=("Adam", dict(lr=1e-2)), dropout=0.25),
    "adamw_schedule": dict(opt=("AdamW", dict(lr=2e-2, weight_decay=0.1)), dropout=0.0,
                           schedule=True),
}


def run(gg, case: dict, compiled: bool, data, labels, gemm_ops=None) -> dict:
    from gpugrad.compile import graphed

    dev = gg.device("cuda")
    gg.manual_seed(3)
    model = gg.nn.MLP([12, 16, 5], dropout=case["dropout"]).to(dev)
    name, kw = case["opt"]
    opt = getattr(gg.optim, name)(model.parameters(), **kw)
    sched = gg.optim.lr_scheduler.StepLR(opt, 1, gamma=0.5) if case.get("schedule") else None

    def step(x, y):
        loss = gg.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss

    fn = gg.compile(step) if compiled else step
    saved = graphed.GEMM_OPS
    if gemm_ops is not None:
        graphed.GEMM_OPS = gemm_ops
    losses, reads, launches = [], [], simt_graph.graph_launches
    try:
        for i in range(STEPS):
            x = gg.tensor(data[i], device=dev)
            y = gg.tensor(labels[i], device=dev)
            before = simt_cupy.host_reads
            loss = fn(x, y)
            reads.append(simt_cupy.host_reads - before)
            losses.append(loss)
            if sched is not None:
                sched.step()
    finally:
        graphed.GEMM_OPS = saved
    out = {"losses": [float(v.item()).hex() for v in losses],
           "weights": [p.numpy().tobytes().hex() for p in model.parameters()],
           "reads": reads, "graph_launches": simt_graph.graph_launches - launches}
    if compiled:
        entry = fn._last
        out["graphed"] = None if entry.graphed is None else entry.graphed.describe()
        out["segments"] = 0 if entry.graphed is None else entry.graphed.segments
        out["listing_end"] = str(entry.program).splitlines()[-1]
    return out


def main() -> None:
    install_standin()
    import gpugrad as gg

    rng = np.random.default_rng(0)
    data = rng.standard_normal((STEPS, 6, 12)).astype(np.float32)
    labels = rng.integers(0, 5, (STEPS, 6))
    result = {}
    for name, case in CASES.items():
        result[name] = {"eager": run(gg, case, False, data, labels),
                        "compiled": run(gg, case, True, data, labels)}
    # GEMMs captured as if cuBLAS were capturable: the stand-in refuses, as CuPy 14.2 does
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fallback = run(gg, CASES["sgd_momentum"], True, data, labels, gemm_ops=frozenset())
    fallback["warnings"] = [str(w.message) for w in caught]
    result["fallback"] = fallback
    # a bad label in a replayed step: the deferred check is registered again by each launch
    bad = labels.copy()
    bad[STEPS - 1, 2] = 99
    try:
        run(gg, CASES["sgd_momentum"], True, data, bad)
        result["bad_label"] = None
    except ValueError as exc:
        result["bad_label"] = str(exc)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
