"""Restricting an approximate posterior's draws to the prior disc, by rejection.

The exact posterior is zero outside the prior's support; an approximation with unbounded support
(the Laplace Gaussian, a normalizing flow) is truncated there the same way — its draws outside
are redrawn — as sbi does for a flow's "leakage".
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from bayes_smlm.forward.config import Task
from bayes_smlm.forward.distributions import project_into_disc


def outside_disc(points: np.ndarray, task: Task) -> np.ndarray:
    """(F, S) True where any emitter of a draw (F, S, N, 2) lies outside the prior disc."""
    centre, radius = np.asarray(task.centre), task.prior.radius
    return (np.sum((points - centre) ** 2, axis=-1) > radius**2).any(axis=-1)


def draws_in_disc(draw: Callable[[tuple[int, int]], np.ndarray], size: tuple[int, int],
                  task: Task, max_rounds: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """Draws of ``draw`` restricted to the prior disc.

    Parameters
    ----------
    draw : callable
        ``draw((F, S))`` returns S fresh draws (F, S, N, 2) per frame, LR px.
    size : (F, S)
    task : Task
    max_rounds : int
        Redraws of the rejected draws. Those still outside afterwards (a frame with almost all
        its mass outside, which the method should flag) are pulled onto the disc's edge.

    Returns
    -------
    points : (F, S, N, 2) ndarray
    inside : (F,) ndarray
        Fraction of the first round's draws that were inside the disc (the approximation's mass
        on the prior's support).
    """
    points = np.array(draw(size))
    redo = outside_disc(points, task)
    inside = 1.0 - redo.mean(axis=1)
    for _ in range(max_rounds):
        if not redo.any():
            break
        points[redo] = draw(size)[redo]
        redo = outside_disc(points, task)
    points = np.asarray(project_into_disc(points, np.asarray(task.centre), task.prior.radius))
    return points, inside
