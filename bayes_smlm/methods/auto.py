"""``auto``: Laplace as an importance proposal, checked by Pareto k̂, escalated to ``smc`` where
it fails.

Per frame and count: draws from the Laplace Gaussian (mode, inverse observed information ×
:data:`PROPOSAL_SCALE`²; not truncated), importance weights w = π(θ) p(x | θ) / q(θ) (zero off
the prior disc), Pareto smoothed (PSIS, arviz-stats). Where the fitted Pareto shape
k̂ ≤ ``k_max`` (0.7: Vehtari et al.'s bound for a reliable estimate with a few thousand draws)
and the fit converged, the resampled draws are exact up to Monte Carlo error at little more
than Laplace's cost, and the mean weight is an unbiased evidence estimate (× n! for the posterior's relabelled copies, which a one-mode
proposal does not visit). Elsewhere the frame is handed to ``smc``: ``extra["escalated"]`` says
which, and the settings record the share.
"""

from __future__ import annotations

import time
from functools import lru_cache
from math import lgamma
from typing import Any

import jax
import numpy as np
from scipy.special import logsumexp

from bayes_smlm.errors import ConfigError
from bayes_smlm.forward.checks import check_choice, check_int
from bayes_smlm.forward.config import Task
from bayes_smlm.forward.frames import validate_frames
from bayes_smlm.forward.model import LIKELIHOODS, frame_constant, make_sampler_log_density
from bayes_smlm.methods.batching import map_frame_batches
from bayes_smlm.methods.counts import CountPosterior, posterior_over_counts
from bayes_smlm.methods.evidence import parse_counts, task_with_count
from bayes_smlm.methods.laplace import laplace_fit
from bayes_smlm.methods.pushforward import kde_moments
from bayes_smlm.methods.registry import (
    register_method,
    reject_unknown_options,
    require_fixed_brightness,
)
from bayes_smlm.methods.result import PosteriorResult
from bayes_smlm.methods.smc import smc_count

K_MAX = 0.7  # Pareto k̂ above which importance sampling is not trusted
# The proposal's SDs are the Laplace ones × this: the posterior's tails are a little heavier
# than the Gaussian's. Measured on 32 `paper` frames (seed 100, not scored anywhere): k̂ ≤ 0.7
# on 50 % of frames at 1.0, 59 % at 1.2, 72 % at 1.35 (but importance ESS 148 → 110 of 4000),
# 50 % at 1.5; Student-t proposals (ν 4–32) did no better.
PROPOSAL_SCALE = 1.2
SMC_DRAWS = 512  # particles per smc run on escalated frames


@lru_cache(maxsize=8)
def _log_target(task: Task, likelihood: str) -> Any:
    """Compiled ``(theta (F, S, n, 2), adu (F, H, W)) -> log π(θ) p(x | θ)`` (F, S), normalised
    (−inf off the disc)."""
    prepare, joint = make_sampler_log_density(task, likelihood=likelihood)
    constant = frame_constant(task, likelihood)

    def one(theta: jax.Array, adu: jax.Array) -> jax.Array:
        data = prepare(adu)
        return jax.vmap(lambda t: joint(t, data))(theta) + constant(adu)

    return jax.jit(jax.vmap(one))


def importance_weights(
    task: Task,
    adu: np.ndarray,
    mode: np.ndarray,
    covariance: np.ndarray,
    samples: int,
    seed: int,
    frames: np.ndarray,
    likelihood: str,
) -> tuple[np.ndarray, np.ndarray]:
    """Draws (F, S, n, 2) from each frame's Gaussian N(mode, covariance) of the positions and
    their log importance weights (F, S) towards the exact posterior; frame i's numbers are
    seeded by (seed, frames[i]), whatever frames share the call."""
    f, p = mode.shape
    n = p // 2
    chol = np.linalg.cholesky(covariance + 1e-9 * np.eye(p))
    z = np.stack(
        [np.random.default_rng([seed, int(i)]).standard_normal((samples, p)) for i in frames]
    )
    draws = mode[:, None] + np.einsum("fij,fsj->fsi", chol, z)
    log_q = (
        -0.5 * np.sum(z**2, -1)
        - 0.5 * p * np.log(2 * np.pi)
        - np.log(np.diagonal(chol, axis1=-2, axis2=-1)).sum(-1)[:, None]
    )
    theta = draws.reshape(f, samples, n, 2).astype(np.float32)
    log_p = map_frame_batches(_log_target(task, likelihood), (theta, adu), 8)
    return theta, np.asarray(log_p, np.float64) - log_q


