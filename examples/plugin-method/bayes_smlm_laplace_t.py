"""``laplace_t``: the Laplace fit of ``bayes_smlm`` with Student-t tails, as a plug-in method.

The Laplace approximation puts a Gaussian N(m, Σ) at each frame's mode. Where the posterior has
heavier tails than that (a dim emitter, a neighbour it cannot rule out), a multivariate Student-t
with the same location and scale matrix, t_ν(m, Σ), is the usual widening: a scale mixture
θ = m + z / √w, z ~ N(0, Σ), w ~ χ²_ν / ν, whose covariance is ν/(ν − 2) Σ. The draws are
restricted to the prior disc by rejection, as ``laplace``'s are, and pushed through the KDE.

Each frame draws from its own random stream, ``(seed, first_frame + f)``, so a run split into
chunks (``posterior --scheduler``) gives the draws of one call.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from bayes_smlm.forward.frames import validate_frames
from bayes_smlm.methods.laplace import laplace_fit
from bayes_smlm.methods.pushforward import kde_moments
from bayes_smlm.methods.registry import reject_unknown_options, require_fixed_brightness
from bayes_smlm.methods.result import PosteriorResult
from bayes_smlm.methods.spec import describe_method
from bayes_smlm.methods.truncation import draws_in_disc

NAME = "laplace_t"


@describe_method(
    flags="no converged mode, or an information matrix that is not positive definite (as laplace)"
)
def laplace_t(
    task,
    adu,
    *,
    seed: int = 0,
    chains: int = 4,
    draws: int = 1000,
    progress: bool = False,
    nu: float = 4.0,
    first_frame: int = 0,
    theta_true: np.ndarray | None = None,
    **unknown: Any,
) -> PosteriorResult:
    """Student-t posterior t_ν(mode, Laplace covariance) of every frame's emitter positions.

    Parameters
    ----------
    task : Task
    adu : (F, H, W) array
        Frames, ADU.
    seed, chains, draws : int
        The draws: ``chains`` × ``draws`` i.i.d. per frame (chains only shape the array).
    nu : float
        Degrees of freedom (> 2: a finite covariance; large ν gives ``laplace``'s Gaussian).
    first_frame : int
        Index of ``adu[0]`` in the whole run (seeds each frame by its index).
    theta_true : (F, N, 2) array, optional
        True positions, kept with the result for scoring.
    """
    reject_unknown_options(NAME, unknown)
    require_fixed_brightness(task, NAME)
    if not nu > 2:
        from bayes_smlm.errors import ConfigError

        raise ConfigError("nu", f"must be > 2 degrees of freedom (got {nu})")
    adu = validate_frames(task, adu)
    started = time.perf_counter()
    fit = laplace_fit(task, adu, progress=progress)
    n = fit.layout.n_emitters
    mean = fit.mode[:, None, : 2 * n]
    chol = np.linalg.cholesky(fit.covariance[:, : 2 * n, : 2 * n] + 1e-12 * np.eye(2 * n))
    frames = len(adu)
    streams = [np.random.default_rng([seed, first_frame + f]) for f in range(frames)]

    def draw(which: np.ndarray, size: int) -> np.ndarray:  # (F', S, N, 2), t_ν draws
        out = np.empty((len(which), size, n, 2))
        for i, f in enumerate(which):
            z = streams[f].standard_normal((size, 2 * n)) @ chol[f].T
            w = streams[f].chisquare(nu, (size, 1)) / nu
            out[i] = (mean[f] + z / np.sqrt(w)).reshape(size, n, 2)
        return out

    points, _ = draws_in_disc(draw, frames, chains * draws, task)
    kde_mean, kde_var = kde_moments(points, task)
    theta = np.moveaxis(points.reshape(frames, chains, draws, n, 2), 0, 2).astype(np.float32)
    return PosteriorResult(
        method=NAME,
        task=task,
        adu=adu,
        kde_mean=kde_mean,
        kde_var=kde_var,
        theta=theta,
        settings={"nu": float(nu), "chains": chains, "draws": draws, "seed": seed},
        seconds=time.perf_counter() - started,
        theta_true=theta_true,
        extra={"flagged": ~(fit.converged & fit.positive_definite), "mode": fit.mode},
    )
