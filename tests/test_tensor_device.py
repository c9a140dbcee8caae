"""Creation functions, host/device conversion, DLPack, devices and the default device."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from _helpers import T, assert_close

import gpugrad as gg
from gpugrad.backend.device import Device
from gpugrad.backend.numpy_backend import NumpyBackend

HAS_CUDA = gg.cuda.is_available()
ROOT = Path(__file__).resolve().parents[1]
needs_cuda = pytest.mark.skipif(not HAS_CUDA, reason="no CUDA device")
needs_no_cuda = pytest.mark.skipif(HAS_CUDA, reason="checks behaviour without CUDA")


def expected_str(device: str) -> str:
    return "cpu" if device == "cpu" else "cuda:0"


# -- creation ------------------------------------------------------------------------------------
def test_tensor_dtype_defaults(device):
    assert gg.tensor([1.0, 2.0], device=device).dtype == np.float32
    assert gg.tensor(2.5, device=device).dtype == np.float32
    assert gg.tensor([[1, 2], [3, 4]], device=device).dtype == np.int64
    assert gg.tensor(3, device=device).dtype == np.int64
    assert gg.tensor([True, False], device=device).dtype == np.bool_
    assert gg.tensor([1, 2.5], device=device).dtype == np.float32
    assert gg.tensor([1, 2], dtype=gg.float64, device=device).dtype == np.float64
    assert gg.tensor(np.zeros(2, np.float64), device=device).dtype == np.float64  # arrays keep
    assert gg.tensor(np.zeros(2, np.int32), device=device).dtype == np.int32
    t = gg.tensor([[1.5, 2.0]], device=device)
    assert t.shape == (1, 2) and t.ndim == 2 and t.size == 2
    assert str(t.device) == expected_str(device)
    assert not t.requires_grad and t.grad is None


def test_tensor_copies_its_input(device):
    a = np.array([1.0, 2.0], np.float32)
    t = gg.tensor(a, device=device)
    a[0] = 99
    assert t.numpy()[0] == 1.0
    u = gg.tensor(t)
    assert u.numpy()[0] == 1.0 and str(u.device) == str(t.device)


@pytest.mark.parametrize("fn", ["zeros", "ones", "empty"])
def test_zeros_ones_empty(device, fn):
    f = getattr(gg, fn)
    for t in (f(2, 3, device=device), f((2, 3), device=device), f([2, 3], device=device)):
        assert t.shape == (2, 3) and t.dtype == np.float32
        assert str(t.device) == expected_str(device)
    t = f(4, dtype=gg.int64, device=device)
    assert t.dtype == np.int64 and t.shape == (4,)
    assert f(0, 3, device=device).shape == (0, 3)
    assert f(device=device).shape == ()
    if fn != "empty":
        assert_close(f(2, 2, device=device), np.full((2, 2), 0.0 if fn == "zeros" else 1.0))
    g = f(3, device=device, requires_grad=True)
    assert g.requires_grad and g.is_leaf
    with pytest.raises(ValueError):
        f(-1, device=device)


def test_full_and_like(device):
    t = gg.full((2, 3), 7.5, device=device)
    assert t.dtype == np.float32 and t.shape == (2, 3)
    assert_close(t, np.full((2, 3), 7.5))
    assert gg.full(3, 2, device=device).dtype == np.int64
    assert gg.full(3, True, device=device).dtype == np.bool_
    assert gg.full(3, 2, dtype=gg.float64, device=device).dtype == np.float64
    base = gg.tensor(np.ones((2, 2)), dtype=gg.float64, device=device)
    for like, value in ((gg.zeros_like(base), 0.0), (gg.ones_like(base), 1.0)):
        assert like.shape == (2, 2) and like.dtype == np.float64
        assert like.device is base.device
        assert_close(like, np.full((2, 2), value))
    assert gg.zeros_like(base, dtype=gg.float32).dtype == np.float32


def test_full_with_a_tensor_fill_value(device):
    for fill in (gg.tensor(2.5, device=device), gg.tensor(2.5)):  # same device, or the CPU
        t = gg.full((2, 3), fill, device=device)
        assert t.dtype == np.float32 and str(t.device) == expected_str(device)
        assert_close(t, np.full((2, 3), 2.5))
    row = gg.full((2, 3), gg.tensor([1.0, 2.0, 3.0], device=device), device=device)
    assert_close(row, np.tile([1.0, 2.0, 3.0], (2, 1)))  # broadcast, like NumPy
    assert_close(gg.full((2, 2), [1, 2], device=device), [[1, 2], [1, 2]])


def test_tensor_from_a_list_of_tensors(device):
    a, b = gg.tensor(1.5, device=device), gg.tensor(-2.0, device=device)
    for target in (device, "cpu"):
        t = gg.tensor([a, b], device=target)
        assert t.dtype == np.float32 and str(t.device) == expected_str(target)
        assert_close(t, [1.5, -2.0])
    rows = gg.tensor([gg.tensor([1.0, 2.0], device=device), [3.0, 4.0]], device=device)
    assert_close(rows, [[1.0, 2.0], [3.0, 4.0]])
    with pytest.raises(TypeError, match="not understood"):
        gg.tensor([a, b], dtype="no-such-dtype", device=device)


def test_arange(device):
    for args, kwargs, want in (((5,), {}, np.arange(5)), ((2, 8, 3), {}, np.arange(2, 8, 3)),
                               ((0, 1, 0.25), {}, np.arange(0, 1, 0.25)),
                               ((3,), {"dtype": gg.float64}, np.arange(3.0))):
        t = gg.arange(*args, device=device, **kwargs)
        assert_close(t, want)
        assert str(t.device) == expected_str(device)
    assert gg.arange(5, device=device).dtype == np.int64
    assert gg.arange(0, 1, 0.25, device=device).dtype == np.float32
    assert gg.arange(3, dtype=gg.float64, device=device).dtype == np.float64


@pytest.mark.parametrize("fn", ["randn", "rand"])
def test_random_shapes_dtypes_and_seed(device, fn):
    f = getattr(gg, fn)
    gg.manual_seed(123)
    a = f(3, 4, device=device)
    assert a.shape == (3, 4) and a.dtype == np.float32
    assert str(a.device) == expected_str(device)
    assert f((2, 2), dtype=gg.float64, device=device).dtype == np.float64
    gg.manual_seed(123)
    b = f(3, 4, device=device)
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    c = f(3, 4, device=device)
    assert not np.array_equal(a.numpy(), c.numpy())
    # identical values on the CPU and on the device under test
    gg.manual_seed(7)
    host = f(5, device="cpu")
    gg.manual_seed(7)
    dev = f(5, device=device)
    np.testing.assert_array_equal(host.numpy(), dev.numpy())
    if fn == "rand":
        assert 0 <= a.numpy().min() and a.numpy().max() < 1
    else:
        big = f(4000, device=device).numpy()
        assert abs(big.mean()) < 0.1 and abs(big.std() - 1) < 0.1
    assert f(2, device=device, requires_grad=True).requires_grad


# -- host and device conversion ------------------------------------------------------------------
def test_from_numpy_shares_memory():
    a = np.arange(4.0)
    t = gg.from_numpy(a)
    assert t.dtype == np.float64 and str(t.device) == "cpu"
    a[1] = 42.0
    assert t.numpy()[1] == 42.0
    with pytest.raises(TypeError):
        gg.from_numpy([1.0, 2.0])


def test_numpy_is_a_copy(device):
    t = gg.tensor([1.0, 2.0], device=device)
    n = t.numpy()
    assert isinstance(n, np.ndarray) and n.dtype == np.float32
    n[0] = 99.0
    assert t.numpy()[0] == 1.0
    x = gg.tensor([3.0], device=device, requires_grad=True)
    assert (x * 2).numpy().tolist() == [6.0]


def test_item_and_tolist(device):
    assert gg.tensor(2.5, device=device).item() == 2.5
    assert isinstance(gg.tensor([[3]], device=device).item(), int)
    assert gg.tensor([[1, 2], [3, 4]], device=device).tolist() == [[1, 2], [3, 4]]
    assert gg.tensor([True], device=device).tolist() == [True]
    with pytest.raises(ValueError, match="one-element"):
        gg.tensor([1.0, 2.0], device=device).item()
    assert float(gg.tensor([1.5], device=device)) == 1.5


def test_from_dlpack_round_trip(device):
    a = np.arange(6.0, dtype=np.float32).reshape(2, 3)
    t = gg.from_dlpack(a)  # a NumPy producer: shares memory, stays on the CPU
    assert str(t.device) == "cpu" and t.dtype == np.float32
    a[0, 0] = -1.0
    assert t.numpy()[0, 0] == -1.0
    d = gg.tensor(a, device=device)
    back = gg.from_dlpack(d)  # a gpugrad tensor is a producer too (__dlpack__ out)
    assert back.device is d.device
    np.testing.assert_array_equal(back.numpy(), a)
    assert d.__dlpack_device__()[0] == (1 if device == "cpu" else 2)


def test_dlpack_out_to_numpy():
    t = gg.tensor([1.0, 2.0, 3.0])
    n = np.from_dlpack(t)
    np.testing.assert_array_equal(n, [1.0, 2.0, 3.0])
    assert np.shares_memory(n, np.asarray(t))


def test_to_and_cpu(device):
    x = np.array([1.0, -2.0, 3.0])
    t = T(x, "cpu", requires_grad=True)
    u = t.to(device)
    assert str(u.device) == expected_str(device)
    assert_close(u, x)
    (u * u).sum().backward()  # .to is differentiable; the gradient comes back to the CPU
    assert str(t.grad.device) == "cpu"
    assert_close(t.grad, 2 * x)
    back = u.cpu()
    assert str(back.device) == "cpu"
    assert_close(back, x)
    assert t.to("cpu") is t
    assert t.to(dtype=gg.float64).dtype == np.float64
    v = u.to(gg.device(device), dtype=gg.float32)
    assert v.dtype == np.float32 and str(v.device) == expected_str(device)


@needs_cuda
def test_cuda_method_round_trip():
    t = gg.tensor([1.0, 2.0], requires_grad=True)
    c = t.cuda()
    assert str(c.device) == "cuda:0" and c.device.type == "cuda"
    (c * 3).sum().backward()
    assert str(t.grad.device) == "cpu"
    assert_close(t.grad, [3.0, 3.0])
    assert str(c.cpu().device) == "cpu"


@needs_no_cuda
def test_cuda_without_cuda_raises_device_error():
    t = gg.tensor([1.0])
    for call in (lambda: t.cuda(), lambda: t.to("cuda"), lambda: gg.device("cuda"),
                 lambda: gg.device("cuda:0"), lambda: gg.zeros(2, device="cuda")):
        with pytest.raises(gg.DeviceError) as info:
            call()
        assert gg.cuda.unavailable_reason() in str(info.value)
        assert "unavailable" in str(info.value)
    assert gg.cuda.unavailable_reason()


# -- devices -------------------------------------------------------------------------------------
def test_device_objects():
    cpu = gg.device("cpu")
    assert cpu is gg.device("cpu") is gg.device(" CPU ") is gg.device(cpu)
    assert str(cpu) == "cpu" and cpu.type == "cpu"
    assert cpu == "cpu" and cpu != "tpu"
    assert issubclass(gg.DeviceError, RuntimeError)
    auto = gg.device("auto")
    if HAS_CUDA:
        assert str(auto) == "cuda:0"
    else:
        assert auto is cpu  # auto falls back to the CPU
    for bad in ("tpu", "cuda:x", "cuda:", "cuda:-1", "", "cpu:0x"):
        with pytest.raises(ValueError, match="unknown device"):
            gg.device(bad)
    with pytest.raises(TypeError):
        gg.device(3)


@needs_cuda
def test_cuda_device_objects():
    d = gg.device("cuda")
    assert d is gg.device("cuda:0") and str(d) == "cuda:0"
    with pytest.raises(gg.DeviceError, match="only"):
        gg.device(f"cuda:{gg.cuda.device_count()}")


def test_cuda_queries():
    assert isinstance(gg.cuda.is_available(), bool)
    n = gg.cuda.device_count()
    assert isinstance(n, int) and n >= 0
    assert gg.cuda.is_available() == (n > 0)
    assert (gg.cuda.unavailable_reason() == "") == gg.cuda.is_available()


def _default_device_in_subprocess(value: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, GPUGRAD_DEVICE=value, PYTHONPATH=str(ROOT))
    code = "import gpugrad as gg; print(gg.tensor([1.0]).device, gg.zeros(1).device)"
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=120, cwd=ROOT)


def test_gpugrad_device_env_sets_default():
    r = _default_device_in_subprocess("cpu")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["cpu", "cpu"]
    r = _default_device_in_subprocess("auto")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == (["cuda:0"] * 2 if HAS_CUDA else ["cpu", "cpu"])
    r = _default_device_in_subprocess("cuda")
    if HAS_CUDA:
        assert r.returncode == 0 and r.stdout.split() == ["cuda:0", "cuda:0"], r.stderr
    else:
        assert r.returncode != 0 and "DeviceError" in r.stderr and "unavailable" in r.stderr
    r = _default_device_in_subprocess("tpu")
    assert r.returncode != 0 and "ValueError" in r.stderr and "tpu" in r.stderr


# -- mixing devices ------------------------------------------------------------------------------
FAKE = Device("cuda", 7, NumpyBackend())  # a second device object, simulated on the host


def _fake(x):
    return gg.Tensor._wrap(np.asarray(x, np.float32), FAKE)


MIXED = {
    "add": lambda a, b: a + b,
    "mul": lambda a, b: b * a,
    "matmul": lambda a, b: a @ b,
    "maximum": gg.maximum,
    "where": lambda a, b: gg.where(gg.tensor([True, False, True]), a, b),
    "concatenate": lambda a, b: gg.concatenate([a, b]),
    "stack": lambda a, b: gg.stack([b, a]),
    "linear": lambda a, b: gg.linear(a.reshape(1, 3), b.reshape(1, 3)),
    "equal": lambda a, b: a == b,
    "less": lambda a, b: a < b,
}


@pytest.mark.parametrize("op", list(MIXED))
def test_mixing_devices_raises(op):
    a = gg.tensor([1.0, 2.0, 3.0], requires_grad=True)
    b = _fake([1.0, 2.0, 3.0])
    assert str(b.device) == "cuda:7"
    with pytest.raises(gg.DeviceError) as info:
        MIXED[op](a, b)
    msg = str(info.value)
    assert op in msg and "cpu" in msg and "cuda:7" in msg, msg


def test_mixing_devices_in_backward_and_indexing():
    a = gg.tensor([1.0, 2.0, 3.0], requires_grad=True)
    with pytest.raises(gg.DeviceError, match="cuda:7"):
        (a * 2).backward(gradient=_fake([1.0, 1.0, 1.0]))
    idx = gg.Tensor._wrap(np.array([0, 1]), FAKE)
    with pytest.raises(gg.DeviceError, match="getitem"):
        a[idx]


def test_to_accepts_a_dtype_positionally(device):
    t = gg.tensor([1.0, 2.0], device=device, requires_grad=True)
    u = t.to(gg.float64)
    assert u.dtype == np.float64 and str(u.device) == str(t.device)
    u.sum().backward()
    assert t.grad.dtype == np.float32


def test_cuda_detection_needs_nvrtc_and_cublas_not_just_a_driver(monkeypatch):
    """A driver lets CuPy count devices, but without NVRTC or cuBLAS the first op would fail:
    detection reports "no CUDA" with the reason instead."""
    import sys
    import types

    from gpugrad.backend import cuda_runtime

    def fake_cupy(nvrtc_ok: bool):
        def version():
            if not nvrtc_ok:
                raise OSError("libnvrtc.so.13: cannot open shared object file")
            return (13, 0)

        cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=lambda: 2),
                                     nvrtc=types.SimpleNamespace(getVersion=version))
        return types.SimpleNamespace(cuda=cuda)

    probe = cuda_runtime.status.__wrapped__  # uncached
    monkeypatch.setitem(sys.modules, "cupy", fake_cupy(nvrtc_ok=False))
    count, reason = probe()
    assert count == 0 and "2 CUDA device(s) found" in reason and "NVRTC" in reason
    assert "gpugrad[cuda13]" in reason
    monkeypatch.setitem(sys.modules, "cupy", fake_cupy(nvrtc_ok=True))
    for name in ("cupy_backends", "cupy_backends.cuda", "cupy_backends.cuda.libs",
                 "cupy_backends.cuda.libs.cublas"):
        monkeypatch.setitem(sys.modules, name, None)  # so importing cuBLAS fails
    count, reason = probe()
    assert count == 0 and "cuBLAS" in reason


@pytest.mark.skipif(not gg.cuda.is_available(), reason="needs a CUDA device")
def test_other_libraries_gpu_arrays_are_copied_not_shared():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch without CUDA")
    src = torch.arange(3.0, device="cuda")
    on_gpu, on_cpu = gg.tensor(src, device="cuda"), gg.tensor(src, device="cpu")
    src[0] = 5.0  # CuPy would wrap torch's memory: gg.tensor must have copied it
    np.testing.assert_array_equal(on_gpu.numpy(), [0.0, 1.0, 2.0])
    np.testing.assert_array_equal(on_cpu.numpy(), [0.0, 1.0, 2.0])


def test_backend_copy_from_host_overwrites_in_place(device):
    dev = gg.device(device)
    with dev.activate():
        array = dev.xp.zeros((2, 3), dtype=np.float32)
    host = np.arange(6, dtype=np.float32).reshape(2, 3)
    dev.backend.copy_from_host(array, host)
    np.testing.assert_array_equal(dev.backend.to_host(array), host)
