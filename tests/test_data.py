"""Bundled datasets (gpugrad.data loaders) and the DataLoader."""

from __future__ import annotations

import numpy as np
import pytest

import gpugrad as gg
from gpugrad import data
from gpugrad.data import DataLoader, Split

LOADERS = [data.load_digits, data.load_breast_cancer, data.load_diabetes]


# ----------------------------------------------------------------------------- bundled files


@pytest.mark.parametrize(
    "name, n, d, dtype",
    [("digits", 1797, 64, np.uint8), ("breast_cancer", 569, 30, np.float64),
     ("diabetes", 442, 10, np.float64)],
)  # fmt: skip
def test_files_load_without_pickle(name: str, n: int, d: int, dtype: type) -> None:
    with np.load(data._DATA_DIR / f"{name}.npz", allow_pickle=False) as f:
        assert f["x"].shape == (n, d) and f["x"].dtype == dtype
        assert f["y"].shape == (n,)
        assert len(f["feature_names"]) == d


def test_digits_raw_values() -> None:
    raw = data._raw("digits")
    assert raw["x"].min() == 0 and raw["x"].max() == 16
    assert np.bincount(raw["y"]).tolist() == [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]
    # First image of scikit-learn's load_digits (a zero).
    assert raw["x"][0, :8].tolist() == [0, 0, 5, 13, 9, 1, 0, 0] and raw["y"][0] == 0


# ----------------------------------------------------------------------------- splits


@pytest.mark.parametrize(
    "load, n, d, classes",
    [(data.load_digits, 1797, 64, 10), (data.load_breast_cancer, 569, 30, 2),
     (data.load_diabetes, 442, 10, None)],
)  # fmt: skip
def test_split_shapes_and_dtypes(load, n: int, d: int, classes: int | None) -> None:
    s = load()
    assert isinstance(s, Split)
    assert len(s.x_train) + len(s.x_test) == n
    assert abs(len(s.x_test) - 0.2 * n) <= (classes or 1)  # per-class rounding
    assert s.x_train.shape[1] == s.x_test.shape[1] == d == s.num_features
    assert s.x_train.dtype == s.x_test.dtype == np.float32
    assert s.num_classes == classes
    if classes is None:
        assert s.task == "regression"
        assert s.y_train.dtype == np.float32 and s.y_train.shape == (len(s.x_train), 1)
    else:
        assert s.task == "classification"
        assert s.y_train.dtype == s.y_test.dtype == np.int64
        assert set(np.unique(s.y_test)) == set(range(classes))
    assert len(s.feature_names) == d


def test_breast_cancer_class_counts() -> None:
    s = data.load_breast_cancer(normalize=False)
    y = np.concatenate([s.y_train, s.y_test])
    assert np.bincount(y).tolist() == [212, 357]
    assert s.target_names == ("malignant", "benign")


@pytest.mark.parametrize("load", LOADERS)
def test_split_is_deterministic(load) -> None:
    a, b, c = load(seed=3), load(seed=3), load(seed=4)
    for f in ("x_train", "y_train", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f))
    assert not np.array_equal(a.x_test, c.x_test)


@pytest.mark.parametrize("stratify", [True, False])
def test_split_indices_partition(stratify: bool) -> None:
    y = np.repeat(np.arange(5), [10, 20, 30, 7, 33])
    tr, te = data._split_indices(y, 0.25, seed=1, stratify=stratify)
    assert np.intersect1d(tr, te).size == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([tr, te])), np.arange(len(y)))
    if stratify:  # each class keeps its share of the test set, up to rounding
        np.testing.assert_allclose(np.bincount(y[te]), np.bincount(y) * 0.25, atol=0.5)


def test_no_overlap_in_real_split() -> None:
    s = data.load_breast_cancer(normalize=False)  # rows are unique in this dataset
    train = {r.tobytes() for r in s.x_train}
    assert not any(r.tobytes() in train for r in s.x_test)


def test_test_fraction_validated() -> None:
    with pytest.raises(ValueError):
        data.load_digits(test_fraction=1.0)
    assert len(data.load_digits(test_fraction=0.0).x_test) == 0


def test_digits_normalization_is_fixed_scale() -> None:
    raw, norm = data.load_digits(normalize=False), data.load_digits()
    np.testing.assert_allclose(norm.x_train, raw.x_train / 16)
    np.testing.assert_allclose(norm.x_test, raw.x_test / 16)
    assert norm.x_train.min() == 0 and norm.x_train.max() == 1


