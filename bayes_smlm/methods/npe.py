"""``npe``: neural posterior estimation — an amortized normalizing flow q(θ | x) trained with
``sbi`` on the simulator (:mod:`bayes_smlm.surrogates.npe`), for one emitter per frame.

Draws are the flow's, restricted to the prior disc by rejection (as sbi does for leakage), in the
registry's (chain, draw, frame, emitter, axis) layout, so the KDE push-forward, SBC and coverage
apply unchanged. A frame is flagged when under :data:`MIN_MASS_INSIDE` of the flow's mass lies
on the prior's support: the flow is then far from anything it was trained on. An amortised flow
is least reliable at the prior's boundary (an emitter at r = 6.93 of 7 px: mean 2.4 SDs from the
exact one, unflagged): frames whose mean lies within :data:`EDGE_SDS` SDs of the disc's edge are
checked against the ``laplace`` posterior restricted to the disc (as calibrated as NUTS there,
and milliseconds a frame) and flagged where the two means differ by more than
:data:`EDGE_SHIFT` SDs.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from bayes_smlm.forward.checks import check_int
from bayes_smlm.forward.config import Task
from bayes_smlm.forward.frames import validate_frames
from bayes_smlm.methods.pushforward import kde_moments
from bayes_smlm.methods.registry import register_method, reject_unknown_options
from bayes_smlm.methods.result import PosteriorResult

MIN_MASS_INSIDE = 0.5
EDGE_SDS = 8.0  # frames whose mean lies this many SDs or fewer from the disc's edge are checked
EDGE_SHIFT = 0.5  # SDs between the flow's mean and Laplace's beyond which a frame is flagged
EDGE_DRAWS = 4000  # Laplace draws per checked frame: the mean's error ≈ SD/60


def edge_disagreement(task: Task, adu: np.ndarray, points: np.ndarray, seed: int) -> np.ndarray:
    """(F,) True for frames near the prior disc's edge whose flow mean differs from the
    disc-restricted Laplace posterior's by more than :data:`EDGE_SHIFT` flow SDs on either axis.
    ``points``: (F, S, 2) flow draws, LR px."""
    from bayes_smlm.methods.laplace import laplace_fit
    from bayes_smlm.methods.laplace_gaussian import gaussian_theta_draws

    mean, sd = points.mean(axis=1), points.std(axis=1)
    depth = task.prior.radius - np.linalg.norm(mean - np.asarray(task.centre), axis=-1)
    near = depth < EDGE_SDS * sd.max(axis=-1)
    flagged = np.zeros(len(points), bool)
    if near.any():  # the Gaussian's draws restricted to the disc; no KDE of them is needed
        fit = laplace_fit(task, adu[near])
        draws = gaussian_theta_draws(fit, task, chains=1, draws=EDGE_DRAWS, seed=seed)
        exact_mean = draws[0, :, :, 0].mean(axis=0)  # (F', 2)
        shift = np.abs(mean[near] - exact_mean) / sd[near]
        flagged[near] = (shift > EDGE_SHIFT).any(axis=-1)
    return flagged


@register_method(
    "npe",
    emitter_count="trained",
    brightness="trained",
    flags=(
        "under half the flow's mass on the prior's support, or flow and likelihood "
        "disagree at the disc's edge"
    ),
)
def npe_posterior(
    task: Task,
    adu: np.ndarray,
    *,
    seed: int = 0,
    chains: int = 4,
    draws: int = 1000,
    progress: bool = False,
    checkpoint: str | Path | None = None,
    theta_true: np.ndarray | None = None,
    **unknown: Any,
) -> PosteriorResult:
    """chains × draws i.i.d. position draws per frame from the NPE flow, pushed through the KDE.

    Parameters
    ----------
    checkpoint : path or None
        An NPE checkpoint (``bayes-smlm train-npe``; default: the shipped one of the task).
    seed : int
        Seeds torch's generator for the flow's draws.
    chains, draws
        Shape the i.i.d. draws (chains only split them; ``extra["flagged"]`` replaces R-hat).
    """
    reject_unknown_options("npe", unknown)
    from bayes_smlm.surrogates.npe.estimator import load_npe, npe_position_draws

    chains, draws = check_int("chains", chains), check_int("draws", draws)
    adu = validate_frames(task, adu)
    started = time.perf_counter()  # checkpoint loading in, as every method's (result.seconds)
    estimator, config = load_npe(checkpoint, task)
    points, inside = npe_position_draws(estimator, config, task, adu, chains * draws, seed)
    at_edge = edge_disagreement(task, adu, points, seed)
    f = len(adu)
    kde_mean, kde_var = kde_moments(points[:, :, None], task)
    theta = np.moveaxis(points.reshape(f, chains, draws, 1, 2), 0, 2)
    return PosteriorResult(
        method="npe",
        task=task,
        adu=adu,
        kde_mean=kde_mean,
        kde_var=kde_var,
        theta=theta,
        settings={
            "chains": chains,
            "draws": draws,
            "seed": seed,
            "checkpoint": str(checkpoint or "shipped"),
            "flow": config["architecture"]["flow"],
        },
        seconds=time.perf_counter() - started,
        theta_true=theta_true,
        extra={
            "mass_inside": inside,
            "edge_disagreement": at_edge,
            "flagged": (inside < MIN_MASS_INSIDE) | at_edge,
        },
    )
