"""One-off extraction of the datasets bundled in ``gpugrad/datasets/``.

Needs scikit-learn (``pip install scikit-learn``); it is NOT used at run time and scikit-learn
is not a dependency of gpugrad. Run from the repository root::

    python tools/make_datasets.py

It rewrites ``gpugrad/datasets/{digits,breast_cancer,diabetes}.npz`` from the copies of the
UCI datasets that scikit-learn ships, in the smallest exact dtypes, so they load with
``np.load(path, allow_pickle=False)``. See ``gpugrad/datasets/README.md`` for sources and licences.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn import datasets

OUT = Path(__file__).resolve().parent.parent / "gpugrad" / "datasets"


def _names(seq) -> np.ndarray:
    # Fixed-width unicode arrays, never object arrays: those would need pickle to load.
    return np.asarray([str(s) for s in seq], dtype=np.str_)


def _save(name: str, x: np.ndarray, y: np.ndarray, feature_names, target_names=None) -> None:
    arrays = {"x": x, "y": y, "feature_names": _names(feature_names)}
    if target_names is not None:
        arrays["target_names"] = _names(target_names)
    path = OUT / f"{name}.npz"
    np.savez_compressed(path, **arrays)
    with np.load(path, allow_pickle=False) as f:  # round-trip check
        for k, v in arrays.items():
            assert np.array_equal(f[k], v), (name, k)
    print(f"{path.name}: x{x.shape} {x.dtype}, y{y.shape} {y.dtype}, {path.stat().st_size} bytes")


def main() -> None:
    d = datasets.load_digits()
    x = d.data.astype(np.uint8)  # pixel counts 0..16, exact in uint8
    assert np.array_equal(x, d.data)
    _save("digits", x, d.target.astype(np.uint8), d.feature_names, d.target_names)

    b = datasets.load_breast_cancer()  # label 0 = malignant, 1 = benign (sklearn's convention)
    _save("breast_cancer", b.data, b.target.astype(np.uint8), b.feature_names, b.target_names)

    r = datasets.load_diabetes(scaled=False)  # raw units; the target is an integer measure
    y = r.target.astype(np.int16)
    assert np.array_equal(y, r.target)
    _save("diabetes", r.data, y, r.feature_names)


if __name__ == "__main__":
    main()
