"""One-to-one matching of two point sets (the Hungarian algorithm), shared by label alignment of
MCMC draws, the ordering of estimates against the truth and the scoring of detections."""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment

_UNREACHABLE = 1e6  # cost of a pair farther apart than the tolerance (LR px)


def match_points(
    a: np.ndarray, b: np.ndarray, *, squared: bool = False, tolerance: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (i_a, i_b) of a one-to-one matching of points ``a`` (n, 2) to ``b`` (m, 2).

    Parameters
    ----------
    a, b : ndarray
        Positions, same units (LR px).
    squared : bool
        Minimise the summed squared distance (least squares) instead of the summed distance.
    tolerance : float, optional
        Only pairs at most this far apart may match; unmatched points are left out.

    Returns
    -------
    (ndarray, ndarray)
        Index arrays of the matched pairs, ``min(n, m)`` long without a tolerance.
    """
    a, b = np.asarray(a), np.asarray(b)
    if len(a) == 0 or len(b) == 0:
        return np.zeros(0, int), np.zeros(0, int)
    squared_distance = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
    distance = np.sqrt(squared_distance)
    cost = squared_distance if squared else distance
    if tolerance is None:
        return linear_sum_assignment(cost)
    rows, cols = linear_sum_assignment(np.where(distance <= tolerance, cost, _UNREACHABLE))
    keep = distance[rows, cols] <= tolerance
    return rows[keep], cols[keep]
