"""Label switching: align emitter labels across draws (the KDE is permutation invariant, θ
summaries are not)."""

from __future__ import annotations

import numpy as np

from bayes_smlm.localization.matching import match_points


def _permute_to(draws: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Permute the emitters of each draw (S, N, 2) to best match ``reference`` (N, 2)."""
    out = np.empty_like(draws)
    for s, draw in enumerate(draws):
        rows, cols = match_points(draw, reference, squared=True)
        out[s, cols] = draw[rows]
    return out


def align_labels(theta: np.ndarray, iterations: int = 2) -> np.ndarray:
    """Relabel draws (C, D, F, N, 2) frame by frame with the Hungarian algorithm.

    Each draw's emitters are matched one-to-one to a reference configuration (first: the first
    chain's first retained draw, then the mean of the aligned draws), minimising squared
    distance; two passes reach a fixed point in practice.
    """
    c, d, f, n, _ = theta.shape
    out = theta.copy()
    for frame in range(f):
        draws = theta[:, :, frame].reshape(c * d, n, 2)
        reference = draws[0]
        for _ in range(iterations):
            draws = _permute_to(draws, reference)
            reference = draws.mean(0)
        out[:, :, frame] = draws.reshape(c, d, n, 2)
    return out
