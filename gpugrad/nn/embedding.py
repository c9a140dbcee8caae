"""``Embedding``: a lookup table of vectors, like ``torch.nn.Embedding``, and ``embedding``, its
functional form (``torch.nn.functional.embedding``'s argument order).

The lookup is the existing differentiable indexing op (``weight[indices]``; its gradient is a
scatter-add, so repeated indices accumulate). Indices are checked against ``[0, num_embeddings)``
first, on every device: CuPy would silently wrap an out-of-range index, so on a GPU the check is
one reduction whose boolean result is read back -- one host sync per lookup -- before the gather.
With ``padding_idx`` the gathered rows at that index are routed around the graph
(``where(index != padding_idx, rows, rows.detach())``): the values are unchanged and the padding
row's gradient is exactly zero, as in PyTorch.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

from .. import ops
from ..backend import DeviceError, checks
from ..backend import device as _device
from ..creation import empty
from ..ops import shape as _shape_ops
from ..tensor import Tensor
from . import init
from .module import Module, Parameter

__all__ = ["Embedding", "embedding"]


def _indices(op: str, indices: Any, weight: Tensor) -> Tensor:
    """``indices`` as an integer tensor on ``weight``'s device (non-tensors are converted)."""
    if indices.__class__ is not Tensor:
        if isinstance(indices, (list, tuple)) and np.asarray(indices).size == 0:
            indices = np.asarray(indices, dtype=np.int64)  # [] means no indices, not floats
        indices = Tensor(indices, device=weight.device)
    elif indices.device is not weight.device:
        raise DeviceError(f"{op}: indices are on {indices.device} but the weight is on "
                          f"{weight.device}; move them to one device with .to(device) first")
    if indices.dtype.kind not in "iu":
        raise TypeError(f"{op}: indices must be an integer tensor, got dtype {indices.dtype} "
                        f"(shape {indices.shape})")
    return indices


def _check_range(op: str, idx: Tensor, num: int) -> None:
    """ValueError naming the first index outside ``[0, num)``: raised now on the CPU, at the next
    host read on a GPU (a deferred check: no sync in the lookup)."""
    if idx.size == 0:
        return
    shape = idx.shape
    with idx.device.activate():
        a = idx.data.reshape(-1)
        bad = (a < 0) | (a >= num)
        flat = idx.device.xp.argmax(bad)  # the first bad position (0 when none)
        flags = idx.device.xp.stack([bad[flat].astype(np.int64), flat.astype(np.int64),
                                     a[flat].astype(np.int64)])  # fmt: skip

    def error(f) -> ValueError | None:
        if not f[0]:
            return None
        pos = tuple(int(i) for i in np.unravel_index(int(f[1]), shape))
        return ValueError(f"{op}: index {int(f[2])} at position {pos} of the indices (shape "
                          f"{shape}) is out of range [0, {num}) (num_embeddings={num})")

    checks.require(flags, error)


def _padding_idx(op: str, padding_idx: Any, num: int) -> int | None:
    if padding_idx is None:
        return None
    if isinstance(padding_idx, bool) or not isinstance(padding_idx, numbers.Integral):
        raise TypeError(f"{op}: padding_idx must be an int or None, got {padding_idx!r}")
    if not -num <= padding_idx < num:
        raise ValueError(f"{op}: padding_idx must be within [-{num}, {num}) for "
                         f"num_embeddings={num}, got {padding_idx}")
    return int(padding_idx) % num


def embedding(input: Any, weight: Tensor, padding_idx: int | None = None) -> Tensor:  # noqa: A002
    """Rows of ``weight`` (num_embeddings, embedding_dim) at the integer ``input`` indices:
    output shape ``input.shape + (embedding_dim,)``. Indices outside ``[0, num_embeddings)``
    raise ValueError (one host sync on a GPU); ``padding_idx`` rows get no gradient."""
    op = "embedding"
    if weight.__class__ is not Tensor or weight.ndim != 2:
        raise ValueError(f"{op}: weight must be a 2-d Tensor (num_embeddings, embedding_dim), got "
                         f"{getattr(weight, 'shape', type(weight).__name__)}")
    num = weight.shape[0]
    pad = _padding_idx(op, padding_idx, num)
    idx = _indices(op, input, weight)
    _check_range(op, idx, num)
    return _lookup(weight, idx, pad)


