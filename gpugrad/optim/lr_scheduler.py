"""Learning-rate schedulers: ``StepLR`` and ``CosineAnnealingLR`` (PyTorch's closed forms).

Call ``scheduler.step()`` once per epoch (or per step, as you define the period), after
``optimizer.step()``. Each scheduler writes ``lr`` into every param group of its optimizer and
remembers the groups' starting rates as ``initial_lr``, like PyTorch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from .optimizer import Optimizer


class LRScheduler:
    """Base class: ``get_lr()`` gives each group's rate at ``last_epoch`` (a closed form)."""

    def __init__(self, optimizer: Optimizer, last_epoch: int = -1) -> None:
        name = type(self).__name__
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{name}: expected an Optimizer, got {type(optimizer).__name__}")
        self.optimizer = optimizer
        if last_epoch == -1:
            for group in optimizer.param_groups:
                group.setdefault("initial_lr", group["lr"])
        elif any("initial_lr" not in g for g in optimizer.param_groups):
            raise ValueError(f"{name}: resuming with last_epoch={last_epoch} needs 'initial_lr' "
                             "in every param group (load the optimizer's state_dict first)")
        self.base_lrs: list[float] = [float(g["initial_lr"]) for g in optimizer.param_groups]
        self.last_epoch = int(last_epoch)
        self._last_lr: list[float] = []
        self.step()

    def get_lr(self) -> list[float]:
        raise NotImplementedError

    def step(self, epoch: int | None = None) -> None:
        """Advance one epoch (or jump to ``epoch``) and set each group's ``lr``."""
        self.last_epoch = self.last_epoch + 1 if epoch is None else int(epoch)
        lrs = self.get_lr()
        for group, lr in zip(self.optimizer.param_groups, lrs):
            group["lr"] = lr
        self._last_lr = lrs

    def get_last_lr(self) -> list[float]:
        """The rates the last ``step()`` set, one per param group."""
        return list(self._last_lr)

    def state_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, list) else v) for k, v in self.__dict__.items()
                if k != "optimizer"}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        missing = {"last_epoch", "base_lrs"} - set(state_dict)
        if missing:
            raise ValueError(f"{type(self).__name__}.load_state_dict: missing {sorted(missing)}")
        unknown = set(state_dict) - set(self.__dict__)
        if unknown:
            raise ValueError(f"{type(self).__name__}.load_state_dict: unknown keys "
                             f"{sorted(unknown)} (a state_dict of another scheduler?)")
        for k, v in state_dict.items():
            setattr(self, k, list(v) if isinstance(v, (list, tuple)) else v)
        # Put the restored rates back into the optimizer, so resuming works whether the
        # optimizer's state was loaded before or after this scheduler was built.
        for group, lr in zip(self.optimizer.param_groups, self._last_lr):
            group["lr"] = lr

    def __repr__(self) -> str:
        return f"{type(self).__name__}(last_epoch={self.last_epoch}, lr={self._last_lr})"


class StepLR(LRScheduler):
    """lr = base_lr · gamma ** (epoch // step_size)."""

    def __init__(self, optimizer: Optimizer, step_size: int, gamma: float = 0.1,
                 last_epoch: int = -1) -> None:
        if isinstance(step_size, bool) or not isinstance(step_size, int) or step_size < 1:
            raise ValueError(f"StepLR: step_size must be an int >= 1, got {step_size!r}")
        if not gamma > 0:
            raise ValueError(f"StepLR: gamma must be > 0, got {gamma!r}")
        self.step_size, self.gamma = step_size, float(gamma)
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        factor = self.gamma ** (self.last_epoch // self.step_size)
        return [base * factor for base in self.base_lrs]


class CosineAnnealingLR(LRScheduler):
    """lr = eta_min + (base_lr - eta_min) · (1 + cos(pi · epoch / T_max)) / 2 (periodic after
    T_max, as PyTorch's closed form)."""

    def __init__(self, optimizer: Optimizer, T_max: int, eta_min: float = 0.0,  # noqa: N803
                 last_epoch: int = -1) -> None:
        if isinstance(T_max, bool) or not isinstance(T_max, int) or T_max < 1:
            raise ValueError(f"CosineAnnealingLR: T_max must be an int >= 1, got {T_max!r}")
        if not eta_min >= 0:
            raise ValueError(f"CosineAnnealingLR: eta_min must be >= 0, got {eta_min!r}")
        self.T_max, self.eta_min = T_max, float(eta_min)
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        c = (1 + math.cos(math.pi * self.last_epoch / self.T_max)) / 2
        return [self.eta_min + (base - self.eta_min) * c for base in self.base_lrs]
