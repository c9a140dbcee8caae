"""Losses as modules, like ``torch.nn``: each holds its options (and weight tensors as buffers)
and calls the function of the same concept in ``gpugrad.ops.losses`` / ``gpugrad.ops.cross_entropy``
(also ``gpugrad.functional``'s)."""

from __future__ import annotations

from typing import Any

from ..ops._loss_args import check_label_smoothing, check_reduction
from ..ops.cross_entropy import cross_entropy, nll_loss
from ..ops.losses import binary_cross_entropy, binary_cross_entropy_with_logits, mse_loss
from ..tensor import Tensor
from .module import Module

__all__ = ["BCELoss", "BCEWithLogitsLoss", "CrossEntropyLoss", "MSELoss", "NLLLoss"]


class _Loss(Module):
    def __init__(self, reduction: str = "mean") -> None:
        super().__init__()
        check_reduction(type(self).__name__, reduction)
        self.reduction = reduction

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}" if self.reduction != "mean" else ""


class _WeightedLoss(_Loss):
    """A loss with optional weight tensors, kept as buffers (so ``.to(device)`` moves them and
    ``state_dict`` saves them, as in PyTorch). They are checked against the input in forward."""

    def __init__(self, reduction: str, **weights: Tensor | None) -> None:
        super().__init__(reduction)
        for name, w in weights.items():
            if w is not None and not isinstance(w, Tensor):
                raise TypeError(f"{type(self).__name__}: {name} must be a Tensor or None, got "
                                f"{type(w).__name__}; wrap it with gg.tensor(...)")
            self.register_buffer(name, w)


class MSELoss(_Loss):
    def forward(self, input: Any, target: Any) -> Tensor:  # noqa: A002
        return mse_loss(input, target, self.reduction)


class BCELoss(_WeightedLoss):
    """``binary_cross_entropy``; ``weight`` broadcasts to the input's shape."""

    def __init__(self, reduction: str = "mean", *, weight: Tensor | None = None) -> None:
        super().__init__(reduction, weight=weight)

    def forward(self, input: Any, target: Any) -> Tensor:  # noqa: A002
        return binary_cross_entropy(input, target, self.reduction, weight=self.weight)


class BCEWithLogitsLoss(_WeightedLoss):
    """``binary_cross_entropy_with_logits``; ``pos_weight`` has one entry per class (last dim)."""

    def __init__(self, reduction: str = "mean", *, weight: Tensor | None = None,
                 pos_weight: Tensor | None = None) -> None:
        super().__init__(reduction, weight=weight, pos_weight=pos_weight)

    def forward(self, input: Any, target: Any) -> Tensor:  # noqa: A002
        return binary_cross_entropy_with_logits(input, target, self.reduction,
                                                  weight=self.weight, pos_weight=self.pos_weight)


class NLLLoss(_WeightedLoss):
    """``nll_loss``; ``weight`` has one entry per class."""

    def __init__(self, reduction: str = "mean", ignore_index: int = -100, *,
                 weight: Tensor | None = None) -> None:
        super().__init__(reduction, weight=weight)
        self.ignore_index = ignore_index

    def forward(self, input: Any, target: Any) -> Tensor:  # noqa: A002
        return nll_loss(input, target, self.reduction, self.ignore_index, weight=self.weight)

    def extra_repr(self) -> str:
        parts = [super().extra_repr()] + ([f"ignore_index={self.ignore_index}"]
                                          if self.ignore_index != -100 else [])
        return ", ".join(p for p in parts if p)


class CrossEntropyLoss(NLLLoss):
    """``cross_entropy``; ``weight`` has one entry per class, ``label_smoothing`` is in [0, 1].

    The new options are keyword-only: the first positional argument stays ``reduction``.
    """

    def __init__(self, reduction: str = "mean", ignore_index: int = -100, *,
                 weight: Tensor | None = None, label_smoothing: float = 0.0) -> None:
        super().__init__(reduction, ignore_index, weight=weight)
        self.label_smoothing = check_label_smoothing(type(self).__name__, label_smoothing)

    def forward(self, input: Any, target: Any) -> Tensor:  # noqa: A002
        return cross_entropy(input, target, self.reduction, self.ignore_index,
                               weight=self.weight, label_smoothing=self.label_smoothing)

    def extra_repr(self) -> str:
        parts = [super().extra_repr()] + ([f"label_smoothing={self.label_smoothing}"]
                                          if self.label_smoothing else [])
        return ", ".join(p for p in parts if p)
