"""Learning-rate schedulers with PyTorch's semantics: ``StepLR``, ``MultiStepLR``,
``ExponentialLR``, ``CosineAnnealingLR``, ``LinearLR``, ``LambdaLR`` here, and ``OneCycleLR``,
``ReduceLROnPlateau``, ``SequentialLR``, ``ChainedScheduler`` (from ``schedulers.py``).

Call ``scheduler.step()`` once per epoch (or per step, as you define the period), after
``optimizer.step()``. Each scheduler writes ``lr`` into every param group of its optimizer and
remembers the groups' starting rates as ``initial_lr``, like PyTorch. As in PyTorch, ``step()``
updates the groups' *current* rates (the "chainable" form), so several schedulers can act on one
optimizer (``ChainedScheduler``); ``step(epoch)`` jumps with the closed form instead.
"""

from __future__ import annotations

import math
import types
from bisect import bisect_right
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from .optimizer import Optimizer


class LRScheduler:
    """Base class: ``get_lr()`` gives each group's next rate from its current one (chainable),
    ``_get_closed_form_lr()`` the rate at ``last_epoch`` from ``base_lrs``."""

    # Keys a state_dict must have; schedulers that are not built on base_lrs override this.
    _required: tuple[str, ...] = ("last_epoch", "base_lrs")

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
        self._initial_step()

    def _initial_step(self) -> None:
        """The constructor's step. In this "initial" step the schedulers whose rule only scales
        the current rate leave it alone, so a resumed rate is not advanced twice (PyTorch)."""
        self._step_count = 0
        self._is_initial = True
        try:
            self.step()
        finally:
            self._is_initial = False

    def get_lr(self) -> list[float]:
        raise NotImplementedError

    def _get_closed_form_lr(self) -> list[float]:
        return self.get_lr()

    def _group_lrs(self) -> list[float]:
        return [group["lr"] for group in self.optimizer.param_groups]

    def step(self, epoch: int | None = None) -> None:
        """Advance one epoch (or jump to ``epoch``, closed form) and set each group's ``lr``."""
        self._step_count += 1
        self._update_lr(epoch)

    def _update_lr(self, epoch: int | None = None) -> None:
        if epoch is None:
            self.last_epoch += 1
            lrs = self.get_lr()
        else:
            self.last_epoch = int(epoch)
            lrs = self._get_closed_form_lr()
        for group, lr in zip(self.optimizer.param_groups, lrs):
            group["lr"] = lr
        self._last_lr = self._group_lrs()

    def get_last_lr(self) -> list[float]:
        """The rates the last ``step()`` set, one per param group."""
        return list(self._last_lr)

    def state_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, list) else v) for k, v in self.__dict__.items()
                if k != "optimizer"}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        name = type(self).__name__
        if not isinstance(state_dict, Mapping):
            raise ValueError(f"{name}.load_state_dict: expected a dict from state_dict(), got a "
                             f"{type(state_dict).__name__}")
        missing = set(self._required) - set(state_dict)
        if missing:
            raise ValueError(f"{name}.load_state_dict: missing {sorted(missing)}")
        unknown = set(state_dict) - set(self.__dict__)
        if unknown:
            raise ValueError(f"{name}.load_state_dict: unknown keys {sorted(unknown)} (a "
                             "state_dict of another scheduler?)")
        for k, v in state_dict.items():
            if not _same_kind(self.__dict__[k], v):
                raise ValueError(f"{name}.load_state_dict: {k!r} is {v!r}, but this scheduler "
                                 f"holds a {type(self.__dict__[k]).__name__} there")
        fresh = list(self._last_lr)
        for k, v in state_dict.items():
            self._load_attr(k, v)
        # PyTorch leaves the groups alone here. But when the optimizer's state was loaded before
        # this scheduler was built, building it reset the rates; put the restored ones back in
        # exactly those groups (still at the fresh scheduler's rate). A rate set since -- by the
        # optimizer's own state_dict, another scheduler, or by hand -- stays.
        for group, lr, was in zip(self.optimizer.param_groups, self._last_lr, fresh):
            if group["lr"] == was:
                group["lr"] = lr

    def _load_attr(self, key: str, value: Any) -> None:
        """Restore one state_dict entry (subclasses convert the entries they store specially)."""
        setattr(self, key, list(value) if isinstance(value, (list, tuple)) else value)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(last_epoch={getattr(self, 'last_epoch', None)}, "
                f"lr={self._last_lr})")


