"""Posterior-method registry: a dict from name to a function with one calling convention.

A method is ``fn(task, adu, *, seed, chains, draws, progress, **options) -> PosteriorResult``
where ``adu`` is (F, H, W) in ADU. Register your own with :func:`register_method`, or expose it
through the ``bayes_smlm.methods`` entry-point group of your package; it then appears wherever
methods are listed (``bayes-smlm posterior --method``, the calibration study).
"""

from __future__ import annotations

import importlib.metadata
import warnings
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from bayes_smlm.errors import ConfigError
from bayes_smlm.forward.config import Task
from bayes_smlm.methods.result import PosteriorResult
from bayes_smlm.methods.spec import MCMC_FLAGS, Brightness, EmitterCount, MethodSpec, Returns


class PluginWarning(UserWarning):
    """A plug-in method that could not be loaded (the others work)."""


class PosteriorMethod(Protocol):
    def __call__(
        self,
        task: Task,
        adu: np.ndarray,
        *,
        seed: int = 0,
        chains: int = 4,
        draws: int = 1000,
        progress: bool = False,
        **options: Any,
    ) -> PosteriorResult: ...


_SPECS: dict[str, MethodSpec] = {}  # every loaded method: its function and what it is
_PLUGINS: dict[str, importlib.metadata.EntryPoint] = {}  # found, not yet imported
_BROKEN: dict[str, str] = {}  # plug-ins whose import failed: why
_ENTRY_POINTS_LOADED = False
_BUILTINS_LOADED = False
ENTRY_POINT_GROUP = "bayes_smlm.methods"


def register_method(
    name: str,
    *,
    replace: bool = False,
    returns: Returns = "draws",
    emitter_count: EmitterCount = "given",
    brightness: Brightness = "fixed",
    flags: str = MCMC_FLAGS,
) -> Callable[[PosteriorMethod], PosteriorMethod]:
    """Decorator adding ``fn`` to the registry under ``name``, with what it is
    (:class:`~bayes_smlm.methods.spec.MethodSpec`: ``returns`` θ draws or only the KDE,
    ``emitter_count`` given or weighed by evidence, ``brightness`` fixed or inferred, how it
    ``flags`` a frame); its options are read from its signature and docstring."""

    def decorate(fn: PosteriorMethod) -> PosteriorMethod:
        if not getattr(fn, "__module__", "").startswith(f"{__package__}."):
            builtin_methods()  # a user's method: the built-ins' names are taken first
        if name in _SPECS and not replace:
            raise ValueError(f"posterior method {name!r} is already registered")
        _SPECS[name] = MethodSpec(
            name,
            fn,
            returns=returns,
            emitter_count=emitter_count,
            brightness=brightness,
            flags=flags,
        )
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
        raise ConfigError(
            "method",
            f"{method} holds i0 and the background at the task's values, "
            "and this task draws them (prior.brightness=drawn): use "
            "smc or laplace, which infer them, or --set "
            "prior.brightness=fixed",
        )


def unregister_method(name: str) -> None:
    """Remove a method (for tests and interactive sessions)."""
    _SPECS.pop(name, None)


def _distribution(ep: importlib.metadata.EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    return f"{dist.name} {dist.version}" if dist is not None else "an unknown distribution"


def builtin_methods() -> None:
    """Import every module of :mod:`bayes_smlm.methods` once, registering the methods written
    there (at first use rather than with the package: the methods import the I/O modules that
    import the package's helpers)."""
    global _BUILTINS_LOADED
    if _BUILTINS_LOADED:
        return
    _BUILTINS_LOADED = True
    import importlib
    import pkgutil

    import bayes_smlm.methods as package

    for module in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{package.__name__}.{module.name}")


def _load_entry_points() -> None:
    """Find the plug-ins (``bayes_smlm.methods`` entry points) without importing them: each is
    imported when it is first asked for, so a broken one costs only itself. A plug-in whose name
    a built-in or registered method already has is not loaded (one warning naming both)."""
    global _ENTRY_POINTS_LOADED
    builtin_methods()  # first: a plug-in may not take a built-in's name
    if _ENTRY_POINTS_LOADED:
        return
    _ENTRY_POINTS_LOADED = True
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in _SPECS or ep.name in _PLUGINS:
            warnings.warn(
                f"plug-in method {ep.name!r} of {_distribution(ep)} ({ep.value}) not "
                f"loaded: the name is taken by the method already registered as "
                f"{ep.name!r}",
                PluginWarning,
                stacklevel=3,
            )
            continue
        _PLUGINS[ep.name] = ep


def _load_plugin(name: str) -> PosteriorMethod | None:
    """Import plug-in ``name`` and make its spec from its
    :func:`~bayes_smlm.methods.spec.describe_method` traits (without them: θ draws, the count
    given, i0 and b fixed, MCMC flags); None (and one warning naming it) where either fails."""
    ep = _PLUGINS.pop(name)
    try:
        method = ep.load()
        spec = MethodSpec(name, method, **getattr(method, "method_traits", {}))
    except Exception as err:  # whatever a third-party import raises: report it, go on
        warnings.warn(
            f"plug-in method {name!r} of {_distribution(ep)} ({ep.value}) failed to "
            f"load: {type(err).__name__}: {err}",
            PluginWarning,
            stacklevel=3,
        )
        _BROKEN[name] = f"{_distribution(ep)} failed to load it ({type(err).__name__})"
        return None
    _SPECS[name] = spec
    return method


def list_methods() -> list[str]:
    """Names of all registered methods (built-in, user-registered, entry points not yet
    imported; not those whose import failed)."""
    _load_entry_points()
    return sorted({*_SPECS, *_PLUGINS})


def get_method(name: str) -> PosteriorMethod:
    """The method registered as ``name``; a one-line error lists the choices otherwise."""
    return method_spec(name).fn


def method_spec(name: str) -> MethodSpec:
    """The :class:`~bayes_smlm.methods.spec.MethodSpec` of method ``name`` (a plug-in's is
    made when it is first asked for); a one-line error lists the choices otherwise."""
    _load_entry_points()
    if name in _PLUGINS:
        _load_plugin(name)
    if name not in _SPECS:
        why = f" ({_BROKEN[name]})" if name in _BROKEN else ""
        raise ConfigError(
            "method", f"unknown method {name!r}{why}; choose from {', '.join(list_methods())}"
        )
    return _SPECS[name]
