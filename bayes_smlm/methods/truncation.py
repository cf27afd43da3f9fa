"""Restricting an approximate posterior's draws to the prior disc, by rejection.

The exact posterior is zero outside the prior's support; an approximation with unbounded support
(the Laplace Gaussian, a normalizing flow) is truncated there the same way — its draws outside
are redrawn — as sbi does for a flow's "leakage".
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from bayes_smlm.forward.config import Task
from bayes_smlm.forward.distributions import project_into_disc

MIN_ACCEPTANCE = 0.02  # a redraw round asks for at most 1/MIN_ACCEPTANCE draws per one missing


def outside_disc(points: np.ndarray, task: Task) -> np.ndarray:
    """(F, S) True where any emitter of a draw (F, S, N, 2) lies outside the prior disc."""
    centre, radius = np.asarray(task.centre), task.prior.radius
    return (np.sum((points - centre) ** 2, axis=-1) > radius**2).any(axis=-1)


def draws_in_disc(
    draw: Callable[[np.ndarray, int], np.ndarray],
    n_frames: int,
    n_draws: int,
    task: Task,
    max_rounds: int = 100,
) -> tuple[np.ndarray, np.ndarray]:
    """Draws of ``draw`` restricted to the prior disc.

    Parameters
    ----------
    draw : callable
        ``draw(frames, n)`` returns n fresh draws (len(frames), n, N, 2) for each frame index in
        ``frames``, LR px.
    n_frames, n_draws : int
        F frames, S draws each.
    task : Task
    max_rounds : int
        Redraw rounds. Each round redraws only for the frames that still miss draws, about as
        many as their acceptance rate says they need. Draws still outside afterwards (a frame
        with almost all its mass outside, which the method should flag) are pulled onto the
        disc's edge.

    Returns
    -------
    points : (F, S, N, 2) ndarray
    inside : (F,) ndarray
        Fraction of the first round's draws that were inside the disc (the approximation's mass
        on the prior's support).
    """
    points = np.array(draw(np.arange(n_frames), n_draws))
    redo = outside_disc(points, task)
    inside = 1.0 - redo.mean(axis=1)
    for _ in range(max_rounds):
        rows = np.flatnonzero(redo.any(axis=1))
        if not rows.size:
            break
        missing = redo[rows].sum(axis=1)
        wanted = np.ceil(1.2 * missing / np.maximum(inside[rows], MIN_ACCEPTANCE))
        # one call per power-of-two size: a frame with little mass inside does not make every
        # other frame of the round draw as many
        sizes = np.minimum(2 ** np.ceil(np.log2(np.maximum(wanted, 1))), 10 * n_draws)
        for size in np.unique(sizes):
            group = rows[sizes == size]
            fresh = draw(group, int(size))
            accepted = ~outside_disc(fresh, task)
            for row, new, ok in zip(group, fresh, accepted):
                slots = np.flatnonzero(redo[row])[: int(ok.sum())]
                points[row, slots] = new[ok][: len(slots)]
                redo[row, slots] = False
    points = np.asarray(project_into_disc(points, np.asarray(task.centre), task.prior.radius))
    return points, inside
