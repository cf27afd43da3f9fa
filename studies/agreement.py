"""Shared by the method studies (not a study itself): a method's position posterior against the
exact ``grid`` posterior on the same isolated frames."""

from __future__ import annotations

from typing import Any

import numpy as np

from bayes_smlm.methods import get_method
from bayes_smlm.methods.reference import cached_reference

CHAINS, DRAWS = 4, 1000


def agreement_with_grid(task, frames, seed: int, method: str, **options: Any) -> dict:
    """Posterior SD and mean of ``method`` (4 × 1000 draws per frame) against the exact ``grid``.

    Returns the median and 5–95 % range of SD / grid SD per axis, the fraction of frames within
    5 % and within 15 % of the grid on both axes, the largest |mean − grid mean| / grid SD, the
    flagged frames of both, and the method's s/frame (4000 draws and the KDE push-forward,
    compilation or loading included).
    """
    grid = cached_reference(task, frames.adu, (seed, len(frames.adu)), chains=CHAINS, draws=DRAWS)
    result = get_method(method)(task, frames.adu, chains=CHAINS, draws=DRAWS, seed=seed, **options)
    draws = result.theta_flat()[:, :, 0]
    grid_sd = np.sqrt(np.diagonal(grid.extra["theta_cov"], axis1=-2, axis2=-1))
    ratio = draws.std(axis=1) / grid_sd
    z = (draws.mean(axis=1) - grid.extra["theta_mean"]) / grid_sd
    return {
        "frames": len(ratio),
        "sd_ratio_median": np.median(ratio, 0).tolist(),
        "sd_ratio_p5": np.percentile(ratio, 5, 0).tolist(),
        "sd_ratio_p95": np.percentile(ratio, 95, 0).tolist(),
        "frames_sd_within_5pct": float(np.mean(np.all(np.abs(ratio - 1) <= 0.05, -1))),
        "frames_sd_within_15pct": float(np.mean(np.all(np.abs(ratio - 1) <= 0.15, -1))),
        "mean_offset_sd_median": float(np.median(np.abs(z))),
        "mean_offset_sd_max": float(np.abs(z).max()),
        "flagged": int(result.flagged.sum()),
        "grid_flagged": int(grid.flagged.sum()),
        "seconds_per_frame": result.seconds / result.n_frames,
    }
