"""``parity``: the same seeded training run on several devices, step by step.

``gpugrad train --parity`` and the device-parity tests use it. Each run re-seeds the host
generator, so every device starts from bit-identical weights (initializers draw on the host) and
sees the same batches (the loader shuffles on the host); what remains is the devices' own
arithmetic (BLAS vs cuBLAS summation order, fused kernels), which this measures.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .backend import device as get_device
from .backend.rng import manual_seed
from .creation import empty
from .data import DataLoader, load_digits
from .nn.layers import MLP
from .ops.cross_entropy import cross_entropy
from .optim import OPTIMIZERS, SGD

__all__ = ["ParityResult", "parity"]


@dataclass
class ParityResult:
    """Per-step training losses per device, and how far each device drifts from the first."""

    devices: list[str]
    losses: dict[str, list[float]]
    max_abs_diff: float
    max_rel_diff: float
    seconds: dict[str, float] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)

    def ok(self, rtol: float = 1e-4) -> bool:
        """Whether every device's losses stay within ``rtol`` (relative) of the first device's."""
        return self.max_rel_diff <= rtol

    def __str__(self) -> str:
        steps = len(next(iter(self.losses.values()), []))
        head = " vs ".join(self.devices)
        lines = [f"parity over {steps} steps ({head}): max |diff| {self.max_abs_diff:.3g}, "
                 f"max rel diff {self.max_rel_diff:.3g}"]
        for key, secs in self.seconds.items():
            lines.append(f"  {key}: {secs:.2f} s, final loss {self.losses[key][-1]:.6f}")
        return "\n".join(lines)


def _train_losses(device: str, steps: int, seed: int, sizes: Sequence[int], batch_size: int,
                  lr: float, optimizer: str, dtype: Any, dropout: float) -> list[float]:
    split = load_digits(seed=seed)
    dev = get_device(device)
    manual_seed(seed)
    model = MLP(sizes, device=dev, dtype=dtype, dropout=dropout)
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"parity: optimizer must be one of {', '.join(map(repr, OPTIMIZERS))}, "
                         f"got {optimizer!r}")
    cls = OPTIMIZERS[optimizer]
    extra = {"momentum": 0.9} if cls is SGD else {}  # plain SGD would crawl through 200 steps
    opt = cls(model.parameters(), lr=lr, **extra)
    x_train = split.x_train.astype(dtype)
    loader = DataLoader(x_train, split.y_train, batch_size=batch_size, shuffle=True,
                        drop_last=True, seed=seed, device=dev)
    # Losses stay on the device until the end: no host sync per step.
    out = empty(steps, dtype=np.float64, device=dev).data
    done = 0
    while done < steps:
        for xb, yb in loader:
            loss = cross_entropy(model(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            with dev.activate():
                out[done] = loss.data
            done += 1
            if done == steps:
                break
    return [float(v) for v in dev.backend.to_host(out)]


def parity(steps: int = 200, seed: int = 0, devices: Sequence[str] = ("cpu", "cuda"),
           sizes: Sequence[int] = (64, 128, 10), batch_size: int = 64, lr: float = 0.05,
           optimizer: str = "sgd", dtype: Any = np.float32, dropout: float = 0.0) -> ParityResult:
    """Train the same MLP on the bundled digits on each of ``devices`` and compare the losses.

    Every run starts from ``gg.manual_seed(seed)`` with the same batches (``batch_size``, last
    partial batch dropped). Differences are measured against the first device:
    ``max_abs_diff = max |l_d - l_0|`` and ``max_rel_diff = max |l_d - l_0| / |l_0|`` over steps and
    devices. A device that is not available raises ``gg.DeviceError`` (with the reason).
    Naming one device twice (``("cpu", "cpu")``) checks that reruns are bit-identical.
    ``dropout`` > 0 adds dropout after each hidden activation: its masks are device-identical
    too, so the losses still agree.
    """
    if int(steps) < 1:
        raise ValueError(f"parity: steps must be >= 1, got {steps!r}")
    if len(devices) < 1:
        raise ValueError("parity: give at least one device")
    dtype = np.dtype(dtype)
    losses: dict[str, list[float]] = {}
    seconds: dict[str, float] = {}
    keys = []
    for i, dev in enumerate(devices):
        key = str(dev) if str(dev) not in losses else f"{dev}#{i}"
        t0 = time.perf_counter()
        losses[key] = _train_losses(str(dev), int(steps), seed, tuple(sizes), batch_size, lr,
                                    optimizer, dtype, float(dropout))
        seconds[key] = time.perf_counter() - t0
        keys.append(key)
    ref = np.asarray(losses[keys[0]])
    max_abs = max_rel = 0.0
    for key in keys[1:]:
        diff = np.abs(np.asarray(losses[key]) - ref)
        max_abs = max(max_abs, float(diff.max()))
        with np.errstate(divide="ignore", invalid="ignore"):
            rel = np.where(diff == 0, 0.0, diff / np.abs(ref))
        max_rel = max(max_rel, float(rel.max()))
    config = dict(steps=int(steps), seed=seed, sizes=list(sizes), batch_size=batch_size, lr=lr,
                  optimizer=optimizer, dtype=str(dtype), dropout=float(dropout))
    return ParityResult(devices=keys, losses=losses, max_abs_diff=max_abs,
                        max_rel_diff=max_rel, seconds=seconds, config=config)
