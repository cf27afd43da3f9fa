"""The KDE's posterior mean and per-pixel variance under a Gaussian over θ, in closed form.

The KDE (eq. 4) is a sum over emitters of a separable kernel k(θ_k) of each emitter's position.
Its pixel-integrated Gaussian factors ΔE(c; t, σy) are replaced by Gaussian densities of variance
s² = σy² + 1/12 HR px² (the pixel's own variance added): for σy = 1.5 HR px the largest difference
is 2·10⁻⁴ of the kernel's peak, far below the Monte Carlo error of thousands of draws. Then, with
t_k the emitter's HR position (Gaussian, mean μ_k, covariance S_k from the LR ones by the affine
map t = u·θ + (u − 1)/2) and p a pixel centre,

    E[k_k(p)]         = K s² |s² I + S_k|^{-1/2} exp(−½ (p − μ_k)ᵀ (s² I + S_k)⁻¹ (p − μ_k)),
    E[k_k(p) k_l(p)]  = K² s⁴ |s² I₄ + S_kl|^{-1/2} exp(−½ (P − M)ᵀ (s² I₄ + S_kl)⁻¹ (P − M)),

with K = 1 / (2π s² ΔE(0; 0, σy)²), P = (p, p), M = (μ_k, μ_l) and S_kl the 4×4 covariance of
(t_k, t_l); E[k_k(p)²] is the first formula with K², s² halved. Var y = Σ_k Σ_l E[k_k k_l] − (E y)². The
Gaussian must be the whole posterior: where the prior disc truncates it, use draws instead.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from bayes_smlm.forward import physics
from bayes_smlm.forward.config import Task


def _cholesky(a: jax.Array) -> list[list[jax.Array]]:
    """Lower Cholesky factor of a small (d ≤ 4) SPD matrix, unrolled into elementwise
    arithmetic: vmapped over thousands of pixels and pairs, LAPACK calls per tiny matrix cost
    more than the arithmetic (and have hung XLA's CPU runtime here)."""
    d = a.shape[-1]
    low = [[None] * d for _ in range(d)]
    for i in range(d):
        for j in range(i + 1):
            total = a[..., i, j] - sum(low[i][k] * low[j][k] for k in range(j))
            low[i][j] = jnp.sqrt(total) if i == j else total / low[j][j]
    return low


def _gaussian_overlap(points: jax.Array, mean: jax.Array, cov: jax.Array, width2: float
                      ) -> jax.Array:
    """E[exp(−|points − t|²/(2 width2))] over t ~ N(mean, cov), i.e. (2π width2)^{d/2}
    N(points; mean, cov + width2·I); points (…, d), mean (d,), cov (d, d)."""
    d = mean.shape[-1]
    low = _cholesky(cov + width2 * jnp.eye(d))
    diff = points - mean
    z, quad, log_det = [], 0.0, 0.0
    for i in range(d):  # forward substitution L z = diff
        zi = (diff[..., i] - sum(low[i][k] * z[k] for k in range(i))) / low[i][i]
        z.append(zi)
        quad = quad + zi * zi
        log_det = log_det + 2.0 * jnp.log(low[i][i])
    return jnp.exp(0.5 * d * jnp.log(width2) - 0.5 * log_det - 0.5 * quad)


@lru_cache(maxsize=8)
def _moments_program(task: Task, n: int) -> Any:
    u = task.optics.upsampling
    sigma = task.optics.sigma_kde
    s2 = sigma**2 + 1.0 / 12.0
    peak = float(physics.pixel_integrated_gaussian(0.0, 0.0, sigma)) ** 2
    k = 1.0 / (2 * np.pi * s2 * peak)
    h, w = task.hr_shape
    rows, cols = jnp.meshgrid(jnp.arange(h, dtype=jnp.float32),
                              jnp.arange(w, dtype=jnp.float32), indexing="ij")
    pixels = jnp.stack([cols, rows], -1)                                  # (H, W, 2) as (x, y)
    both = jnp.concatenate([pixels, pixels], -1)                          # (H, W, 4)
    first, second = np.triu_indices(n, 1)
    # coordinates of each pair's 4-vector (x_a, y_a, x_b, y_b) in the 2N-vector
    pair_index = jnp.asarray(np.stack([2 * first, 2 * first + 1, 2 * second, 2 * second + 1], 1))

    def one(mode: jax.Array, cov: jax.Array) -> tuple[jax.Array, jax.Array]:
        mean_hr = u * mode + (u - 1) / 2.0                                # (2N,)
        cov_hr = u**2 * cov
        means = mean_hr.reshape(n, 2)
        blocks = jnp.stack([cov_hr[2 * a:2 * a + 2, 2 * a:2 * a + 2] for a in range(n)])
        overlap = jax.vmap(_gaussian_overlap, (None, 0, 0, None))
        mean = k * overlap(pixels, means, blocks, s2).sum(0)
        total = k**2 * overlap(pixels, means, blocks, s2 / 2.0).sum(0)
        if n > 1:
            pair_means = mean_hr[pair_index]                              # (P, 4)
            pair_covs = cov_hr[pair_index[:, :, None], pair_index[:, None, :]]   # (P, 4, 4)
            total = total + 2.0 * k**2 * overlap(both, pair_means, pair_covs, s2).sum(0)
        return mean, jnp.maximum(total - mean**2, 0.0)

    return jax.jit(jax.vmap(one))


def gaussian_kde_moments(mode: np.ndarray, covariance: np.ndarray, task: Task
                         ) -> tuple[np.ndarray, np.ndarray]:
    """(F, uH, uW) mean and variance of the KDE when each frame's positions are Gaussian with
    ``mode`` (F, 2N) and ``covariance`` (F, 2N, 2N), LR px (see the module docstring)."""
    n = mode.shape[1] // 2
    mean, var = _moments_program(task, n)(jnp.asarray(mode, jnp.float32),
                                          jnp.asarray(covariance, jnp.float32))
    return np.asarray(mean), np.asarray(var)
