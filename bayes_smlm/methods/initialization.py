"""Data-driven starting points for MCMC chains (docs/conventions.md §4: a uniform start can stick in a
false mode at the frame edge where every chain stays with R-hat 1.00).

Greedy peeling: find the brightest pixel of the PSF-smoothed photon image, refine it by a local
centroid, subtract that emitter's expected image, repeat N times. Pure JAX, vmappable over frames.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from bayes_smlm.forward import physics
from bayes_smlm.forward.config import Task
from bayes_smlm.forward.distributions import project_into_disc


def project_start_into_disc(theta: jax.Array, centre: jax.Array, radius: float) -> jax.Array:
    """Pull points outside the disc back to 0.98 of its radius (starting points must be in the
    support)."""
    return project_into_disc(theta, centre, 0.98 * radius)


def detect_initial_positions(task: Task, adu: jax.Array) -> jax.Array:
    """(N, 2) starting positions (x, y) in LR px from one frame ``adu`` (H, W) in ADU."""
    camera, scene = physics.camera_arrays(task), physics.scene_arrays(task)
    sigma, shape = task.optics.sigma_psf, task.shape
    photons = (adu - camera.offset) / camera.gain - scene.background
    height, width = shape
    rows, cols = jnp.arange(height, dtype=jnp.float32), jnp.arange(width, dtype=jnp.float32)
    # separable PSF-matched filter
    kx = physics.pixel_integrated_gaussian(cols[:, None], cols[None, :], sigma)
    ky = physics.pixel_integrated_gaussian(rows[:, None], rows[None, :], sigma)
    centre = jnp.asarray(task.centre)
    inside = (
        jnp.sum((jnp.stack(jnp.meshgrid(cols, rows), -1) - centre) ** 2, -1)
        <= (task.prior.radius + 0.5) ** 2
    )

    def peel(residual: jax.Array, _: None) -> tuple[jax.Array, jax.Array]:
        score = ky @ residual @ kx.T
        flat = jnp.argmax(jnp.where(inside, score, -jnp.inf))
        r0, c0 = flat // width, flat % width
        # 3x3 centroid of the positive residual around the peak
        dr = jnp.arange(-1, 2)
        rr = jnp.clip(r0 + dr, 0, height - 1)
        cc = jnp.clip(c0 + dr, 0, width - 1)
        patch = jnp.maximum(residual[rr][:, cc], 0.0) + 1e-6
        y = jnp.sum(patch.sum(1) * rr) / patch.sum()
        x = jnp.sum(patch.sum(0) * cc) / patch.sum()
        pos = project_start_into_disc(jnp.stack([x, y]), centre, task.prior.radius)
        residual = residual - physics.emitter_image(pos[None], scene.i0, sigma, shape)
        return residual, pos

    _, positions = jax.lax.scan(peel, photons, None, length=task.prior.n_emitters)
    return positions


def chain_starts(
    key: jax.Array, task: Task, adu: jax.Array, chains: int, jitter: float = 0.1
) -> jax.Array:
    """(chains, N, 2) dispersed starts: the detections plus N(0, jitter²) px, kept in the disc."""
    base = detect_initial_positions(task, adu)
    noise = jitter * jax.random.normal(key, (chains,) + base.shape)
    return project_start_into_disc(base + noise, jnp.asarray(task.centre), task.prior.radius)