def _lookup(weight: Tensor, idx: Tensor, pad: int | None) -> Tensor:
    """``weight[idx]`` for checked indices, the ``pad`` rows cut from the graph."""
    # GetItem directly: ops.getitem would check the bounds a second time (two more syncs)
    rows = _shape_ops.GetItem.apply(weight, index=idx.data)
    if pad is None or not rows.requires_grad:
        return rows
    keep = ops.unsqueeze(idx != pad, -1)  # (..., 1): broadcasts along embedding_dim
    return ops.where(keep, rows, rows.detach())


class Embedding(Module):
    """``torch.nn.Embedding(num_embeddings, embedding_dim, padding_idx=None)``.

    ``weight`` (num_embeddings, embedding_dim) starts from N(0, 1) drawn from the
    ``gg.manual_seed`` generator (identical on every device), with the ``padding_idx`` row zeroed;
    that row is returned like any other but never receives a gradient. ``Embedding.from_pretrained``
    wraps an existing matrix (frozen by default).
    """

    def __init__(self, num_embeddings: int, embedding_dim: int, padding_idx: int | None = None,
                 device: Any = None, dtype: Any = None, _weight: Tensor | None = None,
                 _freeze: bool = False) -> None:
        super().__init__()
        for name, n in (("num_embeddings", num_embeddings), ("embedding_dim", embedding_dim)):
            if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 0:
                raise ValueError(f"Embedding: {name} must be a non-negative int, got {n!r}")
        self.num_embeddings, self.embedding_dim = int(num_embeddings), int(embedding_dim)
        self.padding_idx = _padding_idx("Embedding", padding_idx, self.num_embeddings)
        if _weight is None:
            dt = np.dtype(np.float32 if dtype is None else dtype)
            if dt.kind != "f":
                raise TypeError(f"Embedding: dtype must be floating point, got {dt}")
            w = empty(self.num_embeddings, self.embedding_dim, dtype=dt, device=_device(device))
            self.register_parameter("weight", Parameter(w, requires_grad=not _freeze))
            self.reset_parameters()
        else:
            if _weight.shape != (self.num_embeddings, self.embedding_dim):
                raise ValueError(f"Embedding: _weight must have shape ({self.num_embeddings}, "
                                 f"{self.embedding_dim}), got {_weight.shape}")
            self.register_parameter("weight", Parameter(_weight, requires_grad=not _freeze))

    def reset_parameters(self) -> None:
        init.normal_(self.weight)
        self._fill_padding_idx_with_zero()

    def _fill_padding_idx_with_zero(self) -> None:
        if self.padding_idx is not None:
            with self.weight.device.activate():
                self.weight.data[self.padding_idx] = 0

    @classmethod
    def from_pretrained(cls, embeddings: Tensor, freeze: bool = True,
                        padding_idx: int | None = None) -> Embedding:
        """An Embedding around ``embeddings`` (2-d, shared, not copied), frozen unless
        ``freeze=False``; unlike the constructor it leaves the padding row's values as given."""
        if embeddings.__class__ is not Tensor or embeddings.ndim != 2:
            raise ValueError(f"Embedding.from_pretrained: embeddings must be a 2-d Tensor, got "
                             f"{getattr(embeddings, 'shape', type(embeddings).__name__)}")
        if embeddings.dtype.kind != "f":
            raise TypeError(f"Embedding.from_pretrained: embeddings must be floating point, got "
                            f"{embeddings.dtype}")
        rows, dim = embeddings.shape
        return cls(rows, dim, padding_idx=padding_idx, _weight=embeddings.detach(),
                   _freeze=freeze)

    def forward(self, indices: Any) -> Tensor:
        w = self.weight
        idx = _indices("Embedding", indices, w)
        _check_range(f"Embedding({self.num_embeddings}, {self.embedding_dim})", idx,
                     self.num_embeddings)
        return _lookup(w, idx, self.padding_idx)

    def extra_repr(self) -> str:
        pad = f", padding_idx={self.padding_idx}" if self.padding_idx is not None else ""
        return f"{self.num_embeddings}, {self.embedding_dim}{pad}"
