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
(t_k, t_l); E[k_k(p)²] is the first formula with K², s² halved. Var y = Σ_k Σ_l E[k_k k_l] − (E y)².

**The prior disc's edge.** The Laplace posterior is the Gaussian restricted to the disc. Seen from
one emitter, the edge is the tangent line r_kᵀ t ≤ c_k (r_k the radial direction of its mean; the
circle departs from it by x²/2R, 3·10⁻³ LR px at x = 0.2 px on the radius-7 disc). A Gaussian
integrand times one such indicator stays closed form: with the kernel's tilt (mean m* = μ +
S A⁻¹ (p − μ), covariance V* = S − S A⁻¹ S, A = S + width·I) the integral gains the factor
Φ((c − rᵀm*) / √(rᵀV*r)), and the truncated law's normaliser is Φ((c − rᵀμ) / √(rᵀSr)). Each
emitter's own cut enters its terms; the cuts of different emitters are taken as independent (the
product of their factors), which holds where their positions' correlation is small — every
emitter pair but the closest; a frame where two cuts that matter are correlated, or more emitters
reach the edge than are cut, is left to draws (:func:`gaussian_kde_moments` says which). Checked
against draws from the restricted Gaussian (tests).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import ndtr

from bayes_smlm.forward import physics
from bayes_smlm.forward.config import Task

MAX_CUTS = 4  # emitters per frame whose disc edge enters the closed form (those nearest it)
CUT_MATTERS = 1e-3  # edge mass of an emitter whose cut changes its moments beyond their MC error
# correlation of two cuts that matter above which their independence fails: measured on 64
# `paper` frames, frames with coupling ≥ 0.44 were off by up to 15 % in summed variance, those
# below 0.3 within the draws' Monte Carlo error
MAX_COUPLING = 0.3


def _cholesky(a: jax.Array) -> list[list[jax.Array]]:
    """Lower Cholesky factor of a small (d ≤ 4) SPD matrix, unrolled into elementwise
    arithmetic: vmapped over thousands of pixels and pairs, LAPACK calls per tiny matrix cost
    more than the arithmetic (and have hung XLA's CPU runtime here)."""
    d = a.shape[-1]
    low: list[list[Any]] = [[None] * d for _ in range(d)]
    for i in range(d):
        for j in range(i + 1):
            total = a[..., i, j] - sum(low[i][k] * low[j][k] for k in range(j))
            low[i][j] = jnp.sqrt(total) if i == j else total / low[j][j]
    return low


def _solve(low: list[list[jax.Array]], v: jax.Array) -> jax.Array:
    """A⁻¹ v for A = L Lᵀ given the unrolled factor ``low``; v (d,)."""
    d = len(low)
    z: list[jax.Array] = []
    for i in range(d):
        z.append((v[i] - sum(low[i][k] * z[k] for k in range(i))) / low[i][i])
    x: list[jax.Array] = [None] * d  # type: ignore[list-item]
    for i in reversed(range(d)):
        x[i] = (z[i] - sum(low[k][i] * x[k] for k in range(i + 1, d))) / low[i][i]
    return jnp.stack(x)


def _gaussian_overlap(
    points: jax.Array,
    mean: jax.Array,
    cov: jax.Array,
    width2: float,
    cross: jax.Array,
    cut_mean: jax.Array,
    cut_var: jax.Array,
    offsets: jax.Array,
) -> jax.Array:
    """E[exp(−|points − t|²/(2 width2))] over t ~ N(mean, cov), the kernel coordinates, with the
    whole position vector restricted to the half-spaces ``w_jᵀ θ ≤ offsets[j]`` (taken as
    independent of one another; see the module docstring): (2π width2)^{d/2}
    N(points; mean, cov + width2·I) × Π_j Φ(tilted) / Φ(untilted).

    points (…, d), mean (d,), cov (d, d); per cut j of m: ``cross[j]`` = Cov(t, w_jᵀ θ) (d,),
    ``cut_mean[j]``, ``cut_var[j]`` the mean and variance of w_jᵀ θ."""
    d = mean.shape[-1]
    low = _cholesky(cov + width2 * jnp.eye(d))
    diff = points - mean
    z: list[jax.Array] = []
    quad: Any = 0.0
    log_det: Any = 0.0
    for i in range(d):  # forward substitution L z = diff
        zi = (diff[..., i] - sum(low[i][k] * z[k] for k in range(i))) / low[i][i]
        z.append(zi)
        quad = quad + zi * zi
        log_det = log_det + 2.0 * jnp.log(low[i][i])
    log_value = 0.5 * d * jnp.log(width2) - 0.5 * log_det - 0.5 * quad
    for j in range(cross.shape[0]):
        gain = _solve(low, cross[j])  # A⁻¹ Cov(t, wᵀθ)
        tilted_sd = jnp.sqrt(jnp.maximum(cut_var[j] - cross[j] @ gain, 1e-12))
        margin = offsets[j] - cut_mean[j]
        log_value = (
            log_value
            + jnp.log(ndtr((margin - diff @ gain) / tilted_sd))
            - jnp.log(ndtr(margin / jnp.sqrt(cut_var[j])))
        )
    return jnp.exp(log_value)


