"""The typed errors of the backend, and the class-label check whose message every path (the CUDA
kernel's launcher, the reference, the composed losses) shares."""

from __future__ import annotations

from typing import Any

import numpy as np

from . import checks

# a signed label dtype -> the unsigned one of its size, to read its bits as (see labels_in_range)
_UNSIGNED = {np.dtype(s): np.dtype(u) for s, u in
             ((np.int8, np.uint8), (np.int16, np.uint16), (np.int32, np.uint32),
              (np.int64, np.uint64))}


class DeviceError(RuntimeError):
    """A device is unavailable, or tensors on different devices met in one op."""


def label_error(op: str, label: int, row: int, n: int, c: int, ignore_index: int) -> ValueError:
    """The error for a class label outside ``[0, c)`` that is not ``ignore_index``."""
    return ValueError(f"{op}: label {label} at row {row} is outside [0, {c}) and is not "
                      f"ignore_index={ignore_index} (N={n}, C={c})")


def labels_in_range(labels: Any, c: int) -> bool:
    """Whether every (integer) label is in ``[0, c)``: one reduction, since a negative label read
    as unsigned is larger than any class count (for device labels, also one host read)."""
    if labels.size == 0:
        return True
    unsigned = _UNSIGNED.get(labels.dtype)
    if unsigned is not None:
        labels = labels.view(unsigned)  # same bits, no copy
    return bool(labels.max() < c)


def check_labels(labels: Any, c: int, ignore_index: int, op: str = "cross_entropy") -> None:
    """``label_error`` for the first label outside ``[0, c)`` that is not ``ignore_index``:
    raised now for NumPy labels, at the next host read for CuPy labels (a deferred check, see
    ``checks``: no sync here)."""
    n = labels.shape[0]
    if labels.size == 0:
        return
    if isinstance(labels, np.ndarray) and labels_in_range(labels, c):  # host labels, usually
        return
    bad = (labels < 0) | (labels >= c)
    if ignore_index < 0 or ignore_index >= c:
        bad &= labels != ignore_index
    row = bad.argmax()  # the first bad row (0 when none)
    flags = _array_module(labels).stack([bad[row], row, labels[row]]).astype("int64")

    def error(f) -> ValueError | None:
        return label_error(op, int(f[2]), int(f[1]), n, c, ignore_index) if f[0] else None

    checks.require(flags, error)


def _array_module(a: Any):
    """numpy for host arrays (NumPy 2 gives them ``device == "cpu"``), else cupy."""
    if isinstance(getattr(a, "device", "cpu"), str):
        import numpy

        return numpy
    import cupy

    return cupy
