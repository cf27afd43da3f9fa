"""Does the model explain the frame at all? A Pearson χ² test of a frame at its posterior.

A posterior is only as good as its likelihood: a saturated frame, a frame of another camera or a
spot the PSF cannot make still gets a confident posterior (the grid gave a saturated frame an SD
of 0.036 px). Under the model the counts ``n = (ADU − o)/g + w²/g²`` of a frame have mean and
variance ``ω = ω(θ) + w²/g²`` per pixel, so ``χ² = Σ (n − ω)²/ω`` has mean ≈ H·W and, for
Poisson counts, variance ``Σ (2 + 1/ω)``. A frame whose χ² at the best of a few posterior draws
lies more than :data:`MISFIT_SDS` SDs above its mean is one the model does not explain.
"""

from __future__ import annotations

from functools import lru_cache

import jax
import jax.numpy as jnp
import numpy as np

from bayes_smlm.forward import physics
from bayes_smlm.forward.config import Task

MISFIT_SDS = 6.0  # a correct frame passes with near certainty; a wrong one is far beyond
DRAWS_TRIED = 16  # posterior draws per frame at which χ² is evaluated (the smallest counts)


def frame_chi2(task: Task, adu: np.ndarray, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(F,) smallest Pearson χ² over the draws ``theta`` (F, S, N, 2) of each frame, and (F,)
    its SD under the model, for the task's fixed brightness and background."""
    value, sd = _chi2_program(task)(jnp.asarray(adu, jnp.float32), jnp.asarray(theta, jnp.float32))
    return np.asarray(value), np.asarray(sd)


@lru_cache(maxsize=8)
def _chi2_program(task: Task):
    """The compiled χ² of :func:`frame_chi2` for one task (compiled once, not per call)."""
    camera = physics.camera_arrays(task)
    scene = physics.scene_arrays(task)
    pedestal = physics.readout_photon_var(camera)

    def chi2(frame_adu, draws):
        counts = physics.adu_to_photons(frame_adu, camera)  # (H, W)

        def at(theta_one):
            omega = (
                physics.expected_photons(
                    theta_one, scene.i0, scene.background, task.optics.sigma_psf, task.shape
                )
                + pedestal
            )
            return jnp.sum((counts - omega) ** 2 / omega), jnp.sum(2.0 + 1.0 / omega)

        values, variances = jax.vmap(at)(draws)
        best = jnp.argmin(values)
        return values[best], jnp.sqrt(variances[best])

    return jax.jit(jax.vmap(chi2))


def misfit_frames(task: Task, adu: np.ndarray, draws: np.ndarray) -> np.ndarray:
    """(F,) True where the frame's χ² at its best draw exceeds ``H·W + 6 SD``.

    Parameters
    ----------
    task : Task
        With fixed brightness (the ``i0`` every emitter has); a task that draws brightness needs
        the drawn values, which this test does not have: nothing is flagged there.
    adu : (F, H, W) ADU
    draws : (F, S, N, 2)
        Posterior draws of positions, LR px; up to :data:`DRAWS_TRIED` evenly spaced are used.
    """
    if task.prior.brightness != "fixed":
        return np.zeros(len(adu), bool)
    pick = np.unique(np.linspace(0, draws.shape[1] - 1, DRAWS_TRIED).astype(int))
    value, sd = frame_chi2(task, adu, draws[:, pick])
    return value > task.height * task.width + MISFIT_SDS * sd
