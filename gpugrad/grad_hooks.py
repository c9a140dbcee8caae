"""Leaf-gradient hooks: user code the backward walk runs as gradients land.

Data-parallel training reduces a parameter's gradient as soon as it is accumulated and finishes
when the walk ends. Both registries are empty unless something registers: the walk then tests
one local ``None`` per leaf write and one empty list per backward. ``gpugrad.autograd`` runs them
and re-exports every name here; ``gg.compile`` reads the registries to refuse a walk that would
call them (the registries are only ever mutated, never rebound, so every alias sees them).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable

from .tensor import Tensor

__all__ = ["RemovableHandle", "register_backward_done_callback",
           "register_post_accumulate_grad_hook"]

_grad_hooks: dict[int, tuple[weakref.ref, list[Callable]]] = {}
_backward_done: list[Callable[[], None]] = []


class RemovableHandle:
    """Returned by the hook registrations; ``remove()`` unregisters (idempotent)."""

    def __init__(self, remove: Callable[[], None]) -> None:
        self._remove = remove

    def remove(self) -> None:
        remove, self._remove = self._remove, None
        if remove is not None:
            remove()


def register_post_accumulate_grad_hook(tensor: Tensor, hook: Callable) -> RemovableHandle:
    """Call ``hook(tensor)`` each time backward accumulates a gradient into leaf ``tensor.grad``.

    Like ``torch.Tensor.register_post_accumulate_grad_hook``: the hook runs after ``.grad`` is
    written (a leaf reached by several paths fires once per path) and never for ``gg.grad``,
    which leaves ``.grad`` alone.
    """
    if not isinstance(tensor, Tensor) or tensor._ctx is not None or not tensor.requires_grad:
        raise RuntimeError("register_post_accumulate_grad_hook: the tensor must be a leaf that "
                           "requires grad (a parameter)")
    key = id(tensor)

    def forget(ref: weakref.ref) -> None:
        if _grad_hooks.get(key, (None,))[0] is ref:  # the id may already belong to a new tensor
            del _grad_hooks[key]

    entry = _grad_hooks.get(key)
    if entry is None or entry[0]() is not tensor:
        entry = _grad_hooks[key] = (weakref.ref(tensor, forget), [])
    entry[1].append(hook)

    def remove() -> None:
        if hook in entry[1]:
            entry[1].remove(hook)
        if not entry[1] and _grad_hooks.get(key) is entry:
            del _grad_hooks[key]

    return RemovableHandle(remove)


def register_backward_done_callback(callback: Callable[[], None]) -> RemovableHandle:
    """Call ``callback()`` after every successful ``backward()`` that writes ``.grad``."""
    _backward_done.append(callback)
    return RemovableHandle(lambda: callback in _backward_done and _backward_done.remove(callback))


def fire_grad_hooks(hooks: dict, leaf: Tensor) -> None:
    """Run the post-accumulate-grad hooks registered for ``leaf`` (``hooks`` is ``_grad_hooks``)."""
    entry = hooks.get(id(leaf))
    if entry is not None and entry[0]() is leaf:
        for hook in tuple(entry[1]):
            hook(leaf)
