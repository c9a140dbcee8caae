"""Coverage-guided fuzzing of ``gg.load`` with atheris (``pip install atheris``).

    python tools/fuzz_checkpoint.py -max_total_time=300        # five minutes
    python tools/fuzz_checkpoint.py -runs=100000 corpus_dir/   # keep the interesting inputs

Starts from real checkpoints (written here) and lets libFuzzer mutate them, steered by coverage of
``gpugrad.serialization`` and ``json``. Any exception other than ``ValueError`` is a crash and is
reported with the input that caused it (libFuzzer writes it to ``crash-*``); so is an input whose
traced memory exceeds 64x its size plus 1 MiB, or one that takes longer than ``-timeout``.
``tests/test_checkpoint_fuzz.py`` runs a short hypothesis version of this in the test suite.
"""

from __future__ import annotations

import os
import sys
import tempfile
import tracemalloc

import atheris

with atheris.instrument_imports():
    import json  # noqa: F401 - instrumented for coverage

    import gpugrad as gg
    from gpugrad import serialization

MEMORY_FACTOR, MEMORY_SLACK = 64, 1 << 20
DEVICE = gg.device("cpu")


def seeds() -> list[bytes]:
    """A few valid checkpoints for the corpus: a model with optimizer state, and odd structures."""
    gg.manual_seed(0)
    model = gg.nn.MLP([6, 5, 3])
    opt = gg.optim.Adam(model.parameters(), lr=0.01)
    model(gg.ones(2, 6)).sum().backward()
    opt.step()
    objects = [
        {"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": 3},
        {"t": (1, None, [True, 2.5, "x"]), "e": gg.zeros(0, 2), "s": gg.tensor(1.5)},
        [[[[{"k": gg.ones(2, dtype="int64")}]]]],
    ]
    out = []
    with tempfile.TemporaryDirectory() as d:
        for i, obj in enumerate(objects):
            path = os.path.join(d, str(i))
            gg.save(obj, path)
            with open(path, "rb") as f:
                out.append(f.read())
    return out


def test_one_input(data: bytes) -> None:
    tracemalloc.start()
    try:
        serialization._load_bytes(data, "<fuzz>", DEVICE)
    except ValueError:
        pass
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    if peak > MEMORY_FACTOR * len(data) + MEMORY_SLACK:
        raise MemoryError(f"loading {len(data)} bytes took {peak} bytes of memory")


def main() -> None:
    argv = list(sys.argv)
    if not any(not a.startswith("-") for a in argv[1:]):  # no corpus dir given: seed one
        corpus = tempfile.mkdtemp(prefix="gpugrad-fuzz-")
        for i, blob in enumerate(seeds()):
            with open(os.path.join(corpus, f"seed{i}"), "wb") as f:
                f.write(blob)
        argv.append(corpus)
    atheris.Setup(argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
