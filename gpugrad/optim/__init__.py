"""Optimizers and learning-rate schedulers, like ``torch.optim``."""

from . import lr_scheduler
from .adagrad import Adagrad
from .lr_scheduler import *  # noqa: F403 -- every scheduler, as torch.optim re-exports them
from .optimizer import SGD, Adam, AdamW, Optimizer
from .rmsprop import RMSprop

__all__ = ["SGD", "Adagrad", "Adam", "AdamW", "Optimizer", "RMSprop", "lr_scheduler",
           *lr_scheduler.__all__]
