"""Static vs dynamic graphs: the same digits training written both ways.

Dynamic (define-by-run, like Chainer and PyTorch): every step builds a fresh tape of Tensors and
walks it backward. Static (build once, run many times, like Theano and TensorFlow 1):
``gg.compile`` runs the step once while recording a flat program of array calls -- forward,
backward, optimizer update -- and later calls replay that program with no Tensors and no tape.
Both runs start from the same seed, so they compute the same numbers bit for bit on the CPU;
only the time differs. The program of the compiled step is printed at the end.

Run:  python examples/static_vs_dynamic.py [--device cpu|cuda|auto] [--epochs 5]
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

import gpugrad as gg
import gpugrad.functional as F
from gpugrad.data import DataLoader, load_digits


def train(dev, split, epochs: int, compiled: bool, seed: int):
    """(losses per step, final weights, seconds, the step function) for one run."""
    gg.manual_seed(seed)
    model = gg.nn.MLP([split.num_features, 128, split.num_classes], dropout=0.1).to(dev)
    opt = gg.optim.Adam(model.parameters(), lr=3e-3)
    loader = DataLoader(split.x_train, split.y_train, batch_size=64, seed=seed, device=dev)

    def train_step(x, y):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss  # a tensor: read it outside the step (.item() inside would not compile)

    step = gg.compile(train_step) if compiled else train_step
    losses = []
    t0 = time.perf_counter()
    for _ in range(epochs):
        for xb, yb in loader:
            losses.append(step(xb, yb))
    dev.synchronize()
    seconds = time.perf_counter() - t0
    losses = np.array([loss.item() for loss in losses])
    return losses, [p.numpy() for p in model.parameters()], seconds, step


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    try:
        dev = gg.device(args.device)
    except (ValueError, gg.DeviceError) as exc:  # one line, not a traceback
        p.exit(2, f"{p.prog}: error: {exc}\n")
    split = load_digits()
    eager = train(dev, split, args.epochs, compiled=False, seed=args.seed)
    static = train(dev, split, args.epochs, compiled=True, seed=args.seed)
    same = np.array_equal(eager[0], static[0]) and all(
        np.array_equal(a, b) for a, b in zip(eager[1], static[1]))
    diff = float(np.max(np.abs(eager[0] - static[0])))
    step = static[3]
    print(f"{len(eager[0])} steps on {dev}, {step.traces} trace(s) (the last batch is smaller)")
    print(f"dynamic (eager) : {eager[2]:.3f} s, final loss {eager[0][-1]:.4f}")
    print(f"static (compile): {static[2]:.3f} s, final loss {static[0][-1]:.4f}")
    print(f"speedup: {eager[2] / static[2]:.2f}x")
    print(f"identical losses and weights: {same}")
    print(f"max loss difference: {diff:.3g}")
    print()
    print(step.programs[0])
    return 0


if __name__ == "__main__":
    sys.exit(main())
