"""Posteriors over the emitter count: evidence per count, P(n | x), and the KDE mixture over n.

A method that estimates the marginal likelihood Z_n = p(x | n) = ∫ π(θ | n) p(x | θ, n) dθ for
each count n it is asked about returns an :class:`Evidence`; P(n | x) ∝ P(n) Z_n with P(n) the
task's prior on the count — uniform over the listed counts, as every task fixes n today. The
KDE posterior given x alone is then the mixture over n of the per-count posteriors:
E[y] = Σ P(n|x) E[y | n], Var[y] = Σ P(n|x) (Var[y | n] + E[y | n]²) − E[y]².

n = 0 is a valid count (a frame of background only): its evidence is the likelihood itself and
its KDE is exactly 0.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
from scipy.special import logsumexp, softmax

from bayes_smlm.errors import ConfigError
from bayes_smlm.forward.config import Task, with_overrides

MAX_COUNT = 1000  # as prior.n_emitters
P_N_RELEVANT = 0.01  # a count this probable passes its flags on to the mixture


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
    log_prior: np.ndarray = field(default=None)  # type: ignore[assignment]

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

    def select(self, frames: np.ndarray) -> "Evidence":
        return Evidence(self.counts, self.log_evidence[frames], self.log_evidence_se[frames],
                        self.log_prior)


def parse_counts(value: Any, task: Task) -> tuple[int, ...]:
    """The counts asked for: None → the task's; an int; a list of ints; or text ``"0,1,2"``,
    ``"0-3"`` / ``"0:3"`` (inclusive range), or a mix ``"0-2,5"``. Sorted, without repeats."""
    if value is None:
        return (task.prior.n_emitters,)
    if isinstance(value, str):
        items: list[int] = []
        for part in filter(None, (p.strip() for p in value.split(","))):
            match = re.fullmatch(r"(\d+)\s*(?:[-:]\s*(\d+))?", part)
            if not match:
                raise ConfigError("n_emitters", f"must be counts like 0,1,2 or a range 0-3 "
                                                f"(got {value!r})")
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
        raise ConfigError("n_emitters", f"must be one or more integer counts in [0, {MAX_COUNT}] "
                                        f"(got {value!r})")
    return tuple(counts)


def task_with_count(task: Task, n: int) -> Task:
    """The task with its count set to ``n`` ≥ 1 (its name kept: same optics, camera, prior)."""
    return task if n == task.prior.n_emitters else with_overrides(task, {"prior.n_emitters": n})


@dataclass
class CountPosterior:
    """One count's posterior of F frames, as :func:`over_counts` combines them."""

    n: int
    kde_mean: np.ndarray
    kde_var: np.ndarray
    log_evidence: np.ndarray
    log_evidence_se: np.ndarray
    flagged: np.ndarray
    result: Any = None  # the count's PosteriorResult, where one was made
    draws: np.ndarray | None = None  # (C, D, F, n, 2) position draws, LR px, where kept


def no_emitter(task: Task, adu: np.ndarray, log_likelihood: Callable[[Any], Any]) -> CountPosterior:
    """n = 0: evidence = the background-only likelihood (``log_likelihood`` vmaps over frames),
    KDE exactly 0."""
    import jax
    import jax.numpy as jnp
    f = adu.shape[0]
    zeros = np.zeros((f,) + task.hr_shape, np.float32)
    log_z = np.asarray(jax.jit(jax.vmap(log_likelihood))(jnp.asarray(adu, jnp.float32)),
                       np.float64)
    return CountPosterior(0, zeros, zeros.copy(), log_z, np.zeros(f), np.zeros(f, bool))


def mixture(parts: Sequence[CountPosterior], evidence: Evidence) -> tuple[np.ndarray, ...]:
    """(kde_mean, kde_var, flagged) of the mixture over counts weighted by P(n | x)."""
    w = evidence.p_n.T[:, :, None, None]                                  # (K, F, 1, 1)
    means = np.stack([p.kde_mean for p in parts]).astype(np.float64)
    second = np.stack([p.kde_var + p.kde_mean.astype(np.float64) ** 2 for p in parts])
    mean = np.sum(w * means, 0)
    var = np.maximum(np.sum(w * second, 0) - mean**2, 0.0)
    relevant = evidence.p_n.T >= P_N_RELEVANT
    flagged = np.any(np.stack([p.flagged for p in parts]) & relevant, 0)
    return mean.astype(np.float32), var.astype(np.float32), flagged


def mixture_kde_samples(task: Task, parts: Sequence[CountPosterior], p_n: np.ndarray,
                        n_samples: int, seed: int) -> np.ndarray:
    """(F, S, uH, uW) KDE samples of the mixture over counts: each sample's count drawn from
    P(n | x), then one of that count's θ draws pushed through the KDE (n = 0: y = 0)."""
    from bayes_smlm.methods.pushforward import kde_images
    f = p_n.shape[0]
    out = np.zeros((f, n_samples) + task.hr_shape, np.float32)
    for i in range(f):
        rng = np.random.default_rng([seed, i])
        which = rng.choice(len(parts), n_samples, p=p_n[i] / p_n[i].sum())
        for k, part in enumerate(parts):
            chosen = np.flatnonzero(which == k)
            if part.n == 0 or not chosen.size:
                continue
            draws = part.draws[:, :, i].reshape(-1, part.n, 2)
            out[i, chosen] = kde_images(draws[rng.choice(len(draws), chosen.size)], task)
    return out


def posterior_over_counts(method: str, task: Task, adu: np.ndarray, counts: Sequence[int],
                          fit_count: Callable[[int], CountPosterior], *,
                          background_log_likelihood: Callable[[Any], Any],
                          settings: dict[str, Any], started: float,
                          theta_true: np.ndarray | None = None, keep_samples: int = 0,
                          seed: int = 0) -> Any:
    """The :class:`~bayes_smlm.methods.result.PosteriorResult` of a method over ``counts``.

    ``fit_count(n)`` gives the :class:`CountPosterior` of n ≥ 1 emitters; n = 0 is computed
    here from ``background_log_likelihood`` (``adu (H, W) -> log p(adu | no emitter)``). Asked
    only for the task's own count, the result is that count's (θ draws included) with its
    evidence attached; otherwise it is the mixture over counts, without θ draws (with
    ``keep_samples`` > 0, that many KDE samples of the mixture per frame in
    ``extra["kde_samples"]``, for interval coverage).
    """
    import time

    from bayes_smlm.methods.result import PosteriorResult
    parts = [no_emitter(task, adu, background_log_likelihood) if n == 0 else fit_count(n)
             for n in counts]
    evidence = Evidence(np.asarray(counts), np.stack([p.log_evidence for p in parts], -1),
                        np.stack([p.log_evidence_se for p in parts], -1))
    settings = {**settings, "n_emitters": [int(n) for n in counts]}
    if tuple(counts) == (task.prior.n_emitters,) and parts[0].result is not None:
        result = parts[0].result
        result.evidence, result.settings = evidence, {**result.settings, **settings}
        result.seconds = time.perf_counter() - started
        return result
    mean, var, flagged = mixture(parts, evidence)
    extra = {"flagged": flagged, "n_most_probable": evidence.most_probable}
    if keep_samples:
        extra["kde_samples"] = mixture_kde_samples(task, parts, evidence.p_n, keep_samples, seed)
    return PosteriorResult(method=method, task=task, adu=adu, kde_mean=mean, kde_var=var,
                           settings=settings, seconds=time.perf_counter() - started,
                           theta_true=theta_true, evidence=evidence, extra=extra)
