"""How many emitters a window holds: the Laplace evidence of each count, and P(N ≥ k | x).

A window's candidates — peaks of the frame and of the residual of an earlier fit — may include a
second peak of one emitter: fitted with every candidate, the window then has two emitters
splitting one spot's photons, a duplicate row in the table. The models with fewer emitters are
nested in the full one: from the fit with every candidate, the least significant emitter
(smallest i0 / SD(i0): a split spot's halves are strongly anticorrelated, so each is unsure of
its share) is dropped, its photons handed to the nearest emitter within :data:`MERGE_DISTANCE`
px (what the smaller model does with a split spot), and the window refitted — down to the
background alone, or until a count's evidence falls :data:`EVIDENCE_STOP` nats below the best so
far (the counts below it are then negligible). Emitters are ranked by the count at which they
are dropped: the k-th exists with probability P(N ≥ k | x).

Evidence. Emitters are a Poisson point process of ρ per px² (positions uniform), each i0 uniform
in the task's ``i0_range``, b uniform in its ``background_range``: p(n, θ) ∝ ρⁿ / n! · Πᵢ π(i0ᵢ)
· π(b). The posterior has n! relabelled copies of its mode, which cancel the 1/n!, so

    log Z_n = ℓ(θ̂) + n log ρ − n log Δi0 − log Δb + (P/2) log 2π + ½ log |Σ| + log M

(θ̂ the mode, Σ the Laplace covariance of the P = 3n + 1 free parameters, M the Gaussian's mass
inside the prior's box; the factor e^{−ρA} is the same for every count). Every count is fitted
to the same pixels — those of the full model — so the likelihoods compare. Where the full model
does not explain the window (χ²/dof = φ > 1: a neighbour's photons, another PSF), any emitter
"explains" some of the misfit: the likelihood is tempered to p(x | θ)^{1/φ} (the quasi-Poisson
correction: ℓ/φ, Σ·φ), so that misfit alone does not make an emitter certain.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy.special import logsumexp

from bayes_smlm.acquisition.window_fit import (
    WindowFits,
    fit_windows,
    quasi_dispersion,
    window_box,
    window_task,
)
from bayes_smlm.forward.config import Task
from bayes_smlm.methods.laplace_evidence import log_box_mass

MERGE_DISTANCE = 1.5  # px: a dropped emitter this near another hands it its photons
EVIDENCE_STOP = 20.0  # nats below the best count at which smaller counts are not fitted


@dataclass(frozen=True)
class CountedWindows:
    """The reported model of B windows of K slots.

    fit : WindowFits of the reported counts; active : (B, K) their occupied slots;
    p_exists : (B, K) P(N ≥ k | x) of the slot ranked k (0 in empty slots);
    count_probability : (B, K + 1) P(N = n | x), n = 0 … K (0 where n was not fitted).
    """

    fit: WindowFits
    active: np.ndarray
    p_exists: np.ndarray
    count_probability: np.ndarray


def window_log_evidence(
    task: Task,
    shape: tuple[int, int],
    fit: WindowFits,
    active: np.ndarray,
    log_density: float,
    dispersion: np.ndarray | float = 1.0,
) -> np.ndarray:
    """(B,) Laplace log Z_n of window fits (module docstring), up to a constant of the window's
    data; ``active`` (B, K) the fitted slots, ``log_density`` log ρ (ρ in emitters per px²),
    ``dispersion`` φ ≥ 1 (B,): the likelihood tempered to p(x | θ)^{1/φ} (quasi-likelihood)."""
    n_slots = active.shape[1]
    lo, hi = _box(window_task(task, shape), n_slots)
    free = np.concatenate(
        [np.repeat(active, 2, axis=1), active, np.ones((len(active), 1), bool)], 1
    )
    covariance = np.asarray(fit.covariance, np.float64)
    # held parameters have identity rows and columns: they add nothing to log |Σ|
    covariance = np.where(
        free[:, :, None] & free[:, None, :], covariance, np.eye(covariance.shape[-1])
    )
    dispersion = np.broadcast_to(np.asarray(dispersion, np.float64), (len(active),))
    covariance = covariance * np.where(
        free[:, :, None] & free[:, None, :], dispersion[:, None, None], 1.0
    )
    _, logdet = np.linalg.slogdet(covariance)
    sd = np.sqrt(np.maximum(np.diagonal(covariance, axis1=1, axis2=2), 1e-30))
    mass = np.where(free, log_box_mass(np.asarray(fit.mode, np.float64), sd, lo, hi), 0.0)
    n = active.sum(1)
    i0_lo, i0_hi = task.prior.i0_range
    b_lo, b_hi = task.prior.background_range
    return (
        np.asarray(fit.loglik, np.float64) / dispersion
        + n * (log_density - np.log(i0_hi - i0_lo))
        - np.log(b_hi - b_lo)
        + 0.5 * free.sum(1) * np.log(2 * np.pi)
        + 0.5 * logdet
        + mass.sum(1)
    )


@lru_cache(maxsize=64)
def _box(small: Task, n_slots: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`window_box` as float64 numpy arrays, once per window shape and slot count (built
    eagerly in JAX it cost ≈ 9 % of a crowded movie's time)."""
    lo, hi = window_box(small, n_slots)
    return np.asarray(lo, np.float64), np.asarray(hi, np.float64)


