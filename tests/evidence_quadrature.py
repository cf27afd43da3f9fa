"""Brute-force evidence by quadrature, written from the formulas alone (NumPy/SciPy, none of the
package's likelihood code): the oracle that evidence estimators are tested against.

For n ≤ 2 emitters on a small disc, Z_n = ∫ π(θ) p(x | θ) dθ is a weighted sum of the
likelihood over a fine square lattice of positions (each point weighted by the prior mass of its
cell, cells cut by the disc's edge included by their share), each emitter independently: a 4-D
sum for two emitters. With posterior SDs of ≈ 0.2 px, a 0.1 px lattice is within ≈ 0.01 nats
of a 0.05 px one.
"""

from __future__ import annotations

import numpy as np
from scipy.special import erf, gammaln, logsumexp


def pixel_integrated(centres: np.ndarray, mean: np.ndarray, sigma: float) -> np.ndarray:
    """½[erf((c + ½ − t)/(√2 σ)) − erf((c − ½ − t)/(√2 σ))] (eq. 2), broadcast."""
    s = np.sqrt(2.0) * sigma
    return 0.5 * (erf((centres + 0.5 - mean) / s) - erf((centres - 0.5 - mean) / s))


def lattice(
    centre: tuple[float, float], radius: float, spacing: float, subcells: int = 16
) -> tuple[np.ndarray, np.ndarray]:
    """(K, 2) lattice points (x, y) whose cells touch the disc, and (K,) log prior weights: the
    share of the disc's area inside each point's cell (cells cut by the edge measured on a
    ``subcells``² sub-lattice), so the sum stays accurate where the likelihood is not small
    at the edge."""
    k = int(np.ceil(radius / spacing)) + 1
    offsets = np.arange(-k, k + 1) * spacing
    x, y = (a.ravel() for a in np.meshgrid(offsets, offsets))
    sub = (np.arange(subcells) + 0.5) / subcells - 0.5
    sx, sy = (a.ravel() * spacing for a in np.meshgrid(sub, sub))
    inside = ((x[:, None] + sx) ** 2 + (y[:, None] + sy) ** 2 < radius**2).mean(1)
    keep = inside > 0
    weight = inside[keep] * spacing**2 / (np.pi * radius**2)
    return np.stack([x[keep] + centre[0], y[keep] + centre[1]], -1), np.log(weight)


def log_evidence(
    adu: np.ndarray,
    *,
    n: int,
    i0: float,
    background: float,
    sigma: float,
    offset: float,
    gain: float,
    readout_var: float,
    centre: tuple[float, float],
    radius: float,
    spacing: float = 0.05,
) -> float:
    """log p(adu) under the Poisson approximation of the camera, n ∈ {0, 1, 2} emitters of i0
    photons uniform on the disc, background photons/px; the density of the ADU frame.

    Counts ``n = (ADU − o)/g + w²/g²`` are continuous and may dip below 0 where readout noise
    dominates; as in the package's camera law, the normaliser is ``lgamma(max(n, 0) + 1)``."""
    h, w = adu.shape
    pedestal = readout_var / gain**2
    counts = (adu - offset) / gain + pedestal
    const = -np.sum(gammaln(np.maximum(counts, 0.0) + 1.0)) - h * w * np.log(gain)

    def loglik(omega: np.ndarray) -> np.ndarray:  # (..., H, W) -> (...)
        lam = omega + pedestal
        return np.sum(counts * np.log(lam) - lam, axis=(-2, -1)) + const

    if n == 0:
        return float(loglik(np.full((h, w), background, float)))
    points, log_w = lattice(centre, radius, spacing)
    ex = pixel_integrated(np.arange(w)[None, :], points[:, :1], sigma)  # (K, W)
    ey = pixel_integrated(np.arange(h)[None, :], points[:, 1:], sigma)  # (K, H)
    images = i0 * ey[:, :, None] * ex[:, None, :]  # (K, H, W)
    if n == 1:
        return float(logsumexp(loglik(images + background) + log_w))
    if n != 2:
        raise ValueError("quadrature is written for n <= 2")
    per_first = [
        logsumexp(loglik(images[i] + images + background) + log_w) for i in range(len(points))
    ]
    return float(logsumexp(np.asarray(per_first) + log_w))


def log_evidence_extrapolated(adu: np.ndarray, *, spacing: float = 0.1, **kwargs) -> float:
    """:func:`log_evidence` with Richardson's extrapolation from lattices of ``spacing`` and
    twice it (the lattice sum converges as spacing² here): ≈ a 0.05 px lattice's accuracy at a
    quarter of its cost for two emitters."""
    fine = log_evidence(adu, spacing=spacing, **kwargs)
    coarse = log_evidence(adu, spacing=2 * spacing, **kwargs)
    return fine + (fine - coarse) / 3.0
