"""Posteriors over the emitter count: evidence per count, P(n | x), and the KDE mixture over n.

A method that estimates the marginal likelihood Z_n = p(x | n) = ∫ π(θ | n) p(x | θ, n) dθ for
each count n it is asked about returns an :class:`Evidence`; P(n | x) ∝ P(n) Z_n with P(n) the
task's prior on the count (``prior.count``, :mod:`bayes_smlm.forward.count_prior`) renormalised
over the listed counts — uniform over them where the task fixes n. The
KDE posterior given x alone is then the mixture over n of the per-count posteriors:
E[y] = Σ P(n|x) E[y | n], Var[y] = Σ P(n|x) (Var[y | n] + E[y | n]²) − E[y]².

n = 0 is a valid count (a frame of background only): its evidence is the likelihood itself and
its KDE is exactly 0. Combining per-count posteriors into one result: :mod:`.counts`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.special import logsumexp, softmax

from bayes_smlm.errors import ConfigError
from bayes_smlm.forward.config import Task, with_overrides
from bayes_smlm.forward.count_prior import MAX_COUNT, count_is_drawn, count_support


@dataclass
class Evidence:
    """Log evidence per frame and count.

    Attributes
    ----------
    counts : (K,) int ndarray
        Emitter counts n, ascending.
    log_evidence, log_evidence_se : (F, K) ndarray
        log p(x | n) of each frame (the density of the ADU frame, nats) and its Monte Carlo
        standard error (0 where exact; NaN where the method gives none, e.g. Laplace).
    log_prior : (K,) ndarray
        log P(n) over the listed counts (uniform where the task fixes n).
    """

    counts: np.ndarray
    log_evidence: np.ndarray
    log_evidence_se: np.ndarray
    log_prior: np.ndarray | None = field(default=None)

    def __post_init__(self) -> None:
        self.counts = np.asarray(self.counts, int)
        k = len(self.counts)
        if self.log_prior is None:
            self.log_prior = np.full(k, -np.log(k))
        self.log_evidence = np.asarray(self.log_evidence, np.float64).reshape(-1, k)
        self.log_evidence_se = np.asarray(self.log_evidence_se, np.float64).reshape(-1, k)

    @property
    def p_n(self) -> np.ndarray:
        """(F, K) posterior probability of each count."""
        return softmax(self.log_evidence + self.log_prior, axis=-1)

    @property
    def most_probable(self) -> np.ndarray:
        """(F,) the count of highest posterior probability."""
        return self.counts[np.argmax(self.p_n, axis=-1)]

    def log_marginal(self) -> np.ndarray:
        """(F,) log p(x) with the count summed out."""
        return logsumexp(self.log_evidence + self.log_prior, axis=-1)

    def select(self, frames: np.ndarray) -> Evidence:
        return Evidence(
            self.counts, self.log_evidence[frames], self.log_evidence_se[frames], self.log_prior
        )


def parse_counts(value: Any, task: Task) -> tuple[int, ...]:
    """The counts asked for: None → the task's (its one count, or every count of non-negligible
    prior probability where ``prior.count`` draws it); an int; a list of ints; or text ``"0,1,2"``,
    ``"0-3"`` / ``"0:3"`` (inclusive range), or a mix ``"0-2,5"``. Sorted, without repeats."""
    if value is None:
        return count_support(task.prior)
    if isinstance(value, str):
        items: list[int] = []
        for part in filter(None, (p.strip() for p in value.split(","))):
            match = re.fullmatch(r"(\d+)\s*(?:[-:]\s*(\d+))?", part)
            if not match:
                raise ConfigError(
                    "n_emitters", f"must be counts like 0,1,2 or a range 0-3 (got {value!r})"
                )
            lo, hi = int(match[1]), int(match[2] or match[1])
            if hi < lo:
                raise ConfigError("n_emitters", f"range {part!r} runs backwards")
            if hi > MAX_COUNT:
                raise ConfigError("n_emitters", f"must be in [0, {MAX_COUNT}] (got {hi})")
            items.extend(range(lo, hi + 1))
        value = items
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        value = [value]
    try:
        counts = sorted({int(v) for v in value if not isinstance(v, bool) and int(v) == v})
        ok = len(counts) == len(set(value)) and all(0 <= v <= MAX_COUNT for v in counts)
    except (TypeError, ValueError):
        ok, counts = False, []
    if not ok or not counts:
        raise ConfigError(
            "n_emitters", f"must be one or more integer counts in [0, {MAX_COUNT}] (got {value!r})"
        )
    return tuple(counts)


def task_with_count(task: Task, n: int) -> Task:
    """The task with its count fixed at ``n`` ≥ 1 (its name kept: same optics, camera, prior
    given n)."""
    if n == task.prior.n_emitters and not count_is_drawn(task.prior):
        return task
    return with_overrides(task, {"prior.n_emitters": n, "prior.count": "fixed"})
