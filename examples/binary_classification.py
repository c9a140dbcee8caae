"""Binary classification: sigmoid + binary cross-entropy on the bundled breast-cancer set.

An MLP 30-16-1 produces one logit per patient; ``gg.sigmoid`` turns it into the probability of a
benign tumour and ``F.binary_cross_entropy`` scores it. (``F.binary_cross_entropy_with_logits``
fuses the two and stays finite for extreme logits; the two-step form is shown here for clarity.)

Run:  python examples/binary_classification.py [--device cpu|cuda|auto] [--epochs 60]
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

import gpugrad as gg
import gpugrad.functional as F
from gpugrad.data import DataLoader, load_breast_cancer


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    try:
        dev = gg.device(args.device)
    except (ValueError, gg.DeviceError) as exc:  # one line, not a traceback
        p.exit(2, f"{p.prog}: error: {exc}\n")
    split = load_breast_cancer()  # features z-scored with training statistics
    # BCE wants float targets shaped like the predictions: (n, 1), 1.0 = benign.
    y_train = split.y_train.astype(np.float32).reshape(-1, 1)
    gg.manual_seed(args.seed)
    model = gg.nn.MLP([split.num_features, 16, 1], device=dev)
    opt = gg.optim.Adam(model.parameters(), lr=1e-3)
    loader = DataLoader(split.x_train, y_train, batch_size=32, seed=args.seed, device=dev)

    t0 = time.perf_counter()
    for epoch in range(args.epochs):
        total = 0.0
        for xb, yb in loader:
            opt.zero_grad()
            prob = gg.sigmoid(model(xb))
            loss = F.binary_cross_entropy(prob, yb)
            loss.backward()
            opt.step()
            total += loss.item() * xb.shape[0]
        if epoch % 20 == 19 or epoch == args.epochs - 1:
            print(f"epoch {epoch + 1:>3}: train loss {total / loader.num_samples:.4f}")

    model.eval()
    with gg.no_grad():
        prob = gg.sigmoid(model(gg.tensor(split.x_test, device=dev))).numpy()[:, 0]
    pred = (prob >= 0.5).astype(np.int64)
    acc = float((pred == split.y_test).mean())
    print(f"device {dev}, {time.perf_counter() - t0:.1f} s; "
          f"{int((pred != split.y_test).sum())} of {len(pred)} test patients misclassified")
    print(f"test accuracy: {acc:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
