"""``grid``: the exact posterior of one emitter's (x, y) on a fine grid — the ground truth.

Two stages per frame, both inside one jit vmapped over frames: a coarse grid over the prior disc
(spacing ``coarse_step`` px) locates every region with log density above ``max − window``; a
``fine × fine`` grid over that box then carries the posterior (midpoint rule). The KDE moments
are exact sums over the grid, made cheap by separability: for one emitter
``E[y] = Eyᵀ W Ex`` and ``E[y²] = (Ey²)ᵀ W (Ex²)`` with W the (ny, nx) posterior weights.
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
from bayes_smlm.forward.config import Task
from bayes_smlm.forward.count_prior import require_fixed_count
from bayes_smlm.forward.frames import validate_frames
from bayes_smlm.forward.model import make_log_density
from bayes_smlm.methods.batching import frame_keys, map_frame_batches
from bayes_smlm.methods.model_fit import misfit_frames
from bayes_smlm.methods.pushforward import kde_axis_factors
from bayes_smlm.methods.registry import (
    register_method,
    reject_unknown_options,
    require_fixed_brightness,
)
from bayes_smlm.methods.result import PosteriorResult
from bayes_smlm.parallel import device_parallel

MIN_CELLS_PER_SD = 2.0  # fine-grid cells per posterior SD below which a frame is flagged


def _grid_fn(
    task: Task, coarse_step: float, fine: int, window: float, likelihood: str
) -> Callable[..., tuple[jax.Array, ...]]:
    logdensity = make_log_density(task, likelihood=likelihood)
    cx, cy = task.centre
    radius = task.prior.radius
    n_coarse = int(np.ceil(2 * radius / coarse_step)) + 1
    coarse = jnp.linspace(-radius, radius, n_coarse)

    def grid_logp(xs: jax.Array, ys: jax.Array, adu: jax.Array) -> jax.Array:
        """(ny, nx) log density on the grid xs × ys."""
        pts = jnp.stack(jnp.meshgrid(xs, ys), -1)  # (ny, nx, 2)
        flat = pts.reshape(-1, 1, 2)
        lp = jax.lax.map(lambda t: logdensity({"theta": t}, adu), flat, batch_size=512)
        return lp.reshape(ys.size, xs.size)

    def one_frame(adu: jax.Array, key: jax.Array, n_draws: int) -> tuple[jax.Array, ...]:
        lp_coarse = grid_logp(cx + coarse, cy + coarse, adu)
        keep = lp_coarse > jnp.max(lp_coarse) - window
        xs_keep = jnp.where(keep.any(0), cx + coarse, jnp.nan)
        ys_keep = jnp.where(keep.any(1), cy + coarse, jnp.nan)
        x0, x1 = jnp.nanmin(xs_keep) - coarse_step, jnp.nanmax(xs_keep) + coarse_step
        y0, y1 = jnp.nanmin(ys_keep) - coarse_step, jnp.nanmax(ys_keep) + coarse_step
        hx, hy = (x1 - x0) / fine, (y1 - y0) / fine
        xs = x0 + hx * (jnp.arange(fine) + 0.5)  # cell midpoints
        ys = y0 + hy * (jnp.arange(fine) + 0.5)
        lp = grid_logp(xs, ys, adu)
        w = jax.nn.softmax(lp.reshape(-1)).reshape(lp.shape)  # (ny, nx)
        wx, wy = w.sum(0), w.sum(1)
        mean = jnp.stack([wx @ xs, wy @ ys])
        dx, dy = xs - mean[0], ys - mean[1]
        cov = jnp.array([[wx @ dx**2, dy @ w @ dx], [dy @ w @ dx, wy @ dy**2]])
        # exact KDE moments by separability (one emitter): factors of the grid's x and y lines
        ey, ex = kde_axis_factors(jnp.stack([xs, ys], -1)[:, None, :], task)
        ey, ex = ey[:, 0], ex[:, 0]  # (fine, uH), (fine, uW)
        kde_mean = ey.T @ w @ ex
        kde_var = jnp.maximum((ey**2).T @ w @ ex**2 - kde_mean**2, 0.0)
        # i.i.d. draws: a grid cell by its weight, then uniform within the cell
        k_cell, k_jit = jax.random.split(key)
        cdf = jnp.cumsum(w.reshape(-1))  # inverse-CDF draw: memory O(grid + draws)
        cell = jnp.searchsorted(cdf, jax.random.uniform(k_cell, (n_draws,)) * cdf[-1])
        cell = jnp.minimum(cell, fine * fine - 1)
        jit = jax.random.uniform(k_jit, (n_draws, 2), minval=-0.5, maxval=0.5)
        draws = jnp.stack([xs[cell % fine] + jit[:, 0] * hx, ys[cell // fine] + jit[:, 1] * hy], -1)
        return kde_mean, kde_var, mean, cov, draws, jnp.stack([hx, hy])

    return one_frame


@lru_cache(maxsize=8)
def _batched(
    task: Task, coarse_step: float, fine: int, window: float, likelihood: str, n_draws: int
) -> tuple[Callable[[jax.Array, jax.Array], tuple[jax.Array, ...]], int]:
    one = _grid_fn(task, coarse_step, fine, window, likelihood)
    return device_parallel(jax.vmap(lambda adu, key: one(adu, key, n_draws)))


@register_method(
    "grid",
    flags=(
        "a posterior narrower than two cells of its grid (extra/under_resolved, e.g. i0 ="
        " 1e7) or a frame the model does not explain (extra/misfit)"
    ),
)
def grid_posterior(
    task: Task,
    adu: np.ndarray,
    *,
    seed: int = 0,
    chains: int = 4,
    draws: int = 1000,
    progress: bool = False,
    fine: int = 201,
    coarse_step: float = 0.1,
    window: float = 30.0,
    likelihood: str = "poisson",
    batch_size: int = 32,
    first_frame: int = 0,
    theta_true: np.ndarray | None = None,
    **unknown: Any,
) -> PosteriorResult:
    """Exact grid posterior of one emitter (the task's prior, i0 and background).

    Parameters
    ----------
    fine : int
        Grid points per axis of the fine grid (odd keeps the box centre on the grid).
    coarse_step : float
        Spacing of the coarse search grid, LR px (must resolve the posterior's support).
    window : float
        Log-density drop below the coarse maximum that the fine box must contain (30 leaves
        out < e⁻³⁰ of the mass per coarse cell).
    chains, draws : int
        Shape of the i.i.d. draws returned for θ summaries (C, D).
    first_frame : int
        Index of ``adu[0]`` in the whole movie: frame ``i`` draws from key ``first_frame + i``
        (:func:`~bayes_smlm.methods.batching.frame_keys`), so a shard reproduces the whole run.
    """
    reject_unknown_options("grid", unknown)
    require_fixed_count(task, "grid")
    require_fixed_brightness(task, "grid")
    if task.prior.n_emitters != 1:
        raise ConfigError(
            "method",
            f"grid needs a one-emitter task (got {task.prior.n_emitters} emitters); use nuts",
        )
    adu = validate_frames(task, adu)
    fn, n_devices = _batched(
        task, float(coarse_step), int(fine), float(window), likelihood, chains * draws
    )

    keys = frame_keys(seed, adu.shape[0], first_frame)
    start = time.perf_counter()
    out = map_frame_batches(
        fn, (adu, keys), batch_size, progress=progress, desc="grid", multiple_of=n_devices
    )
    seconds = time.perf_counter() - start
    kde_mean, kde_var, mean, cov, flat, spacing = out  # tuple pytree, leading axis F
    f = adu.shape[0]
    theta = np.moveaxis(flat.reshape(f, chains, draws, 1, 2), 0, 2)
    # a posterior narrower than a few grid cells (very bright emitters) is not resolved: flag it
    sd = np.sqrt(np.diagonal(np.asarray(cov), axis1=-2, axis2=-1))
    under_resolved = (sd < MIN_CELLS_PER_SD * np.asarray(spacing)).any(axis=-1)
    # and a frame the model does not explain (saturated, another camera's) has no posterior
    misfit = misfit_frames(task, adu, np.moveaxis(theta, 2, 0).reshape(f, -1, 1, 2))
    return PosteriorResult(
        method="grid",
        task=task,
        adu=adu,
        kde_mean=kde_mean,
        kde_var=kde_var,
        theta=theta,
        settings={
            "fine": fine,
            "coarse_step": coarse_step,
            "window": window,
            "likelihood": likelihood,
            "chains": chains,
            "draws": draws,
            "seed": seed,
        },
        seconds=seconds,
        theta_true=theta_true,
        extra={
            "theta_mean": mean,
            "theta_cov": cov,
            "grid_spacing": spacing,
            "under_resolved": under_resolved,
            "misfit": misfit,
            "flagged": under_resolved | misfit,
        },
    )