def _significance(fit: WindowFits, active: np.ndarray) -> np.ndarray:
    """(B, K) i0 / SD(i0) of the occupied slots, +inf in empty ones."""
    k = active.shape[1]
    i0 = fit.mode[:, 2 * k : 3 * k]
    sd = np.sqrt(np.maximum(np.diagonal(fit.covariance, axis1=1, axis2=2)[:, 2 * k : 3 * k], 1e-12))
    return np.where(active, i0 / sd, np.inf)


def _drop(mode: np.ndarray, active: np.ndarray, slot: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Starting parameters and slots of the windows with ``slot`` (B,) emptied: its i0 goes to
    the nearest occupied slot within :data:`MERGE_DISTANCE` px."""
    b, k = active.shape
    rows = np.arange(b)
    active = active.copy()
    active[rows, slot] = False
    xy = mode[:, : 2 * k].reshape(b, k, 2)
    distance = np.linalg.norm(xy - xy[rows, slot][:, None, :], axis=-1)
    distance = np.where(active, distance, np.inf)
    nearest = np.argmin(distance, 1)
    merge = distance[rows, nearest] <= MERGE_DISTANCE
    start = mode.copy()
    start[rows[merge], 2 * k + nearest[merge]] += mode[rows[merge], 2 * k + slot[merge]]
    start[rows, 2 * k + slot] = 0.0
    return start, active


def _refit(
    task: Task,
    counts: np.ndarray,
    pedestal: np.ndarray,
    fitted: np.ndarray,
    start: np.ndarray,
    slots: np.ndarray,
    max_iter: int,
    tol: float,
) -> WindowFits:
    """Fits of windows with emitters in ``slots``: the compiled fit, or, where no slot is left,
    :func:`background_only` (one parameter: no program to run)."""
    empty = ~slots.any(1)
    if not empty.any():
        return fit_windows(task, counts, pedestal, start, slots, fitted, max_iter=max_iter, tol=tol)
    out = background_only(task, counts[empty], pedestal[empty], fitted[empty], start[empty])
    if empty.all():
        return out
    some = fit_windows(
        task,
        counts[~empty],
        pedestal[~empty],
        start[~empty],
        slots[~empty],
        fitted[~empty],
        max_iter=max_iter,
        tol=tol,
    )
    fields = []
    for a, b in zip(some, out):
        a, b = np.asarray(a), np.asarray(b)
        merged = np.zeros((len(slots),) + a.shape[1:], np.result_type(a, b))
        merged[~empty], merged[empty] = a, b
        fields.append(merged)
    return WindowFits(*fields)


def background_only(
    task: Task,
    counts: np.ndarray,
    pedestal: np.ndarray,
    fitted: np.ndarray,
    start: np.ndarray,
    steps: int = 30,
) -> WindowFits:
    """Fits of windows without emitters: b alone, by Newton on the concave
    Σ f (n log(b + p) − (b + p)) (f the fitted pixels, p the rate offset), kept in the prior's
    range; the same fields as :func:`window_fit.fit_windows` (emitter entries as given)."""
    lo, hi = task.prior.background_range
    f = fitted.astype(np.float64)
    n, p = counts.astype(np.float64), pedestal.astype(np.float64)
    pixels = f.sum((1, 2))
    b = np.clip((f * (n - p)).sum((1, 2)) / pixels, lo, hi)
    for _ in range(steps):
        rate = b[:, None, None] + p
        slope = (f * (n / rate - 1.0)).sum((1, 2))
        curvature = (f * n / rate**2).sum((1, 2))
        b = np.clip(b + slope / np.maximum(curvature, 1e-12), lo, hi)
    rate = b[:, None, None] + p
    information = (f * n / rate**2).sum((1, 2))
    size = start.shape[1]
    mode = start.astype(np.float64).copy()
    mode[:, -1] = b
    covariance = np.tile(np.eye(size), (len(b), 1, 1))
    covariance[:, -1, -1] = 1.0 / np.maximum(information, 1e-12)
    return WindowFits(
        mode=mode,
        covariance=covariance,
        converged=np.ones(len(b), bool),
        positive_definite=information > 0,
        iterations=np.full(len(b), steps),
        chi2=(f * (n - rate) ** 2 / rate).sum((1, 2)),
        dof=pixels - 1.0,
        loglik=(f * (n * np.log(rate) - rate)).sum((1, 2)),
        chi2_var=(f * (2.0 + 1.0 / rate)).sum((1, 2)),
    )


def count_emitters(
    task: Task,
    counts: np.ndarray,
    pedestal: np.ndarray,
    fitted: np.ndarray,
    fit: WindowFits,
    active: np.ndarray,
    *,
    log_density: float,
    min_p_exists: float,
    max_iter: int,
    tol: float,
) -> CountedWindows:
    """Counts of emitters of B windows of one shape by their evidence (module docstring).

    Parameters
    ----------
    task : Task
        Optics and the priors' ranges of i0 and b.
    counts, pedestal, fitted : (B, Sh, Sw) arrays
        As for :func:`window_fit.fit_windows`; ``fitted`` the pixels of the full model.
    fit : WindowFits
        The fits with every candidate, slots ``active`` (B, K).
    log_density : float
        log ρ, ρ the prior's emitters per px².
    min_p_exists : float
        The reported count is the largest n with P(N ≥ n | x) ≥ this (0.5: the posterior
        median of N); its emitters are the n ranked first.
    max_iter, tol
        Of the refits.
    """
    n_windows, n_slots = active.shape
    shape = counts.shape[1:]
    log_z = np.full((n_windows, n_slots + 1), -np.inf)
    fits: dict[int, WindowFits] = {}  # count -> fits (of every window; fitted rows set)
    rank = np.zeros((n_windows, n_slots), int)
    count = active.sum(1)
    rows = np.arange(n_windows)

    # a window its full model does not explain (neighbours' photons, a PSF of another shape)
    # has every likelihood difference inflated: tempered by its χ²/dof (quasi-likelihood)
    dispersion = quasi_dispersion(fit)

    def keep(which: np.ndarray, new: WindowFits, slots: np.ndarray) -> None:
        n = slots.sum(1)
        log_z[which, n] = window_log_evidence(
            task, shape, new, slots, log_density, dispersion[which]
        )
        for m in np.unique(n):
            pick = n == m
            store = fits.setdefault(
                int(m),
                WindowFits(
                    *(
                        np.zeros((n_windows,) + np.asarray(f).shape[1:], np.asarray(f).dtype)
                        for f in new
                    )
                ),
            )
            for field, values in zip(store, new):
                field[which[pick]] = np.asarray(values)[pick]

    keep(rows, fit, active)
    mode, current = np.array(fit.mode), active.copy()  # a copy: the caller's fit stays as given
    significance = _significance(fit, active)
    going = count > 0
    while going.any():
        which = np.flatnonzero(going)
        slot = np.argmin(significance[which], 1)
        rank[which, slot] = current[which].sum(1)
        start, slots = _drop(mode[which], current[which], slot)
        new = _refit(
            task, counts[which], pedestal[which], fitted[which], start, slots, max_iter, tol
        )
        keep(which, new, slots)
        mode[which], current[which] = np.asarray(new.mode), slots
        significance[which] = _significance(new, slots)
        n = slots.sum(1)
        going[which] = (n > 0) & (log_z[which, n] > log_z[which].max(1) - EVIDENCE_STOP)
    # slots never dropped (the smaller counts negligible) rank by significance, most first
    left = current & (rank == 0)
    order = np.argsort(np.argsort(-np.where(left, significance, -np.inf), 1), 1) + 1
    rank = np.where(left, order, rank)
    probability = np.exp(log_z - logsumexp(log_z, axis=1, keepdims=True))
    at_least = np.cumsum(probability[:, ::-1], 1)[:, ::-1]  # P(N ≥ n), n = 0 … K
    reported = np.max(np.where(at_least >= min_p_exists, np.arange(n_slots + 1), 0), 1)
    chosen = _pick(fits, reported)
    kept = active & (rank <= reported[:, None])
    p_exists = np.where(kept, np.take_along_axis(at_least, np.minimum(rank, n_slots), 1), 0.0)
    return CountedWindows(fit=chosen, active=kept, p_exists=p_exists, count_probability=probability)


def _pick(fits: dict[int, WindowFits], count: np.ndarray) -> WindowFits:
    """Per window, the fit of its ``count`` (every window has a fit of each count it reports)."""
    out = [np.array(field) for field in next(iter(fits.values()))]
    for m, store in fits.items():
        pick = count == m
        for field, values in zip(out, store):
            field[pick] = values[pick]
    return WindowFits(*out)
