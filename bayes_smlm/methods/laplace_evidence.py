"""The Laplace approximation of the evidence: log p(x | n) from a frame's mode and covariance.

Z_n = ∫ π(θ) p(x | θ) dθ ≈ n! · π(θ̂) p(x | θ̂) (2π)^{P/2} |Σ|^{1/2} · M, with θ̂ the mode, Σ the
inverse observed information, π the flat prior density inside its support and M the Gaussian's
mass inside that support (per emitter along its radius of the disc; per i0 and b inside their
ranges). n! counts the posterior's copies under relabelling the emitters — exact while those
copies do not overlap, an overcount for emitters closer than a few posterior SDs, where the
Gaussian is the wrong shape anyway (``smc`` then tells the difference).
"""

from __future__ import annotations

from functools import lru_cache
from math import lgamma, log, pi
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from scipy.special import log_ndtr

from bayes_smlm.forward.config import Task
from bayes_smlm.forward.model import frame_constant, make_rate_log_likelihood
from bayes_smlm.forward.parameters import ParameterLayout
from bayes_smlm.methods.batching import map_frame_batches

EVIDENCE_BATCH = 64  # frames per compiled call of the likelihood at the modes


@lru_cache(maxsize=8)
def _log_likelihood_at(task: Task, layout: ParameterLayout, likelihood: str) -> Any:
    """Compiled ``(params (F, P), adu (F, H, W)) -> log p(adu | params)`` (F,), normalised."""
    prepare, loglik = make_rate_log_likelihood(task, likelihood=likelihood)
    omega = layout.expected_photons(task)
    constant = frame_constant(task, likelihood)

    def one(params: jax.Array, adu: jax.Array) -> jax.Array:
        return loglik(jnp.maximum(omega(params), 0.0), prepare(adu)) + constant(adu)

    return jax.jit(jax.vmap(one))


def log_prior_volume(task: Task, layout: ParameterLayout) -> float:
    """log of the flat prior's density inside its support: −n log(πR²) − [n log Δi0] − [log Δb]."""
    p, n = task.prior, layout.n_emitters
    value = -n * log(pi * p.radius**2)
    if layout.infer_intensity:
        value -= n * log(p.i0_range[1] - p.i0_range[0])
    if layout.infer_background:
        value -= log(p.background_range[1] - p.background_range[0])
    return value


def log_mass_inside(
    task: Task, layout: ParameterLayout, mode: np.ndarray, covariance: np.ndarray
) -> np.ndarray:
    """(F,) log of the Gaussian's mass inside the prior's support (radial per emitter; i0 and
    b within their ranges), each parameter block alone."""
    n = layout.n_emitters
    centre = np.asarray(task.centre)
    offset = layout.theta(mode) - centre  # (F, n, 2)
    r = np.linalg.norm(offset, axis=-1)
    direction = offset / np.maximum(r, 1e-12)[..., None]
    blocks = np.stack([covariance[:, 2 * k : 2 * k + 2, 2 * k : 2 * k + 2] for k in range(n)], 1)
    sd = np.sqrt(np.einsum("fni,fnij,fnj->fn", direction, blocks, direction))
    total = log_ndtr((task.prior.radius - r) / sd).sum(-1)
    if layout.size > 2 * n:
        lo, hi = (np.asarray(b)[2 * n :] for b in layout.bounds(task))
        sd = np.sqrt(np.diagonal(covariance, axis1=-2, axis2=-1)[:, 2 * n :])
        total = total + log_box_mass(mode[:, 2 * n :], sd, lo, hi).sum(-1)
    return total


def log_box_mass(mean: np.ndarray, sd: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """log of a normal's mass inside [lo, hi], elementwise (mean, sd, lo, hi broadcast)."""
    sd = np.maximum(sd, 1e-30)
    inside = np.exp(log_ndtr((hi - mean) / sd)) - np.exp(log_ndtr((lo - mean) / sd))
    return np.log(np.maximum(inside, 1e-300))


def laplace_log_evidence(
    task: Task,
    layout: ParameterLayout,
    mode: np.ndarray,
    covariance: np.ndarray,
    adu: np.ndarray,
    likelihood: str = "poisson",
) -> np.ndarray:
    """(F,) Laplace log p(x | n) of frames with modes (F, P) and covariances (F, P, P)."""
    # fixed batches: one compiled program whatever the number of frames
    loglik = np.asarray(
        map_frame_batches(
            _log_likelihood_at(task, layout, likelihood),
            (np.asarray(mode, np.float32), np.asarray(adu, np.float32)),
            EVIDENCE_BATCH,
        ),
        np.float64,
    )
    _, logdet = np.linalg.slogdet(np.asarray(covariance, np.float64))
    n = layout.n_emitters
    return (
        loglik
        + log_prior_volume(task, layout)
        + 0.5 * layout.size * log(2 * pi)
        + 0.5 * logdet
        + lgamma(n + 1)
        + log_mass_inside(task, layout, mode, covariance)
    )
