"""Run gpugrad's CUDA backend on the CuPy stand-in (a subprocess of test_simt_train_step):
count the device-to-host reads of training steps. Prints one JSON line."""

from __future__ import annotations

import json
import sys
import types

import numpy as np
import simt_cupy


def install_standin() -> None:
    """``cupy``, ``cupyx`` and ``cupy_backends`` as the stand-in, before gpugrad is imported."""
    def scatter_add(a, index, values):
        np.add.at(a.view(np.ndarray), index, np.asarray(values))

    def erf(x):
        from math import erf as _erf

        return simt_cupy.asarray(np.vectorize(_erf)(x.view(np.ndarray)).astype(x.dtype))

    cupyx = types.ModuleType("cupyx")
    cupyx.scatter_add = scatter_add
    cupyx.scipy = types.SimpleNamespace(special=types.SimpleNamespace(erf=erf))
    sys.modules["cupy"] = simt_cupy
    sys.modules["cupyx"] = cupyx
    sys.modules["cupyx.scipy"] = cupyx.scipy
    sys.modules["cupyx.scipy.special"] = cupyx.scipy.special
    for name in ("cupy_backends", "cupy_backends.cuda", "cupy_backends.cuda.libs",
                 "cupy_backends.cuda.libs.cublas"):  # fmt: skip
        sys.modules[name] = types.ModuleType(name)
    sys.modules["cupy_backends.cuda.libs"].cublas = sys.modules["cupy_backends.cuda.libs.cublas"]
    # The stand-in's arrays subclass NumPy's, so numerics.array_module would call them host
    # arrays: tell them apart as CuPy's own arrays are told apart from NumPy's.
    import gpugrad.backend.numerics as numerics

    original = numerics.array_module

    def array_module(a):
        return simt_cupy if isinstance(a, simt_cupy.ndarray) else original(a)

    for name, mod in list(sys.modules.items()):
        if name.startswith("gpugrad") and getattr(mod, "array_module", None) is original:
            mod.array_module = array_module


def main() -> None:
    install_standin()
    import gpugrad as gg
    from gpugrad import nn
    from gpugrad.backend import checks

    assert gg.cuda.is_available(), gg.cuda.unavailable_reason()
    dev = gg.device("cuda")
    rng = np.random.default_rng(0)
    gg.manual_seed(0) if hasattr(gg, "manual_seed") else None
    emb = nn.Embedding(50, 16).to(dev)
    mlp = nn.Sequential(nn.Linear(16 * 4, 32), nn.ReLU(), nn.Linear(32, 10)).to(dev)
    params = list(emb.parameters()) + list(mlp.parameters())
    opt = gg.optim.Adam(params, lr=1e-2)
    tokens = gg.tensor(rng.integers(0, 50, (8, 4)), device=dev)
    labels = gg.tensor(rng.integers(0, 10, 8), device=dev)

    def step(lab):
        opt.zero_grad()
        logits = mlp(emb(tokens).reshape(8, 64))
        loss = gg.nn.functional.cross_entropy(logits, lab)
        loss.backward()
        opt.step()
        return loss

    step(labels)  # first step: kernels compiled, optimizer tables uploaded
    gg.cuda.synchronize()
    result = {"steps": []}
    for _ in range(2):
        before = (checks.host_reads(), simt_cupy.host_reads)
        loss = step(labels)
        result["steps"].append([checks.host_reads() - before[0], simt_cupy.host_reads - before[1]])
    before = simt_cupy.host_reads
    result["loss"] = loss.item()
    result["item_reads"] = simt_cupy.host_reads - before
    bad = gg.tensor(np.array([0, 1, 2, 99, 4, 5, 6, 7]), device=dev)
    before = (checks.host_reads(), simt_cupy.host_reads)
    loss = step(bad)  # no error yet: the check is deferred
    result["bad_step_reads"] = [checks.host_reads() - before[0], simt_cupy.host_reads - before[1]]
    try:
        loss.item()
        result["bad_error"] = None
    except ValueError as exc:
        result["bad_error"] = str(exc)
    result["kernels"] = sorted({name for name, *_ in simt_cupy.launches})
    print(json.dumps(result))


if __name__ == "__main__":
    main()
