"""The seeded host random generator behind ``gg.manual_seed``.

Everything random in gpugrad draws from it on the host (creation, initialisers, data shuffling,
dropout keys), so one seed gives bit-identical results on every device.
"""

from __future__ import annotations

import numpy as np

_rng = np.random.default_rng(0)


def manual_seed(seed: int) -> None:
    """Seed the host generator behind ``randn``/``rand``, every initializer and dropout."""
    global _rng
    _rng = np.random.default_rng(seed)


def host_rng() -> np.random.Generator:
    """The current host generator (replaced, not reseeded, by ``manual_seed``)."""
    return _rng
