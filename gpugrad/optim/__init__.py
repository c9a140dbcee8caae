"""Optimizers and learning-rate schedulers, like ``torch.optim``: one module per optimizer family
(``sgd``, ``adam``, ``rmsprop``, ``adagrad``, on the ``optimizer.Optimizer`` base) and the
``lr_scheduler`` package. ``OPTIMIZERS`` maps each optimizer's name (as the CLI and
``gpugrad.parity`` spell it) to its class."""

from __future__ import annotations

from . import lr_scheduler
from .adagrad import Adagrad
from .adam import Adam, AdamW
from .lr_scheduler import *  # noqa: F403 -- every scheduler, as torch.optim re-exports them
from .optimizer import Optimizer
from .rmsprop import RMSprop
from .sgd import SGD

OPTIMIZERS: dict[str, type[Optimizer]] = {
    "sgd": SGD,
    "adam": Adam,
    "adamw": AdamW,
    "rmsprop": RMSprop,
    "adagrad": Adagrad,
}


def optimizer_class(name: str) -> type[Optimizer]:
    """The optimizer class registered as ``name`` in ``OPTIMIZERS`` (``ValueError`` otherwise)."""
    try:
        return OPTIMIZERS[name]
    except (KeyError, TypeError):
        names = ", ".join(repr(n) for n in OPTIMIZERS)
        raise ValueError(f"unknown optimizer {name!r}; choose from {names}") from None


__all__ = ["OPTIMIZERS", "SGD", "Adagrad", "Adam", "AdamW", "Optimizer", "RMSprop",
           "lr_scheduler", "optimizer_class", *lr_scheduler.__all__]