def disc_cuts(
    mean_hr: jax.Array, centre_hr: jax.Array, radius_hr: float
) -> tuple[jax.Array, jax.Array]:
    """Each emitter's tangent half-plane of the prior disc, HR px: unit radial directions
    (N, 2) of the means and offsets (N,), so that the disc is ≈ ``r_kᵀ t_k ≤ c_k``."""
    offset = mean_hr - centre_hr
    r = jnp.linalg.norm(offset, axis=-1, keepdims=True)
    direction = jnp.where(r > 1e-6, offset / jnp.maximum(r, 1e-6), jnp.array([1.0, 0.0]))
    return direction, jnp.sum(direction * centre_hr, -1) + radius_hr


@lru_cache(maxsize=8)
def _moments_program(task: Task, n: int) -> Any:
    u = task.optics.upsampling
    sigma = task.optics.sigma_kde
    s2 = sigma**2 + 1.0 / 12.0
    peak = float(physics.pixel_integrated_gaussian(0.0, 0.0, sigma)) ** 2
    k = 1.0 / (2 * np.pi * s2 * peak)
    h, w = task.hr_shape
    rows, cols = jnp.meshgrid(
        jnp.arange(h, dtype=jnp.float32), jnp.arange(w, dtype=jnp.float32), indexing="ij"
    )
    pixels = jnp.stack([cols, rows], -1)  # (H, W, 2) as (x, y)
    both = jnp.concatenate([pixels, pixels], -1)  # (H, W, 4)
    first, second = np.triu_indices(n, 1)
    # coordinates of each pair's 4-vector (x_a, y_a, x_b, y_b) in the 2N-vector
    pair_index = jnp.asarray(np.stack([2 * first, 2 * first + 1, 2 * second, 2 * second + 1], 1))

    centre_hr = u * jnp.asarray(task.centre, jnp.float32) + (u - 1) / 2.0
    radius_hr = u * task.prior.radius

    cuts = min(n, MAX_CUTS)

    def one(mode: jax.Array, cov: jax.Array) -> tuple[jax.Array, ...]:
        mean_hr = u * mode + (u - 1) / 2.0  # (2N,)
        cov_hr = u**2 * cov
        means = mean_hr.reshape(n, 2)
        blocks = jnp.stack([cov_hr[2 * a : 2 * a + 2, 2 * a : 2 * a + 2] for a in range(n)])
        direction, offsets = disc_cuts(means, centre_hr, radius_hr)
        cut_mean = jnp.sum(direction * means, -1)
        cut_var = jnp.einsum("ni,nij,nj->n", direction, blocks, direction)
        mass = ndtr((cut_mean - offsets) / jnp.sqrt(cut_var))  # (N,) beyond the edge
        ranked = jnp.argsort(-mass)
        kept = ranked[:cuts]  # the cuts that matter; the rest leave ≈ 1
        left_out = mass[ranked[cuts]] if n > cuts else jnp.zeros(())
        weights = jnp.zeros((cuts, n, 2)).at[jnp.arange(cuts), kept].set(direction[kept])
        cross = cov_hr @ weights.reshape(cuts, 2 * n).T  # (2N, M)
        cut_args = (cut_mean[kept], cut_var[kept], offsets[kept])
        # the cuts are taken as independent: how far two that matter are from it
        cut_cov = weights.reshape(cuts, 2 * n) @ cross  # (M, M)
        corr = cut_cov / jnp.sqrt(jnp.outer(cut_var[kept], cut_var[kept]))
        matters = mass[kept] > CUT_MATTERS
        coupling = jnp.max(
            jnp.where(
                matters[:, None] & matters[None, :] & ~jnp.eye(cuts, dtype=bool), jnp.abs(corr), 0.0
            )
        )
        overlap = jax.vmap(_gaussian_overlap, (None, 0, 0, None, 0, None, None, None))
        single_cross = cross.reshape(n, 2, cuts).transpose(0, 2, 1)  # (N, M, 2)
        mean = k * overlap(pixels, means, blocks, s2, single_cross, *cut_args).sum(0)
        total = k**2 * overlap(pixels, means, blocks, s2 / 2.0, single_cross, *cut_args).sum(0)
        if n > 1:
            pair_means = mean_hr[pair_index]  # (P, 4)
            pair_covs = cov_hr[pair_index[:, :, None], pair_index[:, None, :]]  # (P, 4, 4)
            pair_cross = cross[pair_index].transpose(0, 2, 1)  # (P, M, 4)
            total = total + 2.0 * k**2 * overlap(
                both, pair_means, pair_covs, s2, pair_cross, *cut_args
            ).sum(0)
        return mean, jnp.maximum(total - mean**2, 0.0), left_out, coupling

    return jax.jit(jax.vmap(one))


def gaussian_kde_moments(
    mode: np.ndarray, covariance: np.ndarray, task: Task
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(F, uH, uW) mean and variance of the KDE when each frame's positions are Gaussian with
    ``mode`` (F, 2N) and ``covariance`` (F, 2N, 2N), LR px, restricted to the task's prior disc
    (see the module docstring), and (F,) whether the closed form holds: no emitter beyond the
    :data:`MAX_CUTS` nearest the edge has mass ≥ :data:`CUT_MATTERS` outside it, and no two cuts
    that matter are correlated beyond :data:`MAX_COUPLING` (where they are, use draws)."""
    n = mode.shape[1] // 2
    mean, var, left_out, coupling = _moments_program(task, n)(
        jnp.asarray(mode, jnp.float32), jnp.asarray(covariance, jnp.float32)
    )
    holds = (np.asarray(left_out) < CUT_MATTERS) & (np.asarray(coupling) <= MAX_COUPLING)
    return np.asarray(mean), np.asarray(var), holds