def pareto_smoothed(log_w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(F, S) normalised PSIS log weights and (F,) k̂, from raw log weights (F, S)."""
    from arviz_stats.base import array_stats

    out, khat = np.empty_like(log_w), np.empty(log_w.shape[0])
    for i, row in enumerate(log_w):
        finite = np.isfinite(row)
        if finite.sum() < 10 or np.ptp(row[finite]) < 1e-9:  # equal weights: nothing to smooth
            out[i] = np.where(finite, -np.log(max(finite.sum(), 1)), -np.inf)
            khat[i] = -np.inf if finite.sum() >= 10 else np.inf
            continue
        # arviz-stats takes −log w (the log-likelihood convention of PSIS-LOO)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            smoothed, khat[i] = array_stats.psislw(-np.where(finite, row, np.min(row[finite]) - 50))
        if not (np.isfinite(khat[i]) and np.all(np.isfinite(smoothed))):
            khat[i], smoothed = np.inf, row - logsumexp(row[finite])  # a tail it cannot fit
        out[i] = np.where(finite, smoothed, -np.inf)
    return out, khat


def auto_count(
    task: Task,
    adu: np.ndarray,
    n: int,
    *,
    seed: int,
    chains: int,
    draws: int,
    frames: np.ndarray,
    k_max: float,
    likelihood: str,
    smc_draws: int,
    progress: bool,
    theta_true: np.ndarray | None,
    settings: dict[str, Any],
) -> CountPosterior:
    """The ``auto`` posterior of n ≥ 1 emitters (see the module docstring)."""
    started = time.perf_counter()
    counted = task_with_count(task, n)
    fit = laplace_fit(counted, adu, likelihood=likelihood, progress=progress)
    samples = chains * draws
    theta, log_w = importance_weights(
        counted,
        adu,
        fit.mode[:, : 2 * n],
        PROPOSAL_SCALE**2 * fit.covariance[:, : 2 * n, : 2 * n],
        samples,
        seed,
        frames,
        likelihood,
    )
    smoothed, khat = pareto_smoothed(log_w)
    escalated = (khat > k_max) | fit.flagged
    f = adu.shape[0]
    picked = np.stack(
        [
            np.random.default_rng([seed, int(i), 1]).choice(
                samples, samples, p=np.exp(s - logsumexp(s))
            )
            if not e
            else np.arange(samples)
            for i, s, e in zip(frames, smoothed, escalated)
        ]
    )
    theta = np.take_along_axis(theta, picked[:, :, None, None], 1)  # (F, S, n, 2)
    kde_mean, kde_var = kde_moments(theta, counted)
    with np.errstate(invalid="ignore"):  # a frame whose weights are all −inf: escalated below
        log_z = logsumexp(log_w, axis=1) - np.log(samples) + lgamma(n + 1)
        w = np.exp(log_w - log_w.max(1, keepdims=True))
        se = np.std(w, 1) / np.maximum(np.mean(w, 1), 1e-300) / np.sqrt(samples)  # delta method
    flagged = np.zeros(f, bool)
    if escalated.any():
        idx = np.flatnonzero(escalated)
        exact = smc_count(
            task,
            adu[idx],
            n,
            seed=seed,
            runs=chains,
            draws=smc_draws,
            frames=frames[idx],
            likelihood=likelihood,
            progress=progress,
            settings=settings,
        )
        kde_mean[idx], kde_var[idx] = exact.kde_mean, exact.kde_var
        log_z[idx], se[idx], flagged[idx] = (
            exact.log_evidence,
            exact.log_evidence_se,
            exact.flagged,
        )
        assert exact.draws is not None  # smc_count keeps its draws
        per_frame = np.moveaxis(exact.draws, 2, 0).reshape(len(idx), -1, n, 2)
        spread = np.floor(np.arange(samples) * per_frame.shape[1] / samples).astype(int)
        theta[idx] = per_frame[:, spread]
    position_draws = np.moveaxis(theta.reshape(f, chains, draws, n, 2), 0, 2)  # (C, D, F, n, 2)
    result = None
    if n == task.prior.n_emitters:
        extra = {
            "flagged": flagged,
            "escalated": escalated,
            "khat": khat,
            "laplace_flagged": fit.flagged,
        }
        result = PosteriorResult(
            method="auto",
            task=task,
            adu=adu,
            kde_mean=kde_mean,
            kde_var=kde_var,
            theta=position_draws,
            settings={**settings, "escalated_share": float(escalated.mean())},
            seconds=time.perf_counter() - started,
            theta_true=theta_true,
            extra=extra,
        )
    return CountPosterior(n, kde_mean, kde_var, log_z, se, flagged, result, position_draws)


@register_method(
    "auto",
    emitter_count="evidence",
    flags=("as smc on the frames handed to it (Pareto k̂ above k_max); never on the others"),
)
def auto_posterior(
    task: Task,
    adu: np.ndarray,
    *,
    seed: int = 0,
    chains: int = 4,
    draws: int = 1000,
    progress: bool = False,
    n_emitters: Any = None,
    k_max: float = K_MAX,
    likelihood: str = "poisson",
    smc_draws: int = SMC_DRAWS,
    first_frame: int = 0,
    keep_samples: int = 0,
    theta_true: np.ndarray | None = None,
    **unknown: Any,
) -> PosteriorResult:
    """Laplace importance sampling where Pareto k̂ ≤ ``k_max``, ``smc`` elsewhere.

    Parameters
    ----------
    chains, draws : int
        chains × draws proposal draws per frame (and draws kept); ``chains`` smc runs on
        escalated frames.
    n_emitters : None, int, list or str
        Counts, as for ``smc``.
    k_max : float
        Largest Pareto k̂ accepted, in (0, 1]; 0.7 by default.
    smc_draws : int
        Particles per smc run on escalated frames.
    first_frame : int
        Index of ``adu[0]`` in the whole movie, for per-frame seeds.
    keep_samples : int
        With several counts: KDE samples of the mixture kept per frame (for coverage).
    """
    reject_unknown_options("auto", unknown)
    require_fixed_brightness(task, "auto")
    started = time.perf_counter()
    adu = validate_frames(task, adu)
    chains, draws = check_int("chains", chains), check_int("draws", draws, lo=10)
    smc_draws = check_int("smc_draws", smc_draws, lo=2)
    likelihood = check_choice("likelihood", likelihood, LIKELIHOODS)
    if not 0 < k_max <= 1:
        raise ConfigError("k_max", f"must be in (0, 1] (got {k_max})")
    counts = parse_counts(n_emitters, task)
    settings = {
        "chains": chains,
        "draws": draws,
        "seed": seed,
        "k_max": float(k_max),
        "likelihood": likelihood,
        "smc_draws": smc_draws,
    }
    frames = check_int("first_frame", first_frame, lo=0) + np.arange(adu.shape[0])

    def fit_count(n: int) -> CountPosterior:
        return auto_count(
            task,
            adu,
            n,
            seed=seed,
            chains=chains,
            draws=draws,
            frames=frames,
            k_max=k_max,
            likelihood=likelihood,
            smc_draws=smc_draws,
            progress=progress,
            theta_true=theta_true,
            settings=settings,
        )

    return posterior_over_counts(
        "auto",
        task,
        adu,
        counts,
        fit_count,
        likelihood=likelihood,
        settings=settings,
        started=started,
        theta_true=theta_true,
        keep_samples=keep_samples,
        seed=seed,
    )