@pytest.mark.parametrize("load", [data.load_breast_cancer, data.load_diabetes])
def test_normalization_uses_train_stats_only(load) -> None:
    raw, norm = load(normalize=False), load()
    mean, std = raw.x_train.astype(np.float64).mean(0), raw.x_train.astype(np.float64).std(0)
    np.testing.assert_allclose(norm.x_mean, mean, rtol=1e-5)
    np.testing.assert_allclose(norm.x_std, std, rtol=1e-5)
    np.testing.assert_allclose(norm.x_train, (raw.x_train - mean) / std, atol=1e-5)
    np.testing.assert_allclose(norm.x_test, (raw.x_test - mean) / std, atol=1e-5)
    np.testing.assert_allclose(norm.x_train.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(norm.x_train.std(0), 1, atol=1e-5)
    assert np.abs(norm.x_test.mean(0)).max() > 1e-3  # test set was not used for the stats


def test_diabetes_target_roundtrip() -> None:
    raw, norm = data.load_diabetes(normalize=False), data.load_diabetes()
    assert raw.y_mean is None and raw.target_to_original(raw.y_test) is raw.y_test
    assert norm.y_mean == pytest.approx(raw.y_train.mean())
    np.testing.assert_allclose(norm.y_train.mean(), 0, atol=1e-5)
    np.testing.assert_allclose(norm.target_to_original(norm.y_test), raw.y_test, atol=1e-3)
    assert 25 <= raw.y_train.min() and raw.y_train.max() <= 346
    assert data.load_diabetes(normalize_target=False).y_mean is None


def test_load_dataset_by_name() -> None:
    assert data.load_dataset("breast-cancer", seed=1).name == "breast_cancer"
    with pytest.raises(ValueError, match="unknown dataset"):
        data.load_dataset("mnist")


# ----------------------------------------------------------------------------- DataLoader



def _devices() -> list[str]:
    try:
        return ["cpu", "cuda"] if gg.cuda.is_available() else ["cpu"]
    except AttributeError:  # core not there yet: the fixture below skips
        return ["cpu"]


@pytest.fixture(params=_devices())
def device(request) -> str:
    if not hasattr(gg, "tensor"):
        pytest.skip("gpugrad core (gg.tensor) not available")
    return request.param


def _ids(n: int = 10) -> tuple[np.ndarray, np.ndarray]:
    # Every sample carries its own index, so batches can be traced back to samples.
    return np.arange(n, dtype=np.float32)[:, None] * np.ones(3, np.float32), np.arange(n)


def _epoch(loader: DataLoader) -> list[np.ndarray]:
    out = []
    for xb, yb in loader:
        assert isinstance(xb, gg.Tensor) and isinstance(yb, gg.Tensor)
        x, y = xb.numpy(), yb.numpy()
        np.testing.assert_array_equal(x[:, 0], y)  # x and y rows stay paired
        out.append(y)
    return out


@pytest.mark.parametrize(
    "n, bs, drop_last, sizes",
    [(10, 3, False, [3, 3, 3, 1]), (10, 3, True, [3, 3, 3]), (10, 5, True, [5, 5]),
     (10, 20, False, [10]), (10, 20, True, [])],
)  # fmt: skip
def test_batch_counts(device: str, n: int, bs: int, drop_last: bool, sizes: list[int]) -> None:
    loader = DataLoader(*_ids(n), batch_size=bs, drop_last=drop_last, device=device)
    assert len(loader) == len(sizes)
    assert [len(b) for b in _epoch(loader)] == sizes


def test_every_sample_once_per_epoch(device: str) -> None:
    loader = DataLoader(*_ids(37), batch_size=8, device=device)
    for _ in range(3):
        np.testing.assert_array_equal(np.sort(np.concatenate(_epoch(loader))), np.arange(37))


def test_same_seed_same_batches_and_epochs_differ(device: str) -> None:
    a = DataLoader(*_ids(50), batch_size=16, seed=7, device=device)
    b = DataLoader(*_ids(50), batch_size=16, seed=7, device=device)
    a0, a1 = np.concatenate(_epoch(a)), np.concatenate(_epoch(a))
    np.testing.assert_array_equal(a0, np.concatenate(_epoch(b)))
    np.testing.assert_array_equal(a1, np.concatenate(_epoch(b)))
    assert not np.array_equal(a0, a1)
    np.testing.assert_array_equal(a0, a.permutation(0))  # the order is the host permutation
    c = DataLoader(*_ids(50), batch_size=16, seed=8, device=device)
    assert not np.array_equal(a0, np.concatenate(_epoch(c)))


def test_epoch_can_be_set_to_resume(device: str) -> None:
    a = DataLoader(*_ids(20), batch_size=4, seed=1, device=device)
    _epoch(a)
    second = np.concatenate(_epoch(a))
    b = DataLoader(*_ids(20), batch_size=4, seed=1, device=device)
    b.epoch = 1
    np.testing.assert_array_equal(np.concatenate(_epoch(b)), second)


def test_no_shuffle_keeps_order(device: str) -> None:
    loader = DataLoader(*_ids(10), batch_size=4, shuffle=False, device=device)
    np.testing.assert_array_equal(np.concatenate(_epoch(loader)), np.arange(10))


def test_from_split_dtypes_and_device(device: str) -> None:
    s = data.load_digits()
    train = DataLoader.from_split(s, batch_size=100, device=device)
    test = DataLoader.from_split(s, train=False, batch_size=1000, device=device)
    assert train.shuffle and not test.shuffle and len(test) == 1
    assert train.num_samples == len(s.x_train)
    xb, yb = next(iter(train))
    assert xb.shape == (100, 64) and yb.shape == (100,)
    assert np.dtype(xb.numpy().dtype) == np.float32 and np.dtype(yb.numpy().dtype) == np.int64
    assert str(xb.device).startswith(device) and str(yb.device).startswith(device)
    xt, _ = next(iter(test))
    np.testing.assert_array_equal(xt.numpy(), s.x_test)


def test_loader_validates_inputs(device: str) -> None:
    x, y = _ids(10)
    with pytest.raises(ValueError, match="differ in length"):
        DataLoader(x, y[:9])
    with pytest.raises(ValueError, match="batch_size"):
        DataLoader(x, y, batch_size=0)


@pytest.mark.skipif(not gg.cuda.is_available(), reason="needs a CUDA device")
def test_loader_accepts_gpu_arrays():
    x = gg.tensor(np.arange(12.0).reshape(6, 2), device="cuda").data  # raw CuPy arrays
    y = gg.tensor(np.arange(6), device="cuda").data
    (xb, yb), (xb2, _) = list(DataLoader(x, y, batch_size=4, shuffle=False, device="cuda"))
    np.testing.assert_array_equal(xb.numpy(), np.arange(8.0).reshape(4, 2))
    np.testing.assert_array_equal(yb.numpy(), [0, 1, 2, 3])
    assert xb2.shape == (2, 2) and str(xb.device) == "cuda:0"
