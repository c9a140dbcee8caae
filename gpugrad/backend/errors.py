"""The typed errors of the backend, and the class-label check whose message every path (the CUDA
kernel's launcher, the reference, the composed losses) shares."""

from __future__ import annotations

from typing import Any


class DeviceError(RuntimeError):
    """A device is unavailable, or tensors on different devices met in one op."""


def label_error(op: str, label: int, row: int, n: int, c: int, ignore_index: int) -> ValueError:
    """The error for a class label outside ``[0, c)`` that is not ``ignore_index``."""
    return ValueError(f"{op}: label {label} at row {row} is outside [0, {c}) and is not "
                      f"ignore_index={ignore_index} (N={n}, C={c})")


def check_labels(labels: Any, c: int, ignore_index: int, op: str = "cross_entropy") -> None:
    """Raise ``label_error`` for the first label outside ``[0, c)`` that is not ``ignore_index``
    (NumPy or CuPy labels: one host sync)."""
    bad = (labels < 0) | (labels >= c)
    if ignore_index < 0 or ignore_index >= c:
        bad &= labels != ignore_index
    if bool(bad.any()):
        row = int(bad.argmax())
        raise label_error(op, int(labels[row]), row, labels.shape[0], c, ignore_index)
