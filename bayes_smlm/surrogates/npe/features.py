"""What the NPE flow conditions on: a window of the frame around its brightest emitter.

One emitter's posterior is translation equivariant: moved by a whole pixel, the frame moves with
it and so does the posterior (up to the prior disc's edge). The flow therefore models the offset
of the emitter from an anchor a(x) — the data-driven start that MCMC and ``laplace`` use
(PSF-matched filter, then a 3 × 3 centroid) — given the K × K window of the frame centred on the
anchor's pixel p = round(a), the anchor's place within that pixel (a − p) and p's place in the
prior disc (so the flow can learn where the prior truncates the posterior). The offset is
measured in units of s, the position √CRLB at the disc centre (:mod:`.network`), so the posterior
the flow must represent has a spread near 1 and a centre within a few units of 0, where the
flow's splines act (outside its bounds a spline flow is the identity).

q(θ | x) = q_u((θ − a(x)) / s | window, a) / s² is a conditional density of θ, so training q_u by
maximum likelihood on simulated (θ, x) is NPE unchanged. It ignores the pixels outside the window,
which for σ_PSF ≈ 1 px and K = 7 hold under 10⁻⁴ of the emitter's photons.

Pure JAX, jitted and vmapped over frames; nothing here depends on torch.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

import jax
import jax.numpy as jnp
import numpy as np

from bayes_smlm.forward import physics
from bayes_smlm.forward.config import Task
from bayes_smlm.methods.initialization import detect_initial_positions

POSITION_FEATURES = 4  # the anchor pixel's place in the disc (x, y), the anchor's within its pixel


def feature_length(crop: int) -> int:
    """Length of one frame's condition vector: the K² window, then the anchor's place."""
    return crop * crop + POSITION_FEATURES


def _frame_features(task: Task, crop: int, adu: jax.Array) -> tuple[jax.Array, jax.Array]:
    """One frame (H, W) in ADU → (condition vector, anchor (x, y) in LR px)."""
    anchor = detect_initial_positions(task, adu)[0]
    pixel = jnp.round(anchor)
    photons = physics.adu_to_photons(adu, physics.camera_arrays(task))
    half = crop // 2
    padded = jnp.pad(photons, half)  # outside the frame: no photons
    start = (pixel[1].astype(jnp.int32), pixel[0].astype(jnp.int32))  # (row, column)
    window = jax.lax.dynamic_slice(padded, start, (crop, crop))
    # Anscombe transform: Poisson counts of any brightness on a common, variance-stable scale
    stabilised = 2.0 * jnp.sqrt(jnp.maximum(window, 0.0) + 0.375)
    place = (pixel - jnp.asarray(task.centre)) / task.prior.radius
    return jnp.concatenate([stabilised.ravel(), place, anchor - pixel]), anchor


@lru_cache(maxsize=16)
def _features_fn(task: Task, crop: int) -> Callable[[jax.Array], tuple[jax.Array, jax.Array]]:
    return jax.jit(jax.vmap(lambda adu: _frame_features(task, crop, adu)))


def frame_features(
    task: Task, adu: np.ndarray, crop: int, chunk: int = 8192
) -> tuple[np.ndarray, np.ndarray]:
    """Condition vectors and anchors of frames.

    Parameters
    ----------
    task : Task
        One emitter per frame.
    adu : (F, H, W) array
        Frames, ADU (already validated).
    crop : int
        Odd window side K, LR px.
    chunk : int
        Frames per compiled call.

    Returns
    -------
    features : (F, K² + 4) float32
        The Anscombe-transformed window (row-major) centred on the anchor's pixel p, then p's
        offset from the disc centre in disc radii, then the anchor's offset from p (px).
    anchors : (F, 2) float32
        Anchors a (x, y), LR px: θ = a + s·u.
    """
    fn = _features_fn(task, int(crop))
    parts = [fn(jnp.asarray(adu[i : i + chunk], jnp.float32)) for i in range(0, len(adu), chunk)]
    features = np.concatenate([np.asarray(p[0]) for p in parts]).astype(np.float32)
    anchors = np.concatenate([np.asarray(p[1]) for p in parts]).astype(np.float32)
    return features, anchors