def _same_kind(old: Any, new: Any) -> bool:
    """Whether ``new`` may replace ``old`` in a scheduler's state: numbers for numbers, lists of
    the same length for lists."""
    if old is None or new is None or not isinstance(old, (int, float, str, list, tuple, dict)):
        return True  # functions, nested schedulers: their own _load_attr converts them
    if isinstance(old, (int, float)) and not isinstance(old, bool):
        return isinstance(new, (int, float)) and not isinstance(new, bool)
    if isinstance(old, (list, tuple)):
        return (isinstance(new, (list, tuple)) and len(new) == len(old)
                and all(_same_kind(a, b) for a, b in zip(old, new)))
    return isinstance(new, type(old)) or isinstance(old, type(new))


def _check_int(name: str, what: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name}: {what} must be an int >= {low}, got {value!r}")


class StepLR(LRScheduler):
    """lr = base_lr · gamma ** (epoch // step_size)."""

    def __init__(self, optimizer: Optimizer, step_size: int, gamma: float = 0.1,
                 last_epoch: int = -1) -> None:
        _check_int("StepLR", "step_size", step_size, 1)
        if not gamma > 0:
            raise ValueError(f"StepLR: gamma must be > 0, got {gamma!r}")
        self.step_size, self.gamma = step_size, float(gamma)
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        if self.last_epoch == 0 or self.last_epoch % self.step_size != 0:
            return self._group_lrs()
        return [lr * self.gamma for lr in self._group_lrs()]

    def _get_closed_form_lr(self) -> list[float]:
        factor = self.gamma ** (self.last_epoch // self.step_size)
        return [base * factor for base in self.base_lrs]


class MultiStepLR(LRScheduler):
    """lr = base_lr · gamma ** (number of milestones <= epoch); a milestone listed twice decays
    twice, as in PyTorch."""

    def __init__(self, optimizer: Optimizer, milestones: Iterable[int], gamma: float = 0.1,
                 last_epoch: int = -1) -> None:
        milestones = list(milestones)
        for m in milestones:
            _check_int("MultiStepLR", "each milestone", m, 0)
        if not gamma > 0:
            raise ValueError(f"MultiStepLR: gamma must be > 0, got {gamma!r}")
        self.milestones, self.gamma = Counter(milestones), float(gamma)
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        if self.last_epoch not in self.milestones:
            return self._group_lrs()
        factor = self.gamma ** self.milestones[self.last_epoch]
        return [lr * factor for lr in self._group_lrs()]

    def _get_closed_form_lr(self) -> list[float]:
        passed = bisect_right(sorted(self.milestones.elements()), self.last_epoch)
        return [base * self.gamma**passed for base in self.base_lrs]

    def _load_attr(self, key: str, value: Any) -> None:
        if key == "milestones":  # a checkpoint gives back a plain dict
            value = Counter({int(k): int(n) for k, n in dict(value).items()})
        super()._load_attr(key, value)


class ExponentialLR(LRScheduler):
    """lr = base_lr · gamma ** epoch."""

    def __init__(self, optimizer: Optimizer, gamma: float, last_epoch: int = -1) -> None:
        if not gamma > 0:
            raise ValueError(f"ExponentialLR: gamma must be > 0, got {gamma!r}")
        self.gamma = float(gamma)
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        if self._is_initial:
            return self._group_lrs()
        return [lr * self.gamma for lr in self._group_lrs()]

    def _get_closed_form_lr(self) -> list[float]:
        return [base * self.gamma**self.last_epoch for base in self.base_lrs]


class CosineAnnealingLR(LRScheduler):
    """lr = eta_min + (base_lr - eta_min) · (1 + cos(pi · epoch / T_max)) / 2, continued
    periodically after T_max, computed step by step like PyTorch (so it chains)."""

    def __init__(self, optimizer: Optimizer, T_max: int, eta_min: float = 0.0,  # noqa: N803
                 last_epoch: int = -1) -> None:
        _check_int("CosineAnnealingLR", "T_max", T_max, 1)
        if not eta_min >= 0:
            raise ValueError(f"CosineAnnealingLR: eta_min must be >= 0, got {eta_min!r}")
        self.T_max, self.eta_min = T_max, float(eta_min)
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        e, t, lo = self.last_epoch, self.T_max, self.eta_min
        if self._is_initial:
            return self._group_lrs()
        if (e - 1 - t) % (2 * t) == 0:  # leaving the minimum: the ratio below would be 0/0
            return [lr + (base - lo) * (1 - math.cos(math.pi / t)) / 2
                    for base, lr in zip(self.base_lrs, self._group_lrs())]
        ratio = (1 + math.cos(math.pi * e / t)) / (1 + math.cos(math.pi * (e - 1) / t))
        return [ratio * (lr - lo) + lo for lr in self._group_lrs()]

    def _get_closed_form_lr(self) -> list[float]:
        c = (1 + math.cos(math.pi * self.last_epoch / self.T_max)) / 2
        return [self.eta_min + (base - self.eta_min) * c for base in self.base_lrs]


class LinearLR(LRScheduler):
    """lr = base_lr · factor, the factor going linearly from ``start_factor`` to ``end_factor``
    over ``total_iters`` steps, then staying at ``end_factor`` (a warm-up by default)."""

    def __init__(self, optimizer: Optimizer, start_factor: float = 1.0 / 3,
                 end_factor: float = 1.0, total_iters: int = 5, last_epoch: int = -1) -> None:
        if not 0 < start_factor <= 1:
            raise ValueError(f"LinearLR: start_factor must be in (0, 1], got {start_factor!r}")
        if not 0 <= end_factor <= 1:
            raise ValueError(f"LinearLR: end_factor must be in [0, 1], got {end_factor!r}")
        _check_int("LinearLR", "total_iters", total_iters, 1)
        self.start_factor, self.end_factor = float(start_factor), float(end_factor)
        self.total_iters = total_iters
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        start, end, n = self.start_factor, self.end_factor, self.total_iters
        if self.last_epoch == 0:
            return [lr * start for lr in self._group_lrs()]
        if self._is_initial or self.last_epoch > n:
            return self._group_lrs()
        # ratio of this step's factor to the previous one
        ratio = 1.0 + (end - start) / (n * start + (self.last_epoch - 1) * (end - start))
        return [lr * ratio for lr in self._group_lrs()]

    def _get_closed_form_lr(self) -> list[float]:
        start, end, n = self.start_factor, self.end_factor, self.total_iters
        factor = start + (end - start) * min(n, self.last_epoch) / n
        return [base * factor for base in self.base_lrs]


class LambdaLR(LRScheduler):
    """lr = base_lr · lr_lambda(epoch); one function for all groups or a list, one per group.
    ``state_dict()`` leaves plain functions out (stored as None) and keeps the ``__dict__`` of
    callable objects, like PyTorch."""

    def __init__(self, optimizer: Optimizer,
                 lr_lambda: Callable[[int], float] | list[Callable[[int], float]],
                 last_epoch: int = -1) -> None:
        n = len(optimizer.param_groups) if isinstance(optimizer, Optimizer) else 0
        if isinstance(lr_lambda, (list, tuple)):
            if len(lr_lambda) != n:
                raise ValueError(f"LambdaLR: expected {n} lr_lambdas (one per param group), "
                                 f"got {len(lr_lambda)}")
            self.lr_lambdas = list(lr_lambda)
        else:
            self.lr_lambdas = [lr_lambda] * n
        if not all(callable(f) for f in self.lr_lambdas):
            raise TypeError("LambdaLR: lr_lambda must be a callable or a list of callables")
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        return [base * f(self.last_epoch) for f, base in zip(self.lr_lambdas, self.base_lrs)]

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["lr_lambdas"] = [None if isinstance(f, types.FunctionType) else dict(f.__dict__)
                               for f in self.lr_lambdas]
        return state

    def _load_attr(self, key: str, value: Any) -> None:
        if key != "lr_lambdas":
            return super()._load_attr(key, value)
        for f, saved in zip(self.lr_lambdas, value):  # the functions themselves stay
            if saved is not None:
                f.__dict__.update(saved)


# Re-exported so that ``gg.optim.lr_scheduler`` holds every scheduler, as torch's module does.
# Imported last: schedulers.py builds on the classes above.
from .schedulers import (  # noqa: E402
    ChainedScheduler,
    OneCycleLR,
    ReduceLROnPlateau,
    SequentialLR,
)

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
