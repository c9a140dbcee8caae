"""Checkpoints: ``gg.save(obj, path)`` and ``gg.load(path, device="cpu")``, never with pickle.

The file is plain safetensors (written and read through the ``safetensors`` package's NumPy API):
every tensor or array in ``obj`` becomes one safetensors tensor named by its dotted path
(``model.0.weight``, ``optimizer.state.0.exp_avg``), and the structure around them -- nested
dicts, lists and tuples of ints, floats, strings, bools and None -- is stored as JSON in the
header's metadata under ``"gpugrad"``. Loading rebuilds the same structure with every array as a
Tensor on ``device``; data always goes through the host, so a checkpoint written on a GPU loads on
the CPU and vice versa.

Writes are atomic: the bytes go to a temporary file in the target's directory, are flushed and
fsync'ed, and only then ``os.replace``-d over the target -- a crash mid-write leaves the previous
checkpoint intact. Anything that is not a gpugrad safetensors file (garbage, a truncated file, a
pickle, an ``.npz``/zip archive) raises ``ValueError`` naming the path.
"""

from __future__ import annotations

import json
import os
import struct
import tempfile
from typing import Any

import numpy as np

from .backend import device as _device
from .tensor import Tensor

__all__ = ["load", "save"]

_FORMAT = "gpugrad.checkpoint"
_VERSION = 1
_MAX_HEADER = 100 * 1024 * 1024  # safetensors' own limit on the JSON header


def _safetensors():
    try:
        import safetensors.numpy as stn
    except ImportError:  # pragma: no cover - a declared dependency
        raise ImportError("gpugrad checkpoints need the 'safetensors' package: "
                          "pip install safetensors") from None
    return stn


# -- flattening ---------------------------------------------------------------------------------
def _is_array(x: Any) -> bool:
    return isinstance(x, np.ndarray) or hasattr(x, "__cuda_array_interface__")


class _Flattener:
    """Walk ``obj``, collecting arrays (as host NumPy) and a JSON-able description of the rest."""

    def __init__(self) -> None:
        self.arrays: dict[str, np.ndarray] = {}

    def key(self, path: str) -> str:
        key, n = path or "tensor", 1
        while key in self.arrays:  # "a.b" as a key and as a nested path would collide
            key, n = f"{path}#{n}", n + 1
        return key

    def walk(self, x: Any, path: str) -> Any:
        if isinstance(x, Tensor) or _is_array(x):
            if isinstance(x, Tensor):
                host, grad = x.numpy(), bool(x.requires_grad)
            else:
                host = x.get() if hasattr(x, "get") and not isinstance(x, np.ndarray) else x
                host, grad = np.asarray(host), False
            if host.dtype == object or host.dtype.kind in "OUSV":
                raise TypeError(f"gg.save: the array at {path or '<root>'!r} has dtype "
                                f"{host.dtype}; only numeric and bool arrays can be saved")
            key = self.key(path)
            # (ascontiguousarray alone would make a 0-d array 1-d: keep the shape)
            self.arrays[key] = np.ascontiguousarray(host).reshape(host.shape)
            return {"$tensor": key, "requires_grad": grad}
        if x is None or isinstance(x, (bool, int, float, str)):
            return x
        if isinstance(x, np.generic):
            return x.item()
        if isinstance(x, dict):
            items = []
            for k, v in x.items():
                if not (k is None or isinstance(k, (str, int, float, bool))):
                    raise TypeError(f"gg.save: dict key {k!r} at {path or '<root>'!r} must be a "
                                    f"str, int, float, bool or None, not {type(k).__name__}")
                items.append([k, self.walk(v, f"{path}.{k}" if path else str(k))])
            return {"$dict": items}
        if isinstance(x, (list, tuple)):
            body = [self.walk(v, f"{path}.{i}" if path else str(i)) for i, v in enumerate(x)]
            return {"$tuple": body} if isinstance(x, tuple) else body
        raise TypeError(f"gg.save: cannot save a {type(x).__name__} at {path or '<root>'!r}; "
                        "checkpoints hold tensors, arrays, numbers, strings, bools, None and "
                        "dicts/lists/tuples of them (never pickled objects)")


