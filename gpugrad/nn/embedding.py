"""``Embedding``: a lookup table of vectors, like ``torch.nn.Embedding``. Its functional form
``embedding`` (``torch.nn.functional.embedding``'s argument order), with the index checks and the
``padding_idx`` rule, is in ``gpugrad.ops.indexing``; it is re-exported here for existing imports.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

from ..backend import device as _device
from ..creation import empty
from ..ops.indexing import (
    check_embedding_range,
    embedding,
    embedding_indices,
    embedding_lookup,
    padding_idx_arg,
)
from ..tensor import Tensor
from . import init
from .module import Module, Parameter

__all__ = ["Embedding", "embedding"]


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
        self.padding_idx = padding_idx_arg("Embedding", padding_idx, self.num_embeddings)
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
        idx = embedding_indices("Embedding", indices, w)
        check_embedding_range(f"Embedding({self.num_embeddings}, {self.embedding_dim})", idx,
                     self.num_embeddings)
        return embedding_lookup(w, idx, self.padding_idx)

    def extra_repr(self) -> str:
        pad = f", padding_idx={self.padding_idx}" if self.padding_idx is not None else ""
        return f"{self.num_embeddings}, {self.embedding_dim}{pad}"
