"""Entropies of posterior summaries (NumPy): per-pixel Gaussian KDE entropies and θ entropies.

All entropies are differential entropies in nats. The per-pixel map treats each KDE pixel's
marginal as Gaussian with the method's variance, h = ½ log(2πe σ²): a summary of spread on a log
scale, not the entropy of the (skewed, bounded) true marginal. θ entropies use either the
Gaussian of the draws' covariance (an upper bound for a given covariance) or the
Kozachenko–Leonenko k-nearest-neighbour estimator, which needs no shape assumption.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree
from scipy.special import digamma, gammaln

VAR_FLOOR = 1e-10  # KDE units²: below this a pixel is treated as certain (h at the floor)


def gaussian_entropy_map(var: np.ndarray, floor: float = VAR_FLOOR) -> np.ndarray:
    """Per-pixel Gaussian entropy ½ log(2πe σ²) of variance maps (nats), σ² floored at ``floor``."""
    return 0.5 * np.log(2.0 * np.pi * np.e * np.maximum(np.asarray(var, np.float64), floor))


def total_gaussian_entropy(var: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(F,) sum of :func:`gaussian_entropy_map` over the pixels of ``mask`` (F, H, W), per frame."""
    return np.where(mask, gaussian_entropy_map(var), 0.0).reshape(len(var), -1).sum(axis=1)


def gaussian_entropy(cov: np.ndarray) -> np.ndarray:
    """Entropy ½ log det(2πe Σ) of Gaussians with covariances ``cov`` (..., D, D), nats."""
    cov = np.asarray(cov, np.float64)
    d = cov.shape[-1]
    sign, logdet = np.linalg.slogdet(cov)
    return np.where(sign > 0, 0.5 * (d * np.log(2.0 * np.pi * np.e) + logdet), -np.inf)


def draws_covariance(draws: np.ndarray) -> np.ndarray:
    """(F, D, D) sample covariance of draws (F, S, D)."""
    centred = draws - draws.mean(axis=1, keepdims=True)
    return np.einsum("fsi,fsj->fij", centred, centred) / (draws.shape[1] - 1)


def knn_entropy(draws: np.ndarray, k: int = 4) -> np.ndarray:
    """Kozachenko–Leonenko entropy estimate (nats) per frame from draws (F, S, D).

    H ≈ ψ(S) − ψ(k) + log V_D + (D/S) Σ log ε_i, with ε_i the Euclidean distance from draw i to
    its k-th nearest neighbour and V_D the volume of the unit D-ball. Consistent for continuous
    densities; exactly repeated draws (e.g. rejected MH proposals) are jittered apart first by a
    tiny fixed-seed perturbation, since their zero distances carry no information.
    """
    draws = np.asarray(draws, np.float64)
    f, s, d = draws.shape
    if s <= k:
        raise ValueError(f"knn_entropy needs more than k = {k} draws (got {s})")
    log_unit_ball = 0.5 * d * np.log(np.pi) - gammaln(0.5 * d + 1.0)
    rng = np.random.default_rng(0)
    out = np.empty(f)
    for i in range(f):
        x = draws[i]
        scale = np.maximum(x.std(axis=0), 1e-12)
        x = x + rng.normal(0.0, 1e-9, x.shape) * scale
        dist, _ = cKDTree(x).query(x, k=k + 1)
        eps = np.maximum(dist[:, k], 1e-300)
        out[i] = digamma(s) - digamma(k) + log_unit_ball + d * np.mean(np.log(eps))
    return out
