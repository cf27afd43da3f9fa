"""Posterior of the emitters in one window of a frame: positions, photons per emitter and the
window's background all unknown — the Laplace approximation at the mode.

A window is a (Sh, Sw) crop of a frame holding K emitters. Its data are the photon counts of the
Poisson approximation of the sCMOS model, ``n = (ADU − o)/g + w²/g²`` with the window's own crop
of the offset, gain and read-noise maps, and the per-pixel pedestal ``w²/g²``:
n ~ Poisson(ω + w²/g²) with ω the pixel-integrated Gaussian PSFs plus the background b. Priors are
flat: positions inside the window, each i0 in the task's ``i0_range``, b in its
``background_range`` — so the mode is the maximum-likelihood estimate (the field's sCMOS MLE,
Huang et al. 2013) and the covariance the inverse observed information there. The optimiser
(:func:`bayes_smlm.methods.mode_search.damped_newton`) and the image derivatives
(:class:`bayes_smlm.forward.parameters.ParameterLayout`) are the ones the ``laplace`` method uses
on whole frames.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from functools import lru_cache
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from bayes_smlm.forward.config import Camera, Task
from bayes_smlm.forward.distributions import poisson_kernel
from bayes_smlm.forward.parameters import ParameterLayout
from bayes_smlm.methods.mode_search import damped_newton, laplace_covariance
from bayes_smlm.parallel import device_parallel


class WindowFits(NamedTuple):
    """Fits of B windows of K emitters each (parameters in ``ParameterLayout(K, True, True)``
    order: x0, y0, …, i0_0, …, b; positions in window pixels).

    mode : (B, P); covariance : (B, P, P); converged, positive_definite : (B,) bool;
    iterations : (B,) int; chi2 : (B,) Pearson χ² of the window's fitted pixels at the mode,
    Σ (n − λ)²/λ; dof : (B,) its degrees of freedom, fitted pixels − parameters of the occupied
    slots (χ² ≈ dof for a correct model); loglik : (B,) :func:`window_log_likelihood` at the
    mode; chi2_var : (B,) the variance of χ² under the fitted model, Σ (2 + 1/λ) over the fitted
    pixels (each (n − λ)²/λ of a Poisson count has mean 1 and variance 2 + 1/λ).
    """

    mode: np.ndarray
    covariance: np.ndarray
    converged: np.ndarray
    positive_definite: np.ndarray
    iterations: np.ndarray
    chi2: np.ndarray
    dof: np.ndarray
    loglik: np.ndarray
    chi2_var: np.ndarray


def window_task(task: Task, shape: tuple[int, int]) -> Task:
    """The task's optics and priors on a (Sh, Sw) window (camera and background maps dropped:
    a window's camera arrives with its data)."""
    prior = dataclasses.replace(
        task.prior, background=0.0, radius=min(task.prior.radius, min(shape) / 2.0)
    )
    return dataclasses.replace(
        task,
        name=f"{task.name}-window",
        height=shape[0],
        width=shape[1],
        camera=Camera(),
        prior=prior,
    )


def window_box(small: Task, n_emitters: int) -> tuple[jax.Array, jax.Array]:
    """The flat prior's support (lo, hi), each (P,) in ``ParameterLayout(K, True, True)`` order:
    positions within the window's pixels, i0 and b in the task's ranges; ``small`` is the
    :func:`window_task` of the window's shape."""
    lo, hi = ParameterLayout(n_emitters, True, True).bounds(small)
    edge = jnp.tile(jnp.asarray([small.width, small.height], jnp.float32), n_emitters)
    return lo.at[: 2 * n_emitters].set(-0.5), hi.at[: 2 * n_emitters].set(edge - 0.5)


def free_parameters(active: jax.Array) -> jax.Array:
    """(P,) bool: the parameters of the occupied slots (x, y, i0 where ``active`` (K,)) and b.
    Empty slots hold i0 = 0, add nothing to ω, and stay where they start."""
    return jnp.concatenate([jnp.repeat(active, 2), active, jnp.ones(1, bool)])


def window_log_likelihood(omega: jax.Array, data: tuple[jax.Array, ...]) -> jax.Array:
    """log p(counts | ω) of one window's fitted pixels, up to a constant: Poisson with rate
    ω + pedestal, where ``data = (counts, pedestal, fitted)`` ((Sh, Sw) each: photons, photons,
    and 1 where the pixel is fitted, 0 where it is left out)."""
    counts, pedestal, fitted = data
    return jnp.sum(fitted * poisson_kernel(counts, omega + pedestal))


