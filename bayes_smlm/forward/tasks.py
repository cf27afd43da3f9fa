"""Named tasks: a name -> factory registry (no if/elif lookup).

>>> from bayes_smlm.forward.tasks import get_task
>>> get_task("isolated").prior.n_emitters
1
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from bayes_smlm.errors import ConfigError
from bayes_smlm.forward.config import Camera, Optics, ScenePrior, Task, validate, with_overrides

TaskFactory = Callable[[], Task]
_TASKS: dict[str, TaskFactory] = {}


def register_task(name: str) -> Callable[[TaskFactory], TaskFactory]:
    """Decorator registering a zero-argument factory that returns a :class:`Task`."""

    def decorate(factory: TaskFactory) -> TaskFactory:
        if name in _TASKS:
            raise ValueError(f"task {name!r} is already registered")
        _TASKS[name] = factory
        return factory

    return decorate


def list_tasks() -> list[str]:
    """Names of the registered tasks, sorted."""
    return sorted(_TASKS)


def get_task(name: str, overrides: Mapping[str, Any] | None = None) -> Task:
    """Build the named task, apply ``overrides`` (see :func:`config.with_overrides`), validate.

    Raises
    ------
    ConfigError
        If the name is unknown or an override is out of range.
    """
    if name not in _TASKS:
        raise ConfigError("task", f"unknown task {name!r}; choose from {', '.join(list_tasks())}")
    task = validate(_TASKS[name]())
    return with_overrides(task, overrides) if overrides else task


@register_task("isolated")
def _isolated() -> Task:
    """One emitter uniform on the radius-7 disc about the frame centre (docs/conventions.md §2)."""
    return Task(name="isolated", optics=Optics(), camera=Camera(), prior=ScenePrior(n_emitters=1))


@register_task("paper")
def _paper() -> Task:
    """The authors' setting: 10 emitters on the radius-7 disc, i0 = 200, σy = 1.5 HR px."""
    return Task(name="paper", optics=Optics(), camera=Camera(), prior=ScenePrior(n_emitters=10))


@register_task("widefield")
def _widefield() -> Task:
    """A patch of a camera's field of view (32 × 32 px here, the size φ trains on; φ is fully
    convolutional and ``localize`` takes the movie's size) with
    emitters of unknown brightness on an unknown background: the weak priors of ``localize``
    (i0 in 100–10 000 photons, b in 0–500 photons/px), from which the simulator draws each
    emitter's i0 and each frame's b."""
    return Task(
        name="widefield",
        height=32,
        width=32,
        optics=Optics(),
        camera=Camera(),
        prior=ScenePrior(
            n_emitters=6,
            radius=15.0,
            i0=1000.0,
            background=10.0,
            i0_range=(100.0, 10000.0),
            background_range=(0.0, 500.0),
            brightness="drawn",
        ),
    )
