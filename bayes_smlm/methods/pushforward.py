"""KDE push-forward (eq. 5): posterior mean and per-pixel variance of y(θ) from θ draws."""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

import jax
import jax.numpy as jnp
import numpy as np

from bayes_smlm.forward import physics
from bayes_smlm.forward.config import Task
from bayes_smlm.methods.batching import map_frame_batches


def kde_axis_factors(theta: jax.Array, task: Task) -> tuple[jax.Array, jax.Array]:
    """Per-draw separable KDE factors: ey (..., N, uH) and ex (..., N, uW), peak-normalised."""
    return physics.kde_axis_factors(
        theta, task.optics.sigma_kde, task.optics.upsampling, task.shape
    )


@lru_cache(maxsize=16)
def _moments_fn(task: Task, chunk: int) -> Callable[[jax.Array], tuple[jax.Array, jax.Array]]:
    if task.prior.n_emitters == 1:
        return jax.jit(jax.vmap(lambda draws: _single_emitter_moments(draws, task)))

    def moments(draws: jax.Array) -> tuple[jax.Array, jax.Array]:
        """draws (S, N, 2) of one frame -> (mean, var) of y over draws, each (uH, uW)."""
        s = draws.shape[0]
        chunks = draws.reshape(s // chunk, chunk, *draws.shape[1:])
        # shift by the KDE of the first draw: a one-pass variance without cancellation
        ey0, ex0 = kde_axis_factors(draws[0], task)
        shift = jnp.einsum("nh,nw->hw", ey0, ex0)

        def add(carry, block):
            total, total_sq = carry
            ey, ex = kde_axis_factors(block, task)
            y = jnp.einsum("snh,snw->shw", ey, ex) - shift
            return (total + y.sum(0), total_sq + (y * y).sum(0)), None

        zeros = jnp.zeros_like(shift)
        (total, total_sq), _ = jax.lax.scan(add, (zeros, zeros), chunks)
        mean_shifted = total / s
        var = jnp.maximum(total_sq / s - mean_shifted**2, 0.0)
        return mean_shifted + shift, var

    return jax.jit(jax.vmap(moments))


def _single_emitter_moments(draws: jax.Array, task: Task) -> tuple[jax.Array, jax.Array]:
    """One emitter: y = ey ⊗ ex per draw, so E[y] = Eyᵀ Ex / S and E[y²] = (Ey²)ᵀ (Ex²) / S are
    two matrix products over the draws (BLAS instead of S images)."""
    ey, ex = kde_axis_factors(draws, task)  # (S, 1, uH), (S, 1, uW)
    ey, ex = ey[:, 0], ex[:, 0]
    s = draws.shape[0]
    mean = ey.T @ ex / s
    second = (ey * ey).T @ (ex * ex) / s
    return mean, jnp.maximum(second - mean**2, 0.0)


def kde_moments(
    theta_draws: np.ndarray, task: Task, chunk: int = 250, frames_per_call: int = 32
) -> tuple[np.ndarray, np.ndarray]:
    """Posterior mean and marginal variance of the KDE from θ draws.

    Parameters
    ----------
    theta_draws : (F, S, N, 2) array
        Draws of (x, y) in LR pixels per frame (any label order: y is permutation invariant).
    task : Task
    chunk : int
        Draws per accumulation step (memory: chunk · u²HW floats per frame).

    Returns
    -------
    mean, var : (F, uH, uW) float32 arrays. The variance divides by S (the plug-in estimate).
    """
    theta_draws = np.asarray(theta_draws, np.float32)
    s = theta_draws.shape[1]
    chunk = max(1, min(chunk, s))
    while s % chunk:  # use every draw: the chunk must divide S
        chunk -= 1
    return map_frame_batches(_moments_fn(task, chunk), (theta_draws,), frames_per_call)


@lru_cache(maxsize=16)
def _images_fn(task: Task) -> Callable[[jax.Array], jax.Array]:
    def images(draws: jax.Array) -> jax.Array:
        ey, ex = kde_axis_factors(draws, task)
        return jnp.einsum("snh,snw->shw", ey, ex)

    return jax.jit(images)


def kde_images(theta_draws: np.ndarray, task: Task) -> np.ndarray:
    """The KDE y(θ) (eq. 4) of every draw: (S, N, 2) LR-pixel draws -> (S, uH, uW) float32."""
    return np.asarray(_images_fn(task)(jnp.asarray(theta_draws, jnp.float32)))