def _fit_one_window(
    small: Task, n_emitters: int, tol: float
) -> Callable[..., tuple[jax.Array, ...]]:
    """One window's fit; ``small`` is the :func:`window_task` of the window's shape; its most
    steps are an argument, so one program serves every cap."""
    layout = ParameterLayout(n_emitters, True, True)
    derivatives = layout.image_derivatives(small)
    lo, hi = window_box(small, n_emitters)

    def one(
        counts: jax.Array,
        pedestal: jax.Array,
        fitted: jax.Array,
        start: jax.Array,
        active: jax.Array,
        max_iter: jax.Array,
    ) -> tuple[jax.Array, ...]:
        free = free_parameters(active)

        def project(params: jax.Array) -> jax.Array:
            return jnp.where(free, jnp.clip(params, lo, hi), params)

        i0_slots = slice(2 * n_emitters, 3 * n_emitters)
        start = start.at[i0_slots].set(jnp.where(active, start[i0_slots], 0.0))
        mode, iterations, converged, information = damped_newton(
            project(start),
            (counts, pedestal, fitted),
            derivatives=derivatives,
            curvature=layout.curvature,
            loglik=window_log_likelihood,
            project=project,
            max_iter=max_iter,
            tol=tol,
            free=free,
        )
        covariance, positive_definite = laplace_covariance(information)
        rate = derivatives(mode).omega + pedestal
        chi2 = jnp.sum(fitted * (counts - rate) ** 2 / rate)
        dof = jnp.sum(fitted) - jnp.sum(free)
        loglik = jnp.sum(fitted * poisson_kernel(counts, rate))
        chi2_var = jnp.sum(fitted * (2.0 + 1.0 / rate))
        return (
            mode,
            covariance,
            converged,
            positive_definite,
            iterations,
            chi2,
            dof,
            loglik,
            chi2_var,
        )

    return one


def quasi_dispersion(fit: WindowFits) -> np.ndarray:
    """(B,) φ = max(χ²/dof, 1) of window fits: the quasi-Poisson dispersion by which a window
    the model does not explain has its likelihood tempered (L^{1/φ}) and its covariance widened
    (φΣ)."""
    return np.maximum(np.asarray(fit.chi2) / np.maximum(np.asarray(fit.dof), 1), 1.0)


MISFIT_QUANTILE = 0.999  # of χ² under the fitted model, above which a window is a misfit


def misfit(
    chi2: np.ndarray,
    dof: np.ndarray,
    chi2_var: np.ndarray,
    parameters: np.ndarray,
    quantile: float = MISFIT_QUANTILE,
) -> np.ndarray:
    """(B,) bool: windows whose Pearson χ² exceeds its ``quantile`` under the fitted model.

    Each fitted pixel's (n − λ)²/λ has mean 1 and variance 2 + 1/λ under Poisson(λ); fitting
    ``parameters`` takes their number off the mean (χ² ≈ dof) and, to first order, the same
    share off the variance. χ² is taken as gamma-distributed with that mean and variance
    (χ²_dof when every λ is large; heavier-tailed where counts are small).
    """
    dof = np.maximum(np.asarray(dof, np.float64), 1.0)
    pixels = dof + np.asarray(parameters, np.float64)
    variance = np.asarray(chi2_var, np.float64) * dof / pixels
    from scipy.stats import gamma

    limit = gamma.ppf(quantile, dof**2 / variance, scale=variance / dof)
    return np.asarray(chi2) > limit


