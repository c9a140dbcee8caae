"""Checkpoints: ``gg.save(obj, path)`` and ``gg.load(path, device="cpu")``, never with pickle.

The file is plain safetensors (written and read through the ``safetensors`` package's NumPy API):
every tensor or array in ``obj`` becomes one safetensors tensor named by its dotted path
(``model.0.weight``, ``optimizer.state.0.exp_avg``), and the structure around them -- nested
dicts, lists and tuples of ints, floats, strings, bools and None -- is stored as JSON in the
header's metadata under ``"gpugrad"``. Loading rebuilds the same structure with every array as a
Tensor on ``device``; data always goes through the host, so a checkpoint written on a GPU loads on
the CPU and vice versa.

Writes are atomic: the bytes go to ``.NAME.tmp-<pid>-<n>`` in the target's directory, are flushed
and fsync'ed, and only then ``os.replace``-d over the target -- a crash mid-write leaves the
previous checkpoint intact, and the next save to the same target removes temporary files left by
processes that no longer run. A symlink is written through (its target is replaced, as
``open(path, "w")`` would write there); a replaced file keeps its mode, a new one gets the umask's.

Loading treats the file as hostile: only regular files are opened (a FIFO or ``/dev/zero`` behind
a link is refused before ``open``), the JSON header is capped at ``MAX_HEADER_BYTES``, nesting at
``MAX_DEPTH`` levels (checked by counting brackets, never by recursing), every structure entry is
validated, and each stored tensor may be referenced once, so the decoded data never exceeds the
file. Anything that is not a gpugrad checkpoint raises ``ValueError`` naming the path.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import stat
import struct
from typing import Any

import numpy as np

from .backend import device as _device
from .backend import host_array
from .tensor import Tensor

__all__ = ["MAX_DEPTH", "MAX_HEADER_BYTES", "load", "save"]

_FORMAT = "gpugrad.checkpoint"
_VERSION = 1
# Real headers are a few KB (about 150 bytes per tensor); parsing JSON costs up to ~50x its size
# in Python objects, so the cap bounds that at ~200 MiB while leaving room for ~25,000 tensors.
MAX_HEADER_BYTES = 4 * 1024 * 1024
MAX_DEPTH = 100  # dicts/lists/tuples inside one another
# One structure level is at most three JSON levels ({"$dict": [[key, value]]}).
_MAX_JSON_DEPTH = 3 * MAX_DEPTH + 2
_TEMP_COUNTER = itertools.count()


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
    """Walk ``obj``, collecting arrays (as host NumPy) and a JSON-able description of the rest.

    Recursion is safe here: the depth is bounded by ``MAX_DEPTH`` and cycles are refused."""

    def __init__(self) -> None:
        self.arrays: dict[str, np.ndarray] = {}
        self.open_containers: set[int] = set()

    def key(self, path: str) -> str:
        key, n = path or "tensor", 1
        while key in self.arrays:  # "a.b" as a key and as a nested path would collide
            key, n = f"{path}#{n}", n + 1
        return key

    def walk(self, x: Any, path: str, depth: int = 0) -> Any:
        if isinstance(x, Tensor) or _is_array(x):
            return self.array(x, path)
        if x is None or isinstance(x, (bool, int, float, str)):
            return x
        if isinstance(x, np.generic):
            return x.item()
        if not isinstance(x, (dict, list, tuple)):
            raise TypeError(f"gg.save: cannot save a {type(x).__name__} at {path or '<root>'!r}; "
                            "checkpoints hold tensors, arrays, numbers, strings, bools, None and "
                            "dicts/lists/tuples of them (never pickled objects)")
        if depth >= MAX_DEPTH:
            raise ValueError(f"gg.save: the structure at {path or '<root>'!r} is nested deeper "
                             f"than {MAX_DEPTH} levels")
        if id(x) in self.open_containers:
            raise ValueError(f"gg.save: the {type(x).__name__} at {path or '<root>'!r} contains "
                             "itself; a checkpoint cannot hold a cycle")
        self.open_containers.add(id(x))
        try:
            return self.container(x, path, depth + 1)
        finally:
            self.open_containers.discard(id(x))

    def container(self, x: Any, path: str, depth: int) -> Any:
        def sub(k: Any) -> str:
            return f"{path}.{k}" if path else str(k)

        if isinstance(x, dict):
            items = []
            for k, v in x.items():
                if not (k is None or isinstance(k, (str, int, float, bool))):
                    raise TypeError(f"gg.save: dict key {k!r} at {path or '<root>'!r} must be a "
                                    f"str, int, float, bool or None, not {type(k).__name__}")
                items.append([k, self.walk(v, sub(k), depth)])
            return {"$dict": items}
        body = [self.walk(v, sub(i), depth) for i, v in enumerate(x)]
        return {"$tuple": body} if isinstance(x, tuple) else body

    def array(self, x: Any, path: str) -> dict[str, Any]:
        if isinstance(x, Tensor):
            host, grad = x.numpy(), bool(x.requires_grad)
        else:
            host, grad = host_array(x), False
        if host.dtype == object or host.dtype.kind in "OUSV":
            raise TypeError(f"gg.save: the array at {path or '<root>'!r} has dtype "
                            f"{host.dtype}; only numeric and bool arrays can be saved")
        key = self.key(path)
        # (ascontiguousarray alone would make a 0-d array 1-d: keep the shape)
        self.arrays[key] = np.ascontiguousarray(host).reshape(host.shape)
        return {"$tensor": key, "requires_grad": grad}


# -- rebuilding -----------------------------------------------------------------------------------
_SCALARS = (type(None), bool, int, float, str)


class _Rebuilder:
    """Turn the parsed structure back into Python objects, validating every entry.

    The JSON depth was bounded before parsing, so the recursion here is bounded too."""

    def __init__(self, file: str, arrays: dict[str, np.ndarray], dev: Any) -> None:
        self.file, self.arrays, self.dev = file, arrays, dev
        self.used: set[str] = set()

    def bad(self, where: str, why: str) -> ValueError:
        return _bad(self.file, f"the structure entry at {where or '<root>'!r} {why}")

    def build(self, node: Any, where: str, depth: int = 0) -> Any:
        if isinstance(node, _SCALARS):
            return node
        if isinstance(node, dict) and "$tensor" in node:
            return self.tensor(node, where)
        if depth >= MAX_DEPTH:
            raise self.bad(where, f"is nested deeper than {MAX_DEPTH} levels")
        if isinstance(node, list):
            return [self.build(v, _sub(where, i), depth + 1) for i, v in enumerate(node)]
        if not isinstance(node, dict):
            raise self.bad(where, f"is a {type(node).__name__}")
        if set(node) == {"$dict"}:
            return self.dict(node["$dict"], where, depth + 1)
        if set(node) == {"$tuple"} and isinstance(node["$tuple"], list):
            return tuple(self.build(v, _sub(where, i), depth + 1)
                         for i, v in enumerate(node["$tuple"]))
        raise self.bad(where, f"has the unknown keys {sorted(node)[:5]}")

    def dict(self, items: Any, where: str, depth: int) -> dict[Any, Any]:
        if not isinstance(items, list):
            raise self.bad(where, f"is a $dict whose items are a {type(items).__name__}, not a "
                                  "list of [key, value] pairs")
        out: dict[Any, Any] = {}
        for i, item in enumerate(items):
            if not (isinstance(item, list) and len(item) == 2):
                raise self.bad(where, f"is a $dict whose item {i} is {_short(item)}, not a "
                                      "[key, value] pair")
            k, v = item
            if not isinstance(k, _SCALARS):
                raise self.bad(where, f"is a $dict whose item {i} has a {type(k).__name__} key")
            out[k] = self.build(v, _sub(where, k), depth)
        return out

    def tensor(self, node: dict[str, Any], where: str) -> Tensor:
        key = node["$tensor"]
        if not (set(node) <= {"$tensor", "requires_grad"} and isinstance(key, str)
                and isinstance(node.get("requires_grad", False), bool)):
            raise self.bad(where, f"is a malformed tensor reference {_short(node)}")
        if key in self.used:
            # gg.save never shares a stored tensor; copying it once per reference would let a
            # small file ask for unbounded memory.
            raise self.bad(where, f"refers to tensor {key!r} a second time")
        host = self.arrays.pop(key, None)
        if host is None:
            raise self.bad(where, f"refers to tensor {key!r}, which the file does not contain")
        self.used.add(key)
        dev = self.dev
        data = np.array(host) if dev.type == "cpu" else dev.backend.asarray(host)
        t = Tensor._wrap(data, dev)
        if node.get("requires_grad") and t.dtype.kind == "f":
            t.requires_grad = True
        return t


def _sub(where: str, k: Any) -> str:
    return f"{where}.{k}" if where else str(k)


def _short(x: Any) -> str:
    text = json.dumps(x)
    return text if len(text) <= 60 else text[:57] + "..."


# -- save -------------------------------------------------------------------------------------
def save(obj: Any, path: str | os.PathLike) -> None:
    """Write ``obj`` (e.g. ``{"model": model.state_dict(), "optimizer": opt.state_dict(),
    "epoch": 3}``) to ``path`` as a safetensors file, atomically.

    ``TypeError`` for what cannot be stored, ``ValueError`` for a cycle or nesting deeper than
    ``MAX_DEPTH`` (or a target that exists but is not a regular file)."""
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


def _remove_stale_temps(directory: str, base: str) -> None:
    """Delete ``.BASE.tmp-<pid>-<n>`` files whose writing process is gone (a killed save)."""
    if os.name != "posix":  # os.kill(pid, 0) probes a process only on POSIX
        return
    pattern = re.compile(rf"\.{re.escape(base)}\.tmp-(\d+)-\d+")
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for name in names:
        m = pattern.fullmatch(name)
        if not m or int(m.group(1)) == os.getpid():
            continue
        try:
            os.kill(int(m.group(1)), 0)
            continue  # still running: perhaps saving right now
        except ProcessLookupError:
            pass
        except (PermissionError, OverflowError):  # another user's live process, or nonsense
            continue
        try:
            os.unlink(os.path.join(directory, name))
        except OSError:
            pass


def _atomic_write(path: str, payload: bytes) -> None:
    target = os.path.realpath(path)  # through symlinks, as open(path, "w") writes
    try:
        st: os.stat_result | None = os.stat(target)
    except FileNotFoundError:
        st = None
    if st is not None and not stat.S_ISREG(st.st_mode):
        raise ValueError(f"gg.save: {path!r} is {_kind(st.st_mode)}, not a regular file")
    directory, base = os.path.split(target)
    _remove_stale_temps(directory, base)
    tmp = os.path.join(directory, f".{base}.tmp-{os.getpid()}-{next(_TEMP_COUNTER)}")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(tmp, flags, 0o666)  # 0o666 & ~umask, as open() would create it
    except OSError as exc:  # name the file the caller asked for, not our temporary one
        raise OSError(exc.errno, f"gg.save: cannot write {path!r}: {exc.strerror}",
                      path) from None
    try:
        with os.fdopen(fd, "wb") as f:
            if st is not None and hasattr(os, "fchmod"):
                os.fchmod(f.fileno(), stat.S_IMODE(st.st_mode))  # a replaced file keeps its mode
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
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


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def _read_regular_file(path: str) -> bytes:
    """The file's bytes, refusing anything but a regular file (after resolving links) before it
    is opened: a FIFO would block ``open`` and ``/dev/zero`` would never end."""
    st = os.stat(path)  # FileNotFoundError as open() would raise it
    if not stat.S_ISREG(st.st_mode):
        raise ValueError(f"gg.load: {path!r} is {_kind(st.st_mode)}; checkpoints are read only "
                         "from regular files")
    # O_NONBLOCK: should the path be swapped for a FIFO after the check, open() still returns.
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise ValueError(f"gg.load: {path!r} is {_kind(st.st_mode)}; checkpoints are read "
                             "only from regular files")
        return f.read(st.st_size)  # never more than the size it had: a growing file is cut


# A JSON string (an unterminated one runs to the end, so scanning stays linear).
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*(?:"|\\?\Z)', re.S)


def _json_depth(text: bytes) -> int:
    """How deeply ``text``'s arrays and objects nest, counted without parsing or recursing."""
    codes = np.frombuffer(_JSON_STRING.sub(b"", text), dtype=np.uint8)
    if codes.size == 0:
        return 0
    step = (np.isin(codes, (ord("["), ord("{"))).astype(np.int64)
            - np.isin(codes, (ord("]"), ord("}"))))
    return int(np.cumsum(step).max())


