"""Laplace-started chains: sample a frame's posterior in coordinates whitened by its Laplace fit.

The Laplace approximation (:mod:`bayes_smlm.methods.laplace`) gives each frame a mode m and a
covariance Σ of the positions. Sampling z with u = u₀ + L z, where u₀ is the mode in the
sampler's unconstrained coordinates and L Lᵀ = J⁻¹ Σ J⁻ᵀ (J = ∂θ/∂u at u₀) is the Laplace
covariance (each emitter's 2×2 block) carried into those coordinates, makes the target ≈ N(0, I)
for isolated emitters: the mass matrix is the inverse Hessian, adaptation starts at its answer
and needs a short warm-up, and every frame of a vmapped batch has about the same geometry, so
lockstep lanes take about the same number of leapfrog steps. The change of variables is affine
with a constant Jacobian, so the target is exactly the posterior — only the sampler's
efficiency depends on how good the Laplace fit is.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from bayes_smlm.forward.config import Task
from bayes_smlm.methods.initialization import project_start_into_disc

START_SCALE = 2.0  # chains start from the Laplace Gaussian widened 2× (over-dispersed for R-hat)
JITTER = 1e-6  # added to the carried covariance's diagonal (u-space units²) before Cholesky


def laplace_whitening(
    task: Task, transform: Any, mode: jax.Array, covariance: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """(u₀ (2N,), L (2N, 2N)) of one frame from its Laplace positions ``mode`` (N, 2) LR px and
    their ``covariance`` (2N, 2N) px²; ``transform`` maps u (N, 2) to θ (None: u = θ)."""
    n = mode.shape[0]
    # each emitter's own 2×2 block only: for close pairs the cross-emitter terms of a Laplace
    # fit describe the posterior badly; whitening with them made NUTS flag 17 of 32 `paper`
    # frames, mostly for divergences (the blocks alone: 7; the detection start: 1)
    block = jnp.kron(jnp.eye(n, dtype=mode.dtype), jnp.ones((2, 2), mode.dtype))
    covariance = covariance * block
    theta0 = project_start_into_disc(mode, jnp.asarray(task.centre, mode.dtype), task.prior.radius)
    if transform is None:
        u0, jac = theta0.reshape(-1), jnp.eye(2 * n, dtype=mode.dtype)
    else:
        u0 = transform.inv(theta0).reshape(-1)
        jac = jax.jacfwd(lambda u: transform(u.reshape(n, 2)).reshape(-1))(u0)
    carried = jnp.linalg.solve(jac, jnp.linalg.solve(jac, covariance).T)
    carried = 0.5 * (carried + carried.T) + JITTER * jnp.eye(2 * n, dtype=mode.dtype)
    return u0, jnp.linalg.cholesky(carried)


def whitened_target(
    target: Callable[[jax.Array], jax.Array],
    u0: jax.Array,
    lower: jax.Array,
    shape: tuple[int, ...],
) -> Callable[[jax.Array], jax.Array]:
    """``z ↦ target(u₀ + L z)`` with u reshaped to ``shape`` (the constant log|L| is dropped)."""
    return lambda z: target((u0 + lower @ z).reshape(shape))


def unwhiten(z: jax.Array, u0: jax.Array, lower: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """Draws z (..., 2N) back to u (..., *shape)."""
    u = u0 + jnp.einsum("ij,...j->...i", lower, z)
    return u.reshape(z.shape[:-1] + shape)


def laplace_starts(key: jax.Array, chains: int, dim: int) -> jax.Array:
    """(chains, dim) over-dispersed starts in whitened coordinates: N(0, START_SCALE² I)."""
    return START_SCALE * jax.random.normal(key, (chains, dim))
