"""Logistic regression from scratch: raw tensors, the tutorial's loss, a hand-written SGD step.

No nn, no optim: the model is a weight vector and a bias, the loss is binary cross-entropy written
out from the sigmoid, and the update is the textbook step, in place under no_grad:

    p = sigmoid(X @ w + b)
    L = -mean(y * log(p) + (1 - y) * log(1 - p))
    w -= lr * dL/dw,  b -= lr * dL/db

Run:  python examples/from_scratch.py [--device cpu|cuda|auto] [--steps 300] [--lr 0.5]
"""

from __future__ import annotations

import argparse
import sys

import gpugrad as gg
from gpugrad.data import load_breast_cancer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    parser.add_argument("--steps", type=int, default=300, help="full-batch steps (default 300)")
    parser.add_argument("--lr", type=float, default=0.5, help="learning rate (default 0.5)")
    args = parser.parse_args(argv)

    try:
        dev = gg.device(args.device)
    except (ValueError, gg.DeviceError) as exc:  # one line, not a traceback
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
    split = load_breast_cancer()  # standardized features, labels 0/1
    x, y = gg.tensor(split.x_train, device=dev), gg.tensor(split.y_train, device=dev).float()
    w = gg.zeros(split.num_features, device=dev, requires_grad=True)
    b = gg.zeros((), device=dev, requires_grad=True)

    for step in range(args.steps):
        p = gg.sigmoid(x @ w + b)
        p = gg.clip(p, 1e-7, 1 - 1e-7)  # log(0) guard, as F.binary_cross_entropy clamps
        loss = -(y * gg.log(p) + (1 - y) * gg.log(1 - p)).mean()
        loss.backward()
        with gg.no_grad():  # the update is not part of the model: record nothing
            w -= args.lr * w.grad
            b -= args.lr * b.grad
        w.grad = b.grad = None
        if step % 100 == 0 or step == args.steps - 1:
            print(f"step {step:4d}  loss {loss.item():.4f}")

    with gg.no_grad():
        x_test = gg.tensor(split.x_test, device=dev)
        pred = (x_test @ w + b) > 0
        correct = (pred == gg.tensor(split.y_test, device=dev).astype(bool)).float().mean()
    print(f"device: {dev}")
    print(f"test accuracy: {correct.item():.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
