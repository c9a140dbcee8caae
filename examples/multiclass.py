"""Multi-class classification: softmax + cross-entropy on the bundled handwritten digits.

An MLP 64-128-10 maps each 8x8 image to 10 logits; ``F.cross_entropy`` applies the (stable)
log-softmax and picks the true class, and ``gg.softmax`` turns logits into class probabilities.

Run:  python examples/multiclass.py [--device cpu|cuda|auto] [--epochs 20]
"""

from __future__ import annotations

import argparse
import sys
import time

import gpugrad as gg
import gpugrad.functional as F
from gpugrad.data import DataLoader, load_digits


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    try:
        dev = gg.device(args.device)
    except (ValueError, gg.DeviceError) as exc:  # one line, not a traceback
        p.exit(2, f"{p.prog}: error: {exc}\n")
    split = load_digits()  # pixels scaled to [0, 1]
    # Z-score each pixel with training statistics: centred inputs train faster and generalize
    # better than [0, 1] pixels (a constant pixel keeps std 1 to avoid dividing by zero).
    mean, std = split.x_train.mean(axis=0), split.x_train.std(axis=0)
    std[std == 0] = 1.0
    x_train, x_test = (split.x_train - mean) / std, (split.x_test - mean) / std
    gg.manual_seed(args.seed)
    model = gg.nn.MLP([split.num_features, 128, split.num_classes], device=dev)
    opt = gg.optim.Adam(model.parameters(), lr=3e-3)
    loader = DataLoader(x_train, split.y_train, batch_size=32, seed=args.seed, device=dev)

    t0 = time.perf_counter()
    for epoch in range(args.epochs):
        total = 0.0
        for xb, yb in loader:
            opt.zero_grad()
            loss = F.cross_entropy(model(xb), yb)  # softmax + negative log-likelihood, fused
            loss.backward()
            opt.step()
            total += loss.item() * xb.shape[0]
        if epoch % 5 == 4 or epoch == args.epochs - 1:
            print(f"epoch {epoch + 1:>2}: train loss {total / loader.num_samples:.4f}")

    model.eval()
    with gg.no_grad():
        probs = gg.softmax(model(gg.tensor(x_test, device=dev)), axis=1)
    pred = probs.numpy().argmax(axis=1)
    acc = float((pred == split.y_test).mean())
    print(f"device {dev}, {time.perf_counter() - t0:.1f} s; mean max-probability "
          f"{probs.numpy().max(axis=1).mean():.3f}")
    print(f"test accuracy: {acc:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