def gain_error_widened(
    task: Task,
    fit: WindowFits,
    counts: np.ndarray,
    pedestal: np.ndarray,
    fitted: np.ndarray,
    active: np.ndarray,
    gain_se: float,
) -> WindowFits:
    """``fit`` with a gain map's calibration error taken into its covariance and χ².

    Photons are ``(ADU − o)/ĝ``: where the gain map ĝ is off by a relative error ε_i (SD
    ``gain_se``, independent per pixel), pixel i holds ω_i(1 − ε_i) — extra variance
    ``gain_se² · ω_i²`` the Poisson likelihood does not know. The mode stays the Poisson MLE; its
    covariance under the true noise is the sandwich ``Σ + Σ K Σ`` with Σ the Laplace covariance
    and ``K = Σ_i ∇ω_i ∇ω_iᵀ · gain_se² ω_i² / λ_i²`` (λ = ω + pedestal) over the fitted pixels;
    Pearson's χ² divides by the total variance ``λ_i + gain_se² ω_i²``. ω is the window's own
    model (emitters and background): photons known to come from neighbours are left out of the
    extra variance.
    """
    _, height, width = counts.shape
    program = _gain_error_program(window_task(task, (height, width)), active.shape[1])
    rel_var = np.float32(gain_se) ** 2
    arrays = [
        np.asarray(a, np.float32) for a in (fit.mode, fit.covariance, counts, pedestal, fitted)
    ] + [np.asarray(active, bool)]
    covariance, chi2 = _over_windows(
        lambda size: ((lambda *batch: program(*batch, rel_var)), 1), arrays
    )
    return fit._replace(covariance=covariance, chi2=chi2)


@lru_cache(maxsize=64)
def _gain_error_program(small: Task, n_emitters: int) -> Callable[..., tuple[jax.Array, ...]]:
    derivatives = ParameterLayout(n_emitters, True, True).image_derivatives(small)

    def one(
        mode: jax.Array,
        covariance: jax.Array,
        counts: jax.Array,
        pedestal: jax.Array,
        fitted: jax.Array,
        active: jax.Array,
        rel_var: jax.Array,
    ) -> tuple[jax.Array, ...]:
        d = derivatives(mode)
        # held parameters (empty slots) keep their covariance: their rows of ∇ω are zeroed
        gradient = jnp.where(free_parameters(active)[:, None, None], d.jacobian, 0.0)
        rate = d.omega + pedestal
        extra = rel_var * d.omega**2
        weighted = gradient * (fitted * extra / rate**2)
        k = jnp.sum(weighted[:, None] * gradient[None, :], axis=(-2, -1))  # (P, P)
        chi2 = jnp.sum(fitted * (counts - rate) ** 2 / (rate + extra))
        return covariance + covariance @ k @ covariance, chi2

    return jax.jit(jax.vmap(one, in_axes=(0, 0, 0, 0, 0, 0, None)))


SHARD_FROM = 256  # windows per call from which splitting them across devices pays (measured)
# a vmapped loop runs until its slowest window is done: every window gets the first stage's
# steps, and only those still going continue, to the next stage's total, then to max_iter
STEP_STAGES = (6, 12)


@lru_cache(maxsize=64)
def _compiled(
    small: Task, n_emitters: int, tol: float, shard: bool
) -> tuple[Callable[..., tuple[jax.Array, ...]], int]:
    fit = jax.vmap(_fit_one_window(small, n_emitters, tol))
    # a few windows: one device (a sharded call costs ≈ 3 ms more than the fit itself)
    return device_parallel(fit) if shard else (jax.jit(fit), 1)


