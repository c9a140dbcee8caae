"""Learning-rate schedulers with PyTorch's semantics: ``StepLR``, ``MultiStepLR``,
``ExponentialLR``, ``CosineAnnealingLR``, ``LinearLR``, ``LambdaLR`` (``closed_form``),
``OneCycleLR`` (``one_cycle``), ``ReduceLROnPlateau`` (``plateau``), ``SequentialLR`` and
``ChainedScheduler`` (``combinators``), all on ``LRScheduler`` (``base``).

Call ``scheduler.step()`` once per epoch (or per step, as you define the period), after
``optimizer.step()``. Each scheduler writes ``lr`` into every param group of its optimizer and
remembers the groups' starting rates as ``initial_lr``, like PyTorch. As in PyTorch, ``step()``
updates the groups' *current* rates (the "chainable" form), so several schedulers can act on one
optimizer (``ChainedScheduler``); ``step(epoch)`` jumps with the closed form instead.
"""

from .base import LRScheduler
from .closed_form import (
    CosineAnnealingLR,
    ExponentialLR,
    LambdaLR,
    LinearLR,
    MultiStepLR,
    StepLR,
)
from .combinators import ChainedScheduler, SequentialLR
from .one_cycle import OneCycleLR
from .plateau import ReduceLROnPlateau

__all__ = [
    "ChainedScheduler",
    "CosineAnnealingLR",
    "ExponentialLR",
    "LRScheduler",
    "LambdaLR",
    "LinearLR",
    "MultiStepLR",
    "OneCycleLR",
    "ReduceLROnPlateau",
    "SequentialLR",
    "StepLR",
]