def _parse_json(text: bytes, what: str) -> tuple[Any, str]:
    depth = _json_depth(text)
    if depth > _MAX_JSON_DEPTH:
        return None, (f"{what} nests {depth} levels deep, more than a checkpoint's limit of "
                      f"{MAX_DEPTH} structure levels")
    try:
        return json.loads(text.decode("utf-8")), ""
    except (UnicodeDecodeError, ValueError):
        return None, f"{what} is not valid JSON"


def _parse_header(data: bytes) -> tuple[dict[str, Any] | None, str]:
    """The safetensors header as a dict, or None and why the bytes are not one."""
    if len(data) < 8:
        return None, f"the file is {len(data)} bytes long, too short for a header"
    (n,) = struct.unpack("<Q", data[:8])
    if n > MAX_HEADER_BYTES:
        return None, (f"the header claims {n} bytes, more than the {MAX_HEADER_BYTES} bytes "
                      "(MAX_HEADER_BYTES) gpugrad reads; real checkpoint headers are a few KB")
    if 8 + n > len(data):
        return None, (f"the header claims {n} bytes but the file has {len(data) - 8} after the "
                      "length field (truncated or not safetensors)")
    header, why = _parse_json(data[8:8 + n], "the header")
    if why:
        return None, why
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
    """Read a checkpoint written by ``save``; every array comes back as a Tensor on ``device``.

    ``FileNotFoundError`` for a missing file; ``ValueError`` naming the path for anything else
    that is not a gpugrad checkpoint (including non-regular files and over-deep nesting)."""
    path = os.fspath(path)
    dev = _device(device)
    return _load_bytes(_read_regular_file(path), path, dev)


