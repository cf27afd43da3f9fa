"""The prior over the number of emitters in a frame (``prior.count``).

``prior.count`` says how the simulator draws a frame's emitter count N and what prior P(n) the
posteriors over the count (``--n-emitters``) weigh the evidence with:

- ``fixed`` (default): N = ``prior.n_emitters`` in every frame; a posterior over several listed
  counts weighs them uniformly (nothing in the task prefers one).
- ``poisson``: N ~ Poisson(``prior.n_emitters``), the mean. Frames hold at most
  :func:`count_maximum` emitters (the count whose Poisson upper tail is below
  :data:`POISSON_TAIL`; a draw above it, with probability below that tail, is clipped).
- ``LO-HI`` (e.g. ``0-3``): N uniform on the integers LO … HI.

Arrays of a frame with a drawn count hold :func:`count_maximum` rows; rows beyond the frame's
count are absent (θ and i0 NaN, no photons, no KDE).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import lru_cache
from typing import Any

import numpy as np
from scipy import stats

from bayes_smlm.errors import ConfigError

POISSON_TAIL = 1e-6  # P(N > count_maximum) under a Poisson count prior
MAX_COUNT = 1000  # as prior.n_emitters
_RANGE = re.compile(r"^\s*(\d+)\s*-\s*(\d+)\s*$")


def check_count(name: str, value: object) -> str:
    """``value`` if it is ``fixed``, ``poisson`` or a range ``LO-HI`` of counts, else a
    one-line ConfigError naming the argument."""
    if value in ("fixed", "poisson"):
        return str(value)
    match = _RANGE.match(value) if isinstance(value, str) else None
    if match is None:
        raise ConfigError(name, f"must be fixed, poisson or a range LO-HI like 0-3 (got {value!r})")
    lo, hi = int(match[1]), int(match[2])
    if not 0 <= lo < hi <= MAX_COUNT:
        raise ConfigError(name, f"range needs 0 <= LO < HI <= {MAX_COUNT} (got {lo}-{hi})")
    return f"{lo}-{hi}"


def _bounds(count: str, n_emitters: int) -> tuple[int, int]:
    if count == "fixed":
        return n_emitters, n_emitters
    if count == "poisson":
        return 0, _poisson_maximum(float(n_emitters))
    lo, hi = count.split("-")
    return int(lo), int(hi)


@lru_cache(maxsize=64)
def _poisson_maximum(mean: float) -> int:
    return int(stats.poisson.isf(POISSON_TAIL, mean))


def count_is_drawn(prior) -> bool:
    """Whether the task's frames hold a random number of emitters."""
    return prior.count != "fixed"


def count_maximum(prior) -> int:
    """The most emitters a frame of this prior holds (the rows of its θ and i0 arrays)."""
    return _bounds(prior.count, prior.n_emitters)[1]


def count_support(prior) -> tuple[int, ...]:
    """The counts of non-negligible prior probability: the default of ``--n-emitters``."""
    lo, hi = _bounds(prior.count, prior.n_emitters)
    return tuple(range(lo, hi + 1))


def count_log_prior(prior, counts) -> np.ndarray:
    """log P(n) of each listed count, renormalised over them (the posterior over counts sees
    only those): uniform for a fixed-count task; ConfigError when none has prior mass."""
    counts = np.asarray(counts, int)
    if prior.count == "fixed":
        return np.full(len(counts), -np.log(len(counts)))
    lo, hi = _bounds(prior.count, prior.n_emitters)
    inside = (counts >= lo) & (counts <= hi)
    if prior.count == "poisson":
        log_p = stats.poisson.logpmf(counts, float(prior.n_emitters))
    else:
        log_p = np.zeros(len(counts))
    log_p = np.where(inside, log_p, -np.inf)
    if not np.any(inside):
        raise ConfigError(
            "n_emitters",
            f"none of the counts {counts.tolist()} is possible under "
            f"prior.count={prior.count} (counts {lo}-{hi})",
        )
    return log_p - np.logaddexp.reduce(log_p[inside])


def count_sampler(prior) -> Callable[[Any], Any]:
    """Pure ``key -> N`` (int32 scalar) drawing a frame's emitter count from the prior."""
    import jax  # here, not at import: the config must load before the CLI configures JAX
    import jax.numpy as jnp

    lo, hi = _bounds(prior.count, prior.n_emitters)
    if prior.count == "poisson":
        mean = float(prior.n_emitters)
        return lambda key: jnp.minimum(jax.random.poisson(key, mean), hi).astype(jnp.int32)
    return lambda key: jax.random.randint(key, (), lo, hi + 1, dtype=jnp.int32)


def emitter_counts(theta: np.ndarray) -> np.ndarray:
    """(F,) the number of present emitters of each frame of θ (F, N, 2) (absent rows are NaN)."""
    return np.sum(~np.isnan(np.asarray(theta)[..., 0]), axis=-1)


def require_fixed_count(task, method: str) -> None:
    """One-line ConfigError for a method that needs the count on a task that draws it."""
    if count_is_drawn(task.prior):
        raise ConfigError(
            "method",
            f"{method} needs a fixed emitter count, and this task draws "
            f"it (prior.count={task.prior.count}): use smc, laplace or "
            "auto with --n-emitters, or --set prior.count=fixed",
        )


__all__ = [
    "POISSON_TAIL",
    "check_count",
    "count_is_drawn",
    "count_log_prior",
    "count_maximum",
    "count_sampler",
    "count_support",
    "emitter_counts",
    "require_fixed_count",
]
