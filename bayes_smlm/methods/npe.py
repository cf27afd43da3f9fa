"""``npe``: neural posterior estimation — an amortized normalizing flow q(θ | x) trained with
``sbi`` on the simulator (:mod:`bayes_smlm.surrogates.npe`), for one emitter per frame.

Draws are the flow's, restricted to the prior disc by rejection (as sbi does for leakage), in the
registry's (chain, draw, frame, emitter, axis) layout, so the KDE push-forward, SBC and coverage
apply unchanged. A frame is flagged when under :data:`MIN_MASS_INSIDE` of the flow's mass lies
on the prior's support: the flow is then far from anything it was trained on.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from bayes_smlm.forward.config import Task, check_int
from bayes_smlm.forward.frames import validate_frames
from bayes_smlm.methods.pushforward import kde_moments
from bayes_smlm.methods.registry import register_method, reject_unknown_options
from bayes_smlm.methods.result import PosteriorResult

MIN_MASS_INSIDE = 0.5


@register_method("npe")
def npe_posterior(task: Task, adu: np.ndarray, *, seed: int = 0, chains: int = 4,
                  draws: int = 1000, progress: bool = False,
                  checkpoint: str | Path | None = None,
                  theta_true: np.ndarray | None = None, **unknown: Any) -> PosteriorResult:
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
    estimator, config = load_npe(checkpoint, task)
    started = time.perf_counter()
    points, inside = npe_position_draws(estimator, config, task, adu, chains * draws, seed)
    f = len(adu)
    kde_mean, kde_var = kde_moments(points[:, :, None], task)
    theta = np.moveaxis(points.reshape(f, chains, draws, 1, 2), 0, 2)
    return PosteriorResult(
        method="npe", task=task, adu=adu, kde_mean=kde_mean, kde_var=kde_var, theta=theta,
        settings={"chains": chains, "draws": draws, "seed": seed,
                  "checkpoint": str(checkpoint or "shipped"),
                  "flow": config["architecture"]["flow"]},
        seconds=time.perf_counter() - started, theta_true=theta_true,
        extra={"mass_inside": inside, "flagged": inside < MIN_MASS_INSIDE})
