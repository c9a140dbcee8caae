"""The textbook chain-rule example, made visible.

h = 1 / (1 + e^(-w*x)) is built from five elementary ops at x = 1, w = 0:

    h1 = w * x      h2 = -h1      h3 = exp(h2)      h4 = 1 + h3      h5 = 1 / h4

Reverse mode multiplies the local derivatives from the output back to w:
dh/dw = (-1/h4^2) * 1 * e^(h2) * (-1) * x = 0.25 at this point (sigmoid'(0) = 1/4).

Run:  python examples/worked_sigmoid.py [--device cpu|cuda|auto] [--dot graph.dot]
"""

from __future__ import annotations

import argparse
import sys

import gpugrad as gg


def build(device: str) -> tuple[gg.Tensor, gg.Tensor, gg.Tensor]:
    """Return (x, w, h5) with every intermediate named h1..h5 for the explain table."""
    x = gg.tensor(1.0, device=device)
    x.name = "x"
    w = gg.tensor(0.0, device=device, requires_grad=True)
    w.name = "w"
    h1 = w * x
    h1.name = "h1"
    h2 = -h1
    h2.name = "h2"
    h3 = gg.exp(h2)
    h3.name = "h3"
    h4 = 1 + h3
    h4.name = "h4"
    h5 = 1 / h4
    h5.name = "h5"
    return x, w, h5


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    parser.add_argument("--dot", metavar="PATH", help="also write the graph as Graphviz DOT text")
    args = parser.parse_args(argv)

    try:
        device = str(gg.device(args.device))
    except (ValueError, gg.DeviceError) as exc:  # one line, not a traceback
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
    x, w, h5 = build(device)
    # explain() replays the tape on its own, so it can run before backward() frees saved arrays.
    table = gg.explain(h5)
    h5.backward()

    print(f"device: {device}")
    print(f"h = 1/(1+exp(-w*x)) at x = {x.item():g}, w = {w.item():g}: h = {h5.item():.6g}")
    print(f"dh/dw = {w.grad.item():.6g}   (expected sigmoid'(0) = 0.25)")
    print()
    print(table)
    if args.dot:
        dot = gg.to_dot(h5)
        with open(args.dot, "w", encoding="utf-8") as f:
            f.write(dot + "\n")
        print(f"\nwrote Graphviz DOT to {args.dot} (render: dot -Tsvg {args.dot} -o graph.svg)")
        print(dot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
