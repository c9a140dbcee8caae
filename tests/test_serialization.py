"""gg.save / gg.load: nested round trips, atomic writes, rejection of non-checkpoint files, and
loading across devices."""

from __future__ import annotations

import io
import os
import pickle
import struct
import zipfile

import numpy as np
import pytest

import gpugrad as gg
import gpugrad.nn as nn
import gpugrad.optim as optim
from gpugrad import serialization
from gpugrad.serialization import load, save


def nested(device):
    gg.manual_seed(0)
    model = nn.MLP([4, 5, 3], device=device)
    opt = optim.Adam(model.parameters(), lr=0.01)
    model(gg.ones(2, 4, device=device)).sum().backward()
    opt.step()
    return {
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "epoch": 3,
        "best": 0.975,
        "name": "digits",
        "flags": [True, False, None],
        "shape": (2, 3),
        "history": [{"loss": 1.5, "acc": 0.5}, {"loss": float("nan")}],
        "host": np.arange(6, dtype=np.int32).reshape(2, 3),
        "scalar": np.float32(2.5),
        "w": gg.tensor([1.0, 2.0], device=device, requires_grad=True),
        "empty": gg.zeros(0, 3, device=device),
        "bools": gg.tensor([True, False], device=device),
    }


def assert_same(a, b, path="root"):
    if isinstance(a, gg.Tensor) or isinstance(a, np.ndarray):
        assert isinstance(b, gg.Tensor), path
        ha = a.numpy() if isinstance(a, gg.Tensor) else a
        assert ha.dtype == b.dtype and ha.shape == b.shape, path
        np.testing.assert_array_equal(ha, b.numpy(), err_msg=path)
    elif isinstance(a, dict):
        assert isinstance(b, dict) and list(a) == list(b), path
        for k in a:
            assert_same(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{path}.{i}")
    elif isinstance(a, float) and np.isnan(a):
        assert np.isnan(b), path
    else:
        assert a == b and type(a) is type(b) or isinstance(a, np.generic), path


def test_round_trip_nested_structure(device, tmp_path):
    obj = nested(device)
    path = tmp_path / "ckpt.safetensors"
    save(obj, path)
    back = load(path, device=device)
    assert_same(obj, back)
    assert back["scalar"] == 2.5
    assert list(back["optimizer"]["state"]) == [0, 1, 2, 3]  # int keys stay ints
    assert back["optimizer"]["param_groups"][0]["betas"] == (0.9, 0.999)
    assert back["w"].requires_grad and not back["model"]["0.weight"].requires_grad
    assert str(back["w"].device) == str(gg.device(device))
    # a plain safetensors file: other tools can read the tensors by their dotted names
    import safetensors.numpy

    raw = safetensors.numpy.load(path.read_bytes())
    assert "model.0.weight" in raw and "optimizer.state.0.exp_avg" in raw


def test_model_and_optimizer_resume_through_file(device, tmp_path):
    obj = nested(device)
    save(obj, str(tmp_path / "c.st"))
    back = load(str(tmp_path / "c.st"), device=device)
    gg.manual_seed(9)
    model = nn.MLP([4, 5, 3], device=device)
    model.load_state_dict(back["model"])
    opt = optim.Adam(model.parameters(), lr=0.01)
    opt.load_state_dict(back["optimizer"])
    for k, v in obj["model"].items():
        np.testing.assert_array_equal(model.state_dict()[k].numpy(), v.numpy())


def test_cross_device_load(device, tmp_path):
    obj = nested(device)
    save(obj, tmp_path / "x")
    on_cpu = load(tmp_path / "x")  # default device is the CPU, whatever wrote the file
    assert all(str(t.device) == "cpu" for t in on_cpu["model"].values())
    assert_same(obj, on_cpu)
    save(on_cpu, tmp_path / "y")
    again = load(tmp_path / "y", device=device)
    assert_same(obj, again)


def test_atomic_write_keeps_old_file_when_writing_fails(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.safetensors"
    save({"v": gg.tensor([1.0])}, path)
    good = path.read_bytes()

    def boom(fd):
        raise OSError("disk full")

    monkeypatch.setattr(serialization.os, "fsync", boom)
    with pytest.raises(OSError, match="disk full"):
        save({"v": gg.tensor([2.0, 3.0])}, path)
    assert path.read_bytes() == good
    assert os.listdir(tmp_path) == ["ckpt.safetensors"]  # the temporary file was removed
    monkeypatch.undo()
    assert load(path)["v"].tolist() == [1.0]


def test_unsaveable_objects_raise_type_error(tmp_path):
    with pytest.raises(TypeError, match="cannot save a object"):
        save({"x": object()}, tmp_path / "a")
    with pytest.raises(TypeError, match="dict key"):
        save({(1, 2): 3}, tmp_path / "a")
    with pytest.raises(TypeError, match="dtype"):
        save({"s": np.array(["a", "b"])}, tmp_path / "a")
    assert not (tmp_path / "a").exists()


def _expect_bad(path, match):
    with pytest.raises(ValueError, match=match) as info:
        load(path)
    assert str(path) in str(info.value)


def test_garbage_truncated_and_foreign_files_raise_value_error(tmp_path):
    good = tmp_path / "good"
    save({"a": gg.ones(100), "b": [1, 2]}, good)
    data = good.read_bytes()
    cases = {
        "garbage": b"this is not a checkpoint at all, just some text" * 3,
        "empty": b"",
        "short": b"\x01\x02",
        "truncated_header": data[:20],
        "truncated_data": data[:-50],
        "bad_json": data[:8] + b"{" * (len(data) - 8),
    }
    for name, blob in cases.items():
        (tmp_path / name).write_bytes(blob)
        _expect_bad(tmp_path / name, "not a gpugrad checkpoint")
    pkl = tmp_path / "model.pkl"
    pkl.write_bytes(pickle.dumps({"a": np.ones(3)}))
    _expect_bad(pkl, "pickle")
    npz = tmp_path / "arrays.npz"
    np.savez(npz, a=np.ones(3))
    _expect_bad(npz, "zip")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("data.pkl", b"x")
    (tmp_path / "torch.pt").write_bytes(buf.getvalue())
    _expect_bad(tmp_path / "torch.pt", "zip")
    npy = tmp_path / "a.npy"
    np.save(npy, np.ones(3))
    _expect_bad(npy, ".npy")


def test_foreign_safetensors_file_is_rejected(tmp_path):
    import safetensors.numpy

    path = tmp_path / "hf.safetensors"
    path.write_bytes(safetensors.numpy.save({"w": np.ones(2, np.float32)}))
    _expect_bad(path, "without gpugrad's metadata")


def test_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        load(tmp_path / "nope")


def test_header_lengths_that_begin_like_a_pickle_still_load(tmp_path):
    """A header of 640 bytes is stored as 80 02 00 ..., which is also how a protocol-2 pickle
    starts: the safetensors parse comes first, so such checkpoints load."""
    path = tmp_path / "c.safetensors"
    gg.save({"note": ""}, path)
    base = struct.unpack("<Q", path.read_bytes()[:8])[0]
    for length in (640, 896):  # 0x280 and 0x380: 80 02 / 80 03
        note = "x" * (length - base)
        gg.save({"note": note}, path)
        assert path.read_bytes()[:2] == bytes([0x80, length >> 8])
        assert gg.load(path)["note"] == note