def fit_windows(
    task: Task,
    counts: np.ndarray,
    pedestal: np.ndarray,
    start: np.ndarray,
    active: np.ndarray,
    fitted: np.ndarray | None = None,
    *,
    max_iter: int = 50,
    tol: float = 1e-4,
) -> WindowFits:
    """Mode and Laplace covariance of B windows of the same shape and number of emitter slots.

    Parameters
    ----------
    task : Task
        Optics (σ_psf) and the priors' ranges (``i0_range``, ``background_range``).
    counts, pedestal : (B, Sh, Sw) arrays
        Photon counts ``(ADU − o)/g + w²/g²`` and the rate's offset (the pedestal ``w²/g²``,
        plus any photons known to come from elsewhere) of each window.
    start : (B, P) array
        Starting parameters (x0, y0, …, i0_0, …, b), window pixels and photons.
    active : (B, K) bool array
        Which emitter slots hold an emitter; the others stay empty (i0 = 0, held fixed) and their
        entries of the mode and covariance mean nothing.
    fitted : (B, Sh, Sw) bool array, optional
        The pixels the likelihood uses (default: all). Leaving out the pixels far from every
        emitter of a window keeps neighbours outside it from biasing the fit.
    max_iter, tol
        As for :func:`bayes_smlm.methods.laplace.laplace_fit`.

    Windows run vmapped, and a vmapped loop runs until its slowest window is done: every window
    gets the first of :data:`STEP_STAGES` steps (most converge in 4–6), and only those still
    going continue, in further calls, to the next stage's total and then to ``max_iter`` (the
    same program: the cap is an argument). Calls hold one of :data:`CALL_SIZES` windows
    (padded), so a movie compiles a handful of programs per window shape and emitter count.
    """
    fitted = np.ones(counts.shape, bool) if fitted is None else fitted
    arrays = [np.asarray(a, np.float32) for a in (counts, pedestal, fitted, start)] + [
        np.asarray(active, bool)
    ]
    out = None
    going = np.arange(len(arrays[0]))  # windows still short of convergence
    done = 0  # steps every window in `going` has had
    for cap in (*STEP_STAGES, int(max_iter)):
        steps = min(cap, int(max_iter)) - done
        if steps <= 0 or not len(going):
            continue
        start_ = arrays[3][going] if out is None else np.asarray(out.mode[going], np.float32)
        part = _fit_batches(
            task,
            [arrays[0][going], arrays[1][going], arrays[2][going], start_, arrays[4][going]],
            steps,
            float(tol),
        )
        if out is None:
            out = WindowFits(*(np.array(f) for f in part))
        else:
            for field, value in zip(out, part):
                field[going] = value
            out.iterations[going] += done  # steps over every call
        late = ~part.converged & (np.asarray(part.iterations) >= steps)
        going, done = going[late], done + steps
    assert out is not None
    return out


# windows per compiled call. Steps of 2 pad a group's last call by under half (a rest of 1–3
# windows is padded to 4); steps of 4 padded up to three quarters, which on crowded tuning movies
# was a fifth of the time (windows of 8 emitters are few and dear). Each size used compiles once
# per window shape and slot count (150-frame crowded tuning movie, empty cache: first run 53 s
# with steps of 4, 70 s with these; 1 and 2 as well: 88 s for another 10 % of warm speed)
CALL_SIZES = (4, 8, 16, 32, 64, 128, 256, 512)


def _calls(n_windows: int) -> list[tuple[int, int, int]]:
    """(start, stop, size) of the compiled calls over ``n_windows``: full calls of the largest
    of :data:`CALL_SIZES`, the rest in one call of the smallest size that holds it (padded).
    Only the last call is padded — by under half of it (sizes step ×2), except a rest of 1–3
    windows padded to 4 — never the full ones."""
    largest = CALL_SIZES[-1]
    calls = [
        (start, start + largest, largest) for start in range(0, n_windows - largest + 1, largest)
    ]
    done = len(calls) * largest
    if done < n_windows:
        rest = n_windows - done
        calls.append((done, n_windows, next(s for s in CALL_SIZES if s >= rest)))
    return calls


def _over_windows(
    program: Callable[[int], tuple[Callable[..., tuple[jax.Array, ...]], int]],
    arrays: list[np.ndarray],
) -> list[np.ndarray]:
    """The compiled ``program(size) -> (fn, devices)`` over the windows of ``arrays`` (leading
    axis B) in the calls of :func:`_calls`, each padded by repeating its last window; the
    outputs for the B."""
    parts = []
    for start, stop, size in _calls(len(arrays[0])):
        fn, n_devices = program(size)
        size = n_devices * -(-size // n_devices)
        batch = [a[start:stop] for a in arrays]
        if stop - start < size:
            batch = [
                np.concatenate([a, np.repeat(a[-1:], size - (stop - start), 0)]) for a in batch
            ]
        parts.append([np.asarray(o)[: stop - start] for o in fn(*batch)])
    return [np.concatenate(field) for field in zip(*parts)]


def _fit_batches(task: Task, arrays: list[np.ndarray], max_iter: int, tol: float) -> WindowFits:
    """:func:`fit_windows`'s compiled calls over ``arrays`` (counts, pedestal, fitted, start,
    active) with at most ``max_iter`` steps each."""
    n_windows, height, width = arrays[0].shape
    n_emitters = (arrays[3].shape[1] - 1) // 3
    # keyed on the window's task, which has no camera maps: hashing those costs milliseconds
    small = window_task(task, (height, width))
    arrays = arrays + [np.full(n_windows, max_iter, np.int32)]
    return WindowFits(
        *_over_windows(lambda size: _compiled(small, n_emitters, tol, size >= SHARD_FROM), arrays)
    )
