"""Posterior-method registry: a dict from name to a function with one calling convention.

A method is ``fn(task, adu, *, seed, chains, draws, progress, **options) -> PosteriorResult``
where ``adu`` is (F, H, W) in ADU. Register your own with :func:`register_method`, or expose it
through the ``bayes_smlm.methods`` entry-point group of your package; it then appears wherever
methods are listed (``bayes-smlm posterior --method``, the calibration study).
"""

from __future__ import annotations

import importlib.metadata
from typing import Any, Callable, Protocol

import numpy as np

from bayes_smlm.errors import ConfigError
from bayes_smlm.forward.config import Task
from bayes_smlm.methods.result import PosteriorResult


class PosteriorMethod(Protocol):
    def __call__(self, task: Task, adu: np.ndarray, *, seed: int = 0, chains: int = 4,
                 draws: int = 1000, progress: bool = False, **options: Any) -> PosteriorResult: ...


_METHODS: dict[str, PosteriorMethod] = {}
_ENTRY_POINTS_LOADED = False
ENTRY_POINT_GROUP = "bayes_smlm.methods"


def register_method(name: str, *, replace: bool = False) -> Callable[[PosteriorMethod], PosteriorMethod]:
    """Decorator adding ``fn`` to the registry under ``name``."""
    def decorate(fn: PosteriorMethod) -> PosteriorMethod:
        if name in _METHODS and not replace:
            raise ValueError(f"posterior method {name!r} is already registered")
        _METHODS[name] = fn
        return fn
    return decorate


def reject_unknown_options(method: str, unknown: dict[str, Any]) -> None:
    """One-line error for options a method does not take (instead of a TypeError traceback)."""
    if unknown:
        raise ConfigError("method", f"{method} takes no option(s) {sorted(unknown)}")


def require_fixed_brightness(task: Task, method: str) -> None:
    """One-line ConfigError for a method that holds i0 and b at the task's values on a task that
    draws them (``prior.brightness = drawn``): its posterior would be of another model."""
    if task.prior.brightness == "drawn":
        raise ConfigError("method", f"{method} holds i0 and the background at the task's values, "
                                    "and this task draws them (prior.brightness=drawn): use "
                                    "smc or laplace, which infer them, or --set "
                                    "prior.brightness=fixed")


def unregister_method(name: str) -> None:
    """Remove a method (for tests and interactive sessions)."""
    _METHODS.pop(name, None)


def _load_entry_points() -> None:
    global _ENTRY_POINTS_LOADED
    if _ENTRY_POINTS_LOADED:
        return
    _ENTRY_POINTS_LOADED = True
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if ep.name not in _METHODS:
            _METHODS[ep.name] = ep.load()


def list_methods() -> list[str]:
    """Names of all registered methods (built-in, user-registered, entry points)."""
    _load_entry_points()
    return sorted(_METHODS)


def get_method(name: str) -> PosteriorMethod:
    """The method registered as ``name``; a one-line error lists the choices otherwise."""
    _load_entry_points()
    if name not in _METHODS:
        raise ConfigError("method", f"unknown method {name!r}; choose from {', '.join(list_methods())}")
    return _METHODS[name]
