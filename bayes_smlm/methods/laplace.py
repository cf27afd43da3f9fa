"""``laplace``: the Gaussian approximation at the posterior mode — the field's MLE + Fisher
(Picasso, SMAP, ThunderSTORM), made Bayesian.

The mode of log p(params | x) (positions in LR px and, when latent, i0 and b; flat priors inside
their supports, so mode = MLE inside them) is found by damped Fisher scoring
(Levenberg–Marquardt): step δ = (F + μ diag F)⁻¹ ∇ℓ with F = Jᵀ diag(1/λ) J the Fisher
information of the Poisson counts λ = ω + w²/g² and J = ∂ω/∂params, accepted only when ℓ rises.
All frames run vmapped in lockstep, from the same data-driven start as MCMC. At the mode the
covariance is the inverse of the observed information −∇²ℓ (autodiff Hessian), not of F.

The prior enters as it does in the exact posterior: the Gaussian of the likelihood is truncated
to the prior's support. Positions are therefore optimised without the disc (within
:data:`SEARCH_MARGIN` PSF widths beyond it), and the position draws are the Gaussian's restricted
to the disc (rejection), so an emitter near the disc's edge gets the same truncated posterior as
``grid`` gives it. i0 and b are kept inside their prior ranges.

Frames are flagged, never dropped, when the optimiser did not reach a stationary point (Newton
decrement ∇ℓᵀ F⁻¹ ∇ℓ above ``tol`` after ``max_iter`` steps), when −∇²ℓ is not positive
definite, or when more than :data:`~.laplace_gaussian.EDGE_MASS_MAX` of the Gaussian lies outside
the prior (so little is left inside that the truncated draws say little).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import lru_cache
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from bayes_smlm.errors import ConfigError
from bayes_smlm.forward.checks import check_int
from bayes_smlm.forward.config import Task
from bayes_smlm.forward.frames import validate_frames
from bayes_smlm.forward.model import exact_sum_length, make_rate_log_likelihood
from bayes_smlm.forward.parameters import ParameterLayout
from bayes_smlm.methods.batching import map_frame_batches
from bayes_smlm.methods.counts import CountPosterior, posterior_over_counts
from bayes_smlm.methods.evidence import parse_counts, task_with_count
from bayes_smlm.methods.initialization import detect_initial_positions
from bayes_smlm.methods.laplace_evidence import laplace_log_evidence
from bayes_smlm.methods.laplace_gaussian import (
    LaplaceFit,
    edge_mass,
    gaussian_theta_draws,
    laplace_kde_moments,
)
from bayes_smlm.methods.mode_search import damped_newton, laplace_covariance
from bayes_smlm.methods.registry import register_method, reject_unknown_options
from bayes_smlm.methods.result import PosteriorResult
from bayes_smlm.parallel import device_parallel

MAX_ITER = 50  # scoring steps per frame (default of every Laplace fit)
TOL = 1e-4  # Newton decrement at which a fit has converged (see laplace_fit)
SEARCH_MARGIN = 3.0  # PSF widths beyond the prior disc within which positions are optimised


def fit_one_frame(
    task: Task,
    layout: ParameterLayout,
    likelihood: str,
    n_max: int | None,
    max_iter: int,
    tol: float,
) -> Callable[[jax.Array], tuple[jax.Array, ...]]:
    """Pure ``adu (H, W) -> (mode, covariance, converged, positive_definite, edge_mass,
    iterations)`` of one frame (vmappable; options as in :func:`laplace_fit`)."""
    derivatives = layout.image_derivatives(task)
    prepare, loglik = make_rate_log_likelihood(task, likelihood=likelihood, n_max=n_max)
    lo, hi = layout.bounds(task)
    centre = jnp.asarray(task.centre, jnp.float32)
    search_radius = task.prior.radius + SEARCH_MARGIN * task.optics.sigma_psf

    def project(params: jax.Array) -> jax.Array:
        return layout.project(params, task, search_radius)

    def one_frame(adu: jax.Array) -> tuple[jax.Array, ...]:
        start = project(
            layout.pack(
                detect_initial_positions(task, adu),
                task.prior.i0,
                jnp.mean(jnp.asarray(task.prior.background)),
            )
        )
        mode, iterations, converged, information = damped_newton(
            start,
            prepare(adu),
            derivatives=derivatives,
            curvature=layout.curvature,
            loglik=loglik,
            project=project,
            max_iter=max_iter,
            tol=tol,
        )
        covariance, positive_definite = laplace_covariance(information)
        return (
            mode,
            covariance,
            converged,
            positive_definite,
            edge_mass(layout, mode, covariance, centre, task.prior.radius, lo, hi),
            iterations,
        )

    return one_frame


def position_fit(task: Task) -> Callable[[jax.Array], tuple[jax.Array, jax.Array]]:
    """``adu (H, W) -> (mode (N, 2), covariance (2N, 2N))`` of the positions, pure JAX: this
    method's fit of one frame with i0 and b at the task's values (what MCMC chains are whitened
    by, :mod:`bayes_smlm.methods.whitening`)."""
    fit = fit_one_frame(
        task, ParameterLayout.of(task, False, False), "poisson", None, MAX_ITER, TOL
    )
    n = task.prior.n_emitters

    def mode_and_covariance(adu: jax.Array) -> tuple[jax.Array, jax.Array]:
        mode, covariance = fit(adu)[:2]
        return mode[: 2 * n].reshape(n, 2), covariance[: 2 * n, : 2 * n]

    return mode_and_covariance


@lru_cache(maxsize=8)
def _batched(
    task: Task,
    layout: ParameterLayout,
    likelihood: str,
    n_max: int | None,
    max_iter: int,
    tol: float,
) -> tuple[Callable[..., Any], int]:
    return device_parallel(jax.vmap(fit_one_frame(task, layout, likelihood, n_max, max_iter, tol)))


def laplace_fit(
    task: Task,
    adu: np.ndarray,
    *,
    infer_intensity: bool = False,
    infer_background: bool = False,
    likelihood: str = "poisson",
    max_iter: int = MAX_ITER,
    tol: float = TOL,
    batch_size: int = 4096,
    progress: bool = False,
) -> LaplaceFit:
    """Mode and Laplace covariance of the posterior of every frame.

    Parameters
    ----------
    task : Task
        Optics, camera and prior (disc for positions; ``i0_range``, ``background_range`` for
        latent intensity and background, uniform).
    adu : (F, H, W) array
        Frames, ADU.
    infer_intensity, infer_background : bool
        Make i0 (per emitter) and b (per frame) latent instead of the task's values.
    likelihood : {"poisson", "poisson_gaussian"}
    max_iter : int
        Most scoring steps per frame.
    tol : float
        Newton decrement ∇ℓᵀ F⁻¹ ∇ℓ (≈ squared distance to the mode in posterior SDs) below which
        a frame has converged. 1e-4 puts the mode within 0.01 SD; float32 gradients leave a
        floor near 1e-6 (measured), so much smaller values stop converging.
    batch_size : int
        Frames per compiled call (memory ≈ batch · H·W · P floats).
    """
    return _fit_checked_frames(
        task,
        validate_frames(task, adu),
        infer_intensity=infer_intensity,
        infer_background=infer_background,
        likelihood=likelihood,
        max_iter=max_iter,
        tol=tol,
        batch_size=batch_size,
        progress=progress,
    )


def _fit_checked_frames(
    task: Task,
    adu: np.ndarray,
    *,
    infer_intensity: bool,
    infer_background: bool,
    likelihood: str,
    max_iter: int,
    tol: float,
    batch_size: int,
    progress: bool,
) -> LaplaceFit:
    """:func:`laplace_fit` of frames that :func:`validate_frames` has already checked."""
    max_iter = check_int("max_iter", max_iter)
    batch_size = check_int("batch_size", batch_size)
    if not tol > 0:
        raise ConfigError("tol", f"must be > 0 (got {tol})")
    layout = ParameterLayout.of(task, infer_intensity, infer_background)
    n_max = (
        exact_sum_length(
            task, adu, infer_intensity=infer_intensity, infer_background=infer_background
        )
        if likelihood == "poisson_gaussian"
        else None
    )
    fn, n_devices = _batched(task, layout, likelihood, n_max, max_iter, float(tol))
    started = time.perf_counter()
    mode, cov, converged, pd, edge, iterations = map_frame_batches(
        fn, (adu,), batch_size, progress=progress, desc="laplace", multiple_of=n_devices
    )
    return LaplaceFit(
        layout=layout,
        mode=mode,
        covariance=cov,
        converged=converged,
        positive_definite=pd,
        edge_mass=edge,
        iterations=iterations,
        seconds=time.perf_counter() - started,
    )


@register_method(
    "laplace",
    emitter_count="evidence",
    brightness="as_task",
    flags=(
        "no converged mode, an information matrix that is not positive definite, or a "
        "Gaussian with 99 % of its mass outside the prior"
    ),
)
def laplace_posterior(
    task: Task,
    adu: np.ndarray,
    *,
    seed: int = 0,
    chains: int = 4,
    draws: int = 1000,
    progress: bool = False,
    likelihood: str = "poisson",
    infer_intensity: bool | None = None,
    infer_background: bool | None = None,
    max_iter: int = MAX_ITER,
    tol: float = TOL,
    batch_size: int = 4096,
    n_emitters: Any = None,
    keep_samples: int = 0,
    theta_true: np.ndarray | None = None,
    **unknown: Any,
) -> PosteriorResult:
    """Laplace approximation of p(params | x): mode + inverse observed information, then
    chains × draws i.i.d. position draws from that Gaussian, pushed through the KDE.

    Options as for :func:`laplace_fit`, except that ``infer_intensity`` and
    ``infer_background`` default to the task's (latent where ``prior.brightness = drawn``, as the
    simulator draws them); ``chains`` × ``draws`` only shape the i.i.d. draws
    (R-hat of i.i.d. draws says nothing, so the frame flags come from the fit:
    ``extra["flagged"]``). The draws are the Gaussian's restricted to the prior disc.
    ``n_emitters`` (counts, as for ``smc``) adds the Laplace evidence of each count
    (:mod:`bayes_smlm.methods.laplace_evidence`) and, with several, the mixture over counts
    (``keep_samples`` of its KDE samples per frame kept, as for ``smc``).
    """
    reject_unknown_options("laplace", unknown)
    chains, draws = check_int("chains", chains), check_int("draws", draws)
    adu = validate_frames(task, adu)
    started = time.perf_counter()
    counts = parse_counts(n_emitters, task)
    drawn = task.prior.brightness == "drawn"
    infer_intensity = drawn if infer_intensity is None else bool(infer_intensity)
    infer_background = drawn if infer_background is None else bool(infer_background)
    settings = {
        "likelihood": likelihood,
        "infer_intensity": bool(infer_intensity),
        "infer_background": bool(infer_background),
        "max_iter": max_iter,
        "tol": tol,
        "chains": chains,
        "draws": draws,
        "seed": seed,
    }

    def fit_count(n: int) -> CountPosterior:
        counted = task_with_count(task, n)
        fit = _fit_checked_frames(
            counted,
            adu,
            infer_intensity=infer_intensity,
            infer_background=infer_background,
            likelihood=likelihood,
            max_iter=max_iter,
            tol=tol,
            batch_size=batch_size,
            progress=progress,
        )
        theta = gaussian_theta_draws(fit, counted, chains, draws, seed)
        f = fit.mode.shape[0]
        kde_mean, kde_var, closed_form = laplace_kde_moments(fit, theta, counted)
        log_z = laplace_log_evidence(counted, fit.layout, fit.mode, fit.covariance, adu, likelihood)
        result = None
        if n == task.prior.n_emitters:
            extra = {
                "mode": fit.mode,
                "covariance": fit.covariance,
                "converged": fit.converged,
                "positive_definite": fit.positive_definite,
                "edge_mass": fit.edge_mass,
                "iterations": fit.iterations,
                "flagged": fit.flagged,
                "closed_form": closed_form,
                "theta_mean": fit.theta_mean(),
            }
            result = PosteriorResult(
                method="laplace",
                task=task,
                adu=adu,
                kde_mean=kde_mean,
                kde_var=kde_var,
                theta=theta,
                settings={
                    **settings,
                    "parameters": list(fit.layout.names),
                    "fit_seconds": fit.seconds,
                },
                theta_true=theta_true,
                extra=extra,
            )
        return CountPosterior(
            n, kde_mean, kde_var, log_z, np.full(f, np.nan), fit.flagged, result, theta
        )

    return posterior_over_counts(
        "laplace",
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
