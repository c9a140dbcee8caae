"""Bundled real datasets and a minimal, device-aware ``DataLoader``.

The datasets live in ``gpugrad/datasets/*.npz`` (see the README there for sources and licences),
so nothing is downloaded. Splitting and shuffling run on the host from a seed, which is what makes
CPU and GPU runs see identical batches. Importing this module needs only NumPy.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .tensor import Tensor

__all__ = [
    "DATASETS",
    "DataLoader",
    "Split",
    "load_breast_cancer",
    "load_dataset",
    "load_diabetes",
    "load_digits",
]

_DATA_DIR = Path(__file__).resolve().parent / "datasets"


# eq=False: dataclass equality would compare arrays elementwise and raise.
@dataclass(frozen=True, eq=False)
class Split:
    """A train/test split of one dataset, as host NumPy arrays.

    Features are float32 ``(n, d)``; classification labels int64 ``(n,)``; regression targets
    float32 ``(n, 1)``. ``x_mean``/``x_std`` are the statistics the features were normalized with
    (``x = (raw - x_mean) / x_std``; zeros and ones when not normalized); ``y_mean``/``y_std`` the
    same for a standardized regression target, else ``None``.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    name: str
    num_classes: int | None
    feature_names: tuple[str, ...]
    target_names: tuple[str, ...] | None
    x_mean: np.ndarray
    x_std: np.ndarray
    y_mean: float | None = None
    y_std: float | None = None

    @property
    def task(self) -> str:
        return "regression" if self.num_classes is None else "classification"

    @property
    def num_features(self) -> int:
        return int(self.x_train.shape[1])

    def target_to_original(self, y: Any) -> Any:
        """Map (predicted) regression targets back to the dataset's original units."""
        if self.y_mean is None or self.y_std is None:
            return y
        return y * self.y_std + self.y_mean


@functools.cache
def _raw(name: str) -> dict[str, np.ndarray]:
    with np.load(_DATA_DIR / f"{name}.npz", allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    for a in arrays.values():
        a.flags.writeable = False  # shared by every call through the cache
    return arrays


def _check_fraction(test_fraction: float) -> None:
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction!r}")


def _split_indices(
    y: np.ndarray, test_fraction: float, seed: int, stratify: bool
) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    groups = [np.flatnonzero(y == c) for c in np.unique(y)] if stratify else [np.arange(len(y))]
    train, test = [], []
    for idx in groups:
        idx = rng.permutation(idx)
        n_test = int(round(len(idx) * test_fraction))
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    # Sorted, so a split is a pure function of the seed; the loader does the shuffling.
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def _names(arrays: dict[str, np.ndarray], key: str) -> tuple[str, ...] | None:
    return tuple(str(s) for s in arrays[key]) if key in arrays else None


def _make_split(
    name: str,
    test_fraction: float,
    seed: int,
    normalize: bool,
    *,
    classification: bool,
    pixel_scale: float | None = None,
    normalize_target: bool = False,
) -> Split:
    _check_fraction(test_fraction)
    raw = _raw(name)
    x = raw["x"].astype(np.float64)
    y = raw["y"]
    tr, te = _split_indices(y, test_fraction, seed, stratify=classification)

    d = x.shape[1]
    mean, std = np.zeros(d), np.ones(d)
    if normalize and pixel_scale is not None:
        # Pixel counts share one known range; a fixed scale keeps the images comparable.
        std = np.full(d, pixel_scale)
    elif normalize:
        mean, std = x[tr].mean(axis=0), x[tr].std(axis=0)
        std = np.where(std > 0, std, 1.0)  # a constant column would divide by zero
    x = (x - mean) / std

    y_mean = y_std = None
    if classification:
        y = y.astype(np.int64)
        num_classes = int(y.max()) + 1
    else:
        y = y.astype(np.float64).reshape(-1, 1)
        num_classes = None
        if normalize_target:
            y_mean, y_std = float(y[tr].mean()), float(y[tr].std())
            y = (y - y_mean) / y_std
        y = y.astype(np.float32)

    x = x.astype(np.float32)
    return Split(
        x_train=x[tr],
        y_train=y[tr],
        x_test=x[te],
        y_test=y[te],
        name=name,
        num_classes=num_classes,
        feature_names=_names(raw, "feature_names") or (),
        target_names=_names(raw, "target_names"),
        x_mean=mean.astype(np.float32),
        x_std=std.astype(np.float32),
        y_mean=y_mean,
        y_std=y_std,
    )