def _load_bytes(data: bytes, path: str, dev: Any) -> Any:
    """``load`` after the file was read (``tools/fuzz_checkpoint.py`` fuzzes this directly)."""
    stn = _safetensors()
    header = _read_header(path, data)
    meta = header.get("__metadata__") or {}
    if not isinstance(meta, dict) or meta.get("format") != _FORMAT:
        raise _bad(path, "it is a safetensors file without gpugrad's metadata (was it written by "
                         "another library?)")
    if meta.get("version") != str(_VERSION):
        raise _bad(path, f"unsupported checkpoint version {meta.get('version')!r} (this gpugrad "
                         f"reads version {_VERSION})")
    text = meta.get("gpugrad")
    if not isinstance(text, str):
        raise _bad(path, "the structure metadata is missing")
    structure, why = _parse_json(text.encode("utf-8", "surrogatepass"), "the structure metadata")
    if why:
        raise _bad(path, why)
    try:
        # safetensors checks that the tensors exactly tile the data after the header, so the
        # arrays together are never larger than the file.
        arrays = stn.load(data)
    except Exception as exc:  # SafetensorError and friends: truncated data, bad offsets, ...
        raise _bad(path, f"the tensor data is corrupt or truncated ({exc})") from None
    del data
    return _Rebuilder(path, arrays, dev).build(structure, "")