def _rebuild(node: Any, arrays: dict[str, np.ndarray], dev: Any, path: str) -> Any:
    if isinstance(node, list):
        return [_rebuild(v, arrays, dev, path) for v in node]
    if not isinstance(node, dict):
        return node
    if "$tensor" in node:
        host = arrays.get(node["$tensor"])
        if host is None:
            raise ValueError(f"gg.load: {path} refers to tensor {node['$tensor']!r}, which the "
                             "file does not contain")
        data = np.array(host) if dev.type == "cpu" else dev.backend.asarray(host)
        t = Tensor._wrap(data, dev)
        if node.get("requires_grad") and t.dtype.kind == "f":
            t.requires_grad = True
        return t
    if "$dict" in node:
        return {k: _rebuild(v, arrays, dev, path) for k, v in node["$dict"]}
    if "$tuple" in node:
        return tuple(_rebuild(v, arrays, dev, path) for v in node["$tuple"])
    raise ValueError(f"gg.load: {path} has an unknown structure entry {sorted(node)}")


# -- save -------------------------------------------------------------------------------------
def save(obj: Any, path: str | os.PathLike) -> None:
    """Write ``obj`` (e.g. ``{"model": model.state_dict(), "optimizer": opt.state_dict(),
    "epoch": 3}``) to ``path`` as a safetensors file, atomically."""
    stn = _safetensors()
    flat = _Flattener()
    structure = flat.walk(obj, "")
    metadata = {"format": _FORMAT, "version": str(_VERSION),
                "gpugrad": json.dumps(structure, allow_nan=True)}
    try:
        payload = stn.save(flat.arrays, metadata=metadata)
    except Exception as exc:  # e.g. a dtype safetensors cannot store
        raise TypeError(f"gg.save: cannot write {os.fspath(path)!r}: {exc}") from None
    _atomic_write(os.fspath(path), payload)


def _atomic_write(path: str, payload: bytes) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.",
                               suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:  # make the rename itself durable (POSIX); not every platform can open a directory
        dir_fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


# -- load -------------------------------------------------------------------------------------
def _bad(path: str, why: str) -> ValueError:
    return ValueError(f"gg.load: {path!r} is not a gpugrad checkpoint: {why}")


def _parse_header(data: bytes) -> tuple[dict[str, Any] | None, str]:
    """The safetensors header as a dict, or None and why the bytes are not one."""
    if len(data) < 8:
        return None, f"the file is {len(data)} bytes long, too short for a header"
    (n,) = struct.unpack("<Q", data[:8])
    if n > _MAX_HEADER or 8 + n > len(data):
        return None, (f"the header claims {n} bytes but the file has {len(data) - 8} after the "
                      "length field (truncated or not safetensors)")
    try:
        header = json.loads(data[8:8 + n].decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None, "the header is not valid JSON"
    if not isinstance(header, dict):
        return None, "the header is not a JSON object"
    return header, ""


def _read_header(path: str, data: bytes) -> dict[str, Any]:
    header, why = _parse_header(data)
    if header is not None:
        # Parsed first: a header length such as 640 (bytes 80 02 ...) begins like a pickle.
        return header
    if data[:4] == b"PK\x03\x04":
        raise _bad(path, "it is a zip archive (an .npz or torch.save file?); gpugrad reads only "
                         "the safetensors files gg.save writes")
    if data[:1] == b"\x80" and data[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        raise _bad(path, "it looks like a pickle, which gpugrad never loads (unpickling can run "
                         "arbitrary code)")
    if data[:6] == b"\x93NUMPY":
        raise _bad(path, "it is a .npy file, not a safetensors checkpoint")
    raise _bad(path, why)


def load(path: str | os.PathLike, device: Any = "cpu") -> Any:
    """Read a checkpoint written by ``save``; every array comes back as a Tensor on ``device``."""
    stn = _safetensors()
    path = os.fspath(path)
    dev = _device(device)
    with open(path, "rb") as f:
        data = f.read()
    header = _read_header(path, data)
    meta = header.get("__metadata__") or {}
    if not isinstance(meta, dict) or meta.get("format") != _FORMAT:
        raise _bad(path, "it is a safetensors file without gpugrad's metadata (was it written by "
                         "another library?)")
    if meta.get("version") != str(_VERSION):
        raise _bad(path, f"unsupported checkpoint version {meta.get('version')!r} (this gpugrad "
                         f"reads version {_VERSION})")
    try:
        structure = json.loads(meta["gpugrad"])
    except (KeyError, TypeError, ValueError):
        raise _bad(path, "the structure metadata is missing or not valid JSON") from None
    try:
        arrays = stn.load(data)
    except Exception as exc:  # SafetensorError and friends: truncated data, bad offsets, ...
        raise _bad(path, f"the tensor data is corrupt or truncated ({exc})") from None
    try:
        return _rebuild(structure, arrays, dev, repr(path))
    except (TypeError, KeyError, AttributeError) as exc:  # a hand-edited or corrupt structure
        raise _bad(path, f"the structure metadata is malformed ({exc})") from None
