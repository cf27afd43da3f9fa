"""Per-count posteriors combined into one result: the evidence of each count, the KDE mixture
over counts (its moments and, on request, samples) and n = 0 (background only) computed here.

The methods that weigh counts (``smc``, ``laplace``, ``auto``) give a :class:`CountPosterior`
per count n ≥ 1; :func:`posterior_over_counts` does the rest.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from bayes_smlm.forward.checks import check_int
from bayes_smlm.forward.config import Task
from bayes_smlm.forward.count_prior import count_log_prior
from bayes_smlm.forward.model import background_log_likelihood
from bayes_smlm.methods.evidence import Evidence
from bayes_smlm.methods.result import PosteriorResult

P_N_RELEVANT = 0.01  # a count this probable passes its flags on to the mixture


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
    log_z = np.asarray(jax.jit(jax.vmap(log_likelihood))(jnp.asarray(adu, jnp.float32)), np.float64)
    return CountPosterior(0, zeros, zeros.copy(), log_z, np.zeros(f), np.zeros(f, bool))


def mixture(parts: Sequence[CountPosterior], evidence: Evidence) -> tuple[np.ndarray, ...]:
    """(kde_mean, kde_var, flagged) of the mixture over counts weighted by P(n | x)."""
    w = evidence.p_n.T[:, :, None, None]  # (K, F, 1, 1)
    means = np.stack([p.kde_mean for p in parts]).astype(np.float64)
    second = np.stack([p.kde_var + p.kde_mean.astype(np.float64) ** 2 for p in parts])
    mean = np.sum(w * means, 0)
    var = np.maximum(np.sum(w * second, 0) - mean**2, 0.0)
    relevant = evidence.p_n.T >= P_N_RELEVANT
    flagged = np.any(np.stack([p.flagged for p in parts]) & relevant, 0)
    return mean.astype(np.float32), var.astype(np.float32), flagged


def mixture_kde_samples(
    task: Task, parts: Sequence[CountPosterior], p_n: np.ndarray, n_samples: int, seed: int
) -> np.ndarray:
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
            assert part.draws is not None  # kept for every count with a share of the mixture
            draws = part.draws[:, :, i].reshape(-1, part.n, 2)
            out[i, chosen] = kde_images(draws[rng.choice(len(draws), chosen.size)], task)
    return out


def posterior_over_counts(
    method: str,
    task: Task,
    adu: np.ndarray,
    counts: Sequence[int],
    fit_count: Callable[[int], CountPosterior],
    *,
    likelihood: str,
    settings: dict[str, Any],
    started: float,
    theta_true: np.ndarray | None = None,
    keep_samples: int = 0,
    seed: int = 0,
) -> Any:
    """The :class:`~bayes_smlm.methods.result.PosteriorResult` of a method over ``counts``.

    ``fit_count(n)`` gives the :class:`CountPosterior` of n ≥ 1 emitters; n = 0 is computed
    here, exactly, from the background-only ``likelihood`` of each frame. Asked
    only for the task's own count, the result is that count's (θ draws included) with its
    evidence attached; otherwise it is the mixture over counts, without θ draws (with
    ``keep_samples`` > 0, that many KDE samples of the mixture per frame in
    ``extra["kde_samples"]``, for interval coverage).
    """
    keep_samples = check_int("keep_samples", keep_samples, lo=0)
    log_prior = count_log_prior(task.prior, counts)  # before any fit: counts it cannot have
    parts = [
        no_emitter(task, adu, background_log_likelihood(task, likelihood))
        if n == 0
        else fit_count(n)
        for n in counts
    ]
    evidence = Evidence(
        np.asarray(counts),
        np.stack([p.log_evidence for p in parts], -1),
        np.stack([p.log_evidence_se for p in parts], -1),
        log_prior,
    )
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
    return PosteriorResult(
        method=method,
        task=task,
        adu=adu,
        kde_mean=mean,
        kde_var=var,
        settings=settings,
        seconds=time.perf_counter() - started,
        theta_true=theta_true,
        evidence=evidence,
        extra=extra,
    )
