"""``LRScheduler``, the base class of every scheduler, and the argument checks they share."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ...autograd import untraceable
from ..optimizer import Optimizer


def not_in_compile() -> None:
    """A scheduler's step() inside a ``gg.compile``'d function cannot be replayed."""
    untraceable("lr_scheduler step()", "it changes Python state (the rates) that a replay "
                "does not repeat; call it outside the compiled function (the replay reads the "
                "new rates)")


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
        not_in_compile()
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


def _per_group(name: str, what: str, optimizer: Optimizer, value: Any) -> list[float]:
    """One value per param group: a list of that length, or one value repeated."""
    n = len(optimizer.param_groups)
    if isinstance(value, (list, tuple)):
        if len(value) != n:
            raise ValueError(f"{name}: expected {n} values of {what} (one per param group), "
                             f"got {len(value)}")
        return [float(v) for v in value]
    return [float(value)] * n