def load_digits(test_fraction: float = 0.2, seed: int = 0, normalize: bool = True) -> Split:
    """UCI handwritten digits: 1,797 8x8 images, 64 features, 10 classes (stratified split).

    ``normalize=True`` divides the pixel counts (0..16) by 16, so features lie in [0, 1].
    """
    return _make_split(
        "digits", test_fraction, seed, normalize, classification=True, pixel_scale=16.0
    )


def load_breast_cancer(test_fraction: float = 0.2, seed: int = 0, normalize: bool = True) -> Split:
    """Breast Cancer Wisconsin (Diagnostic): 569 samples, 30 features, 2 classes.

    Labels: 0 = malignant, 1 = benign. ``normalize=True`` z-scores the features with the
    mean and standard deviation of the training part only. The split is stratified.
    """
    return _make_split("breast_cancer", test_fraction, seed, normalize, classification=True)


def load_diabetes(
    test_fraction: float = 0.2,
    seed: int = 0,
    normalize: bool = True,
    normalize_target: bool | None = None,
) -> Split:
    """Diabetes regression: 442 patients, 10 raw features, target = progression after a year.

    ``normalize=True`` z-scores the features with training statistics. The target (25..346)
    is z-scored too when ``normalize_target`` is true (default: same as ``normalize``); use
    ``split.target_to_original`` to report predictions or errors in the original units.
    """
    if normalize_target is None:
        normalize_target = normalize
    return _make_split(
        "diabetes",
        test_fraction,
        seed,
        normalize,
        classification=False,
        normalize_target=normalize_target,
    )


DATASETS: dict[str, Callable[..., Split]] = {
    "digits": load_digits,
    "breast_cancer": load_breast_cancer,
    "diabetes": load_diabetes,
}


def load_dataset(name: str, **kwargs: Any) -> Split:
    """Load a bundled dataset by name (one of ``DATASETS``)."""
    try:
        loader = DATASETS[name.replace("-", "_")]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; choose from {sorted(DATASETS)}") from None
    return loader(**kwargs)


def _to_device(a: Any, device: Any) -> Tensor:
    if isinstance(a, Tensor):
        return a if device is None else a.to(device)
    if not hasattr(a, "__cuda_array_interface__"):  # GPU arrays go as they are (NumPy refuses)
        a = np.asarray(a)  # lists as arrays: float64 data stays float64
    return Tensor(a, device=device)


