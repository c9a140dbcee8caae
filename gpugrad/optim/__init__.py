"""Optimizers and learning-rate schedulers, like ``torch.optim``."""

from . import lr_scheduler
from .lr_scheduler import CosineAnnealingLR, LRScheduler, StepLR
from .optimizer import SGD, Adam, AdamW, Optimizer

__all__ = [
    "SGD",
    "Adam",
    "AdamW",
    "CosineAnnealingLR",
    "LRScheduler",
    "Optimizer",
    "StepLR",
    "lr_scheduler",
]
