"""Posterior of the emitters in a window by NUTS: the model and priors of :mod:`window_fit`
(positions, i0 per emitter and the window's b unknown, flat on the window box and the task's
ranges), sampled rather than approximated at the mode — ``localize --method nuts``.

Each window's chains run in unconstrained coordinates u, p = lo + (hi − lo)·sigmoid(u) per
parameter (plus its log-Jacobian), so the prior's box has no wall for trajectories to diverge on.
They start from the Laplace fit: chain starts drawn from the Laplace Gaussian widened 2× (R-hat
needs dispersed starts), and BlackJAX's window adaptation starts from the Laplace variances
mapped into u — so a short warm-up suffices. Empty emitter slots (i0 = 0, held fixed in the fit)
keep their values; their u's are standard normal dummies that the likelihood ignores.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from arviz_stats.base import array_stats

from bayes_smlm.acquisition.window_fit import (
    WindowFits,
    free_parameters,
    window_box,
    window_log_likelihood,
    window_task,
)
from bayes_smlm.errors import ConfigError
from bayes_smlm.forward.checks import check_int
from bayes_smlm.forward.config import Task
from bayes_smlm.forward.parameters import ParameterLayout
from bayes_smlm.methods.batching import map_frame_batches
from bayes_smlm.methods.nuts import nuts_chain
from bayes_smlm.parallel import device_parallel


class WindowDraws(NamedTuple):
    """Summaries of the NUTS draws of B windows (parameters in ``ParameterLayout(K, True,
    True)`` order, positions in window pixels; entries of empty slots mean nothing).

    mean : (B, P); covariance : (B, P, P) over all chains' draws; rhat, ess_bulk : (B, P)
    rank-normalised split R-hat and bulk ESS (arviz-stats); divergences : (B,) int.
    """

    mean: np.ndarray
    covariance: np.ndarray
    rhat: np.ndarray
    ess_bulk: np.ndarray
    divergences: np.ndarray


def _sample_one_window(
    small: Task,
    n_emitters: int,
    chains: int,
    warmup: int,
    draws: int,
    target_accept: float,
    max_tree_depth: int,
) -> Callable[..., tuple[jax.Array, ...]]:
    layout = ParameterLayout(n_emitters, True, True)
    omega = layout.expected_photons(small)
    lo, hi = window_box(small, n_emitters)
    width = hi - lo

    def one(
        key: jax.Array,
        counts: jax.Array,
        pedestal: jax.Array,
        fitted: jax.Array,
        mode: jax.Array,
        covariance: jax.Array,
        active: jax.Array,
    ) -> tuple[jax.Array, ...]:
        free = free_parameters(active)

        def to_params(u: jax.Array) -> jax.Array:
            return jnp.where(free, lo + width * jax.nn.sigmoid(u), mode)

        def logdensity(u: jax.Array) -> jax.Array:
            jacobian = jnp.log(width) + jax.nn.log_sigmoid(u) + jax.nn.log_sigmoid(-u)
            return window_log_likelihood(omega(to_params(u)), (counts, pedestal, fitted)) + jnp.sum(
                jnp.where(free, jacobian, -0.5 * u**2)
            )

        fraction = jnp.clip((mode - lo) / width, 1e-4, 1 - 1e-4)
        centre = jnp.where(free, jnp.log(fraction) - jnp.log1p(-fraction), 0.0)
        slope = width * fraction * (1 - fraction)  # dp/du at the mode
        var = jnp.diagonal(covariance) / slope**2
        var = jnp.where(free & jnp.isfinite(var) & (var > 0), var, 1.0)
        k_start, k_run = jax.random.split(key)
        starts = centre + 2.0 * jnp.sqrt(var) * jax.random.normal(k_start, (chains,) + var.shape)
        sample_chain = nuts_chain(warmup, draws, target_accept, max_tree_depth, var)
        u, stats = jax.vmap(sample_chain, in_axes=(0, 0, None))(
            jax.random.split(k_run, chains), starts, logdensity
        )
        return jax.vmap(jax.vmap(to_params))(u), jnp.sum(stats["diverging"])

    return one


@lru_cache(maxsize=64)
def _compiled(
    small: Task,
    n_emitters: int,
    chains: int,
    warmup: int,
    draws: int,
    target_accept: float,
    max_tree_depth: int,
) -> tuple[Callable[..., tuple], int]:
    one = _sample_one_window(
        small, n_emitters, chains, warmup, draws, target_accept, max_tree_depth
    )
    return device_parallel(jax.vmap(one))


def sample_windows(
    task: Task,
    counts: np.ndarray,
    pedestal: np.ndarray,
    fit: WindowFits,
    active: np.ndarray,
    fitted: np.ndarray | None = None,
    *,
    seed: int = 0,
    first_frame: int = 0,
    first_window: int = 0,
    chains: int = 4,
    draws: int = 500,
    warmup: int = 200,
    target_accept: float = 0.8,
    max_tree_depth: int = 8,
    batch_size: int = 16,
) -> WindowDraws:
    """NUTS posteriors of B windows of one shape and number of emitter slots.

    Parameters
    ----------
    task : Task
        Optics (σ_psf) and the priors' ranges (``i0_range``, ``background_range``).
    counts, pedestal, fitted : (B, Sh, Sw) arrays
        As for :func:`window_fit.fit_windows` (``fitted`` default: every pixel).
    fit : WindowFits
        The windows' Laplace fits: chains start from them.
    active : (B, K) bool array
        Occupied emitter slots.
    seed, first_frame, first_window : int
        Window ``i`` of the call uses key ``fold_in(fold_in(PRNGKey(seed), first_frame),
        first_window + i)``: ``first_frame`` is the movie index of the first frame of the chunk
        being localized and ``first_window + i`` the window's number within the chunk, so a
        chunk's draws do not depend on the chunks before it (chunks may run on other machines,
        :mod:`bayes_smlm.cluster`).
    chains, draws, warmup : int
        Chains per window (≥ 2, for R-hat), kept draws per chain, adaptation steps per chain.
    target_accept : float
        Target acceptance of the step-size adaptation, in (0, 1).
    max_tree_depth : int
        Maximum trajectory doublings.
    batch_size : int
        Windows per compiled call per device. Vmapped NUTS runs its lanes in lockstep (each
        leapfrog loop costs the batch's deepest tree), so small batches waste less.
    """
    chains = check_int("chains", chains, lo=2)
    draws = check_int("draws", draws, lo=10)
    warmup = check_int("warmup", warmup, lo=10)
    if not 0 < target_accept < 1:
        raise ConfigError("target_accept", f"must be in (0, 1) (got {target_accept})")
    n_windows, height, width = counts.shape
    n_emitters = (fit.mode.shape[1] - 1) // 3
    fn, n_devices = _compiled(
        window_task(task, (height, width)),
        n_emitters,
        chains,
        warmup,
        draws,
        float(target_accept),
        check_int("max_tree_depth", max_tree_depth),
    )
    chunk_key = jax.random.fold_in(
        jax.random.PRNGKey(seed), check_int("first_frame", first_frame, lo=0)
    )
    keys = np.asarray(
        jax.vmap(lambda i: jax.random.fold_in(chunk_key, i))(
            jnp.arange(first_window, first_window + n_windows, dtype=jnp.uint32)
        )
    )
    fitted = np.ones(counts.shape, bool) if fitted is None else fitted
    arrays = (
        [keys]
        + [np.asarray(a, np.float32) for a in (counts, pedestal, fitted, fit.mode, fit.covariance)]
        + [np.asarray(active, bool)]
    )
    params, divergences = map_frame_batches(
        fn, arrays, batch_size * n_devices, multiple_of=n_devices
    )
    return summarise_draws(params, divergences)


def summarise_draws(params: np.ndarray, divergences: np.ndarray) -> WindowDraws:
    """:class:`WindowDraws` of draws (B, chains, draws, P)."""
    b, c, d, p = params.shape
    flat = params.reshape(b, c * d, p).astype(np.float64)
    mean = flat.mean(1)
    centred = flat - mean[:, None]
    covariance = np.einsum("bdi,bdj->bij", centred, centred) / (c * d - 1)
    chain_last = np.moveaxis(params, (1, 2), (-2, -1))  # arviz-stats: (…, chain, draw)
    with np.errstate(invalid="ignore", divide="ignore"):  # constant (empty-slot) entries
        rhat = np.asarray(array_stats.rhat(chain_last, method="rank"))
        ess = np.asarray(array_stats.ess(chain_last, method="bulk"))
    return WindowDraws(mean, covariance, rhat, ess, np.asarray(divergences, int))