class DataLoader:
    """Iterate over ``(xb, yb)`` mini-batches of gpugrad Tensors.

    The whole dataset is copied to ``device`` once, here. Each pass builds its permutation on
    the host from ``np.random.default_rng(seed + epoch)``, so every device sees the same
    batches, then gathers the device arrays with it once (one index upload and one gather per
    pass, instead of one per batch); batches are slices of that gathered copy. ``epoch`` counts
    passes and can be set to resume a run.

    Data parallel: with ``world_size=N`` and ``rank=r`` (from ``gg.distributed``), ``batch_size``
    is the per-rank batch ``b``. Every rank builds the same permutation; global batch ``i`` is
    ``perm[i*N*b:(i+1)*N*b]`` (exactly what one process with ``batch_size=N*b`` would take) and
    rank ``r`` gets its ``r``-th contiguous slice of ``b`` samples, so the shards are disjoint and
    together cover the epoch. A short final global batch of ``R < N*b`` samples is dropped with
    ``drop_last=True``; otherwise every rank gets ``ceil(R/N)`` of it, the shortfall taken again
    from the start of the permutation, so all ranks run the same number of steps (which their
    collectives need) and that last batch may repeat up to ``N-1`` samples.
    """

    def __init__(
        self,
        x: Any,
        y: Any,
        batch_size: int = 64,
        shuffle: bool = True,
        drop_last: bool = False,
        seed: int = 0,
        device: Any = None,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if int(batch_size) < 1:
            raise ValueError(f"DataLoader: batch_size must be >= 1, got {batch_size!r}")
        if int(world_size) < 1 or not 0 <= int(rank) < int(world_size):
            raise ValueError(f"DataLoader: need 0 <= rank < world_size, got rank={rank!r}, "
                             f"world_size={world_size!r}")
        tx, ty = _to_device(x, device), _to_device(y, device)
        if tx.shape[0] != ty.shape[0]:
            raise ValueError(
                f"DataLoader: x and y differ in length: {tuple(tx.shape)} vs {tuple(ty.shape)}"
            )
        if str(tx.device) != str(ty.device):
            raise ValueError(f"DataLoader: x on {tx.device} but y on {ty.device}")
        self.device = tx.device
        self._x, self._y = tx.data, ty.data
        self.num_samples = int(tx.shape[0])
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.seed = seed
        self.rank, self.world_size = int(rank), int(world_size)
        self.epoch = 0

    @classmethod
    def from_split(
        cls, split: Split, train: bool = True, shuffle: bool | None = None, **kwargs: Any
    ) -> DataLoader:
        """Loader over the train (default) or test part of ``split``; shuffles only for train."""
        x, y = (split.x_train, split.y_train) if train else (split.x_test, split.y_test)
        return cls(x, y, shuffle=train if shuffle is None else shuffle, **kwargs)

    def __len__(self) -> int:
        global_batch = self.batch_size * self.world_size
        if self.drop_last:
            return self.num_samples // global_batch
        return -(-self.num_samples // global_batch)

    def permutation(self, epoch: int) -> np.ndarray:
        """The host-side sample order used for pass number ``epoch``."""
        if not self.shuffle:
            return np.arange(self.num_samples)
        return np.random.default_rng(self.seed + epoch).permutation(self.num_samples)

    def shard(self, epoch: int) -> np.ndarray:
        """The sample indices this rank takes in pass ``epoch``, in order (see the class doc)."""
        perm, n, b = self.permutation(epoch), self.world_size, self.batch_size
        full = (self.num_samples // (n * b)) * n * b
        mine = perm[:full].reshape(-1, n, b)[:, self.rank].reshape(-1)
        rest = self.num_samples - full
        if rest == 0 or self.drop_last:
            return mine
        each = -(-rest // n)
        tail = np.resize(np.concatenate([perm[full:], perm]), each * n)  # wraps to fill
        return np.concatenate([mine, tail[self.rank * each:(self.rank + 1) * each]])

    def __iter__(self) -> Iterator[tuple[Any, Any]]:
        # Not a generator itself: the epoch is claimed when iter() is called, not at first next().
        epoch, self.epoch = self.epoch, self.epoch + 1
        x, y = self._x, self._y
        if self.world_size > 1:
            with self.device.activate():
                order = self.device.xp.asarray(self.shard(epoch))
                return self._batches(x[order], y[order])
        if self.shuffle:
            with self.device.activate():  # the upload and the gathers run on the loader's GPU
                perm = self.device.xp.asarray(self.permutation(epoch))
                x, y = x[perm], y[perm]
        return self._batches(x, y)

    def _batches(self, x: Any, y: Any) -> Iterator[tuple[Any, Any]]:
        bs, total = self.batch_size, x.shape[0]
        for i in range(len(self)):
            sl = slice(i * bs, min((i + 1) * bs, total))
            yield Tensor._wrap(x[sl], self.device), Tensor._wrap(y[sl], self.device)

    def __repr__(self) -> str:
        return (
            f"DataLoader(num_samples={self.num_samples}, batch_size={self.batch_size}, "
            f"shuffle={self.shuffle}, drop_last={self.drop_last}, seed={self.seed}, "
            f"device={self.device}"
            + (f", rank={self.rank}, world_size={self.world_size})" if self.world_size > 1 else ")")
        )
