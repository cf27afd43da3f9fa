"""Is a sampler exact? Its θ moments against the ``grid`` ground truth, frame by frame.

The bar every exact method in the registry meets on one-emitter frames: each posterior mean
within 4 Monte Carlo standard errors of the grid's, each posterior SD within 5 % of the grid's
(or within 4 standard errors of a sample SD, ≈ SD/√(2 ESS), where the ESS is too small for 5 %).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bayes_smlm.methods.result import PosteriorResult

MEAN_MCSE_MAX = 4.0  # |mean − grid mean| / MCSE
SD_TOLERANCE = 0.05  # |SD / grid SD − 1|


@dataclass(frozen=True)
class GridAgreement:
    """Per frame and axis (F, 2): ``z`` = |mean − grid mean| / MCSE, ``sd_ratio`` = SD / grid
    SD, ``sd_tolerance`` = the larger of 5 % and 4 SE of a sample SD; ``rhat``, ``ess``."""

    z: np.ndarray
    sd_ratio: np.ndarray
    sd_tolerance: np.ndarray
    rhat: np.ndarray
    ess: np.ndarray

    @property
    def frame_agrees(self) -> np.ndarray:
        """(F,) both axes' mean and SD within the bar."""
        return np.all((self.z < MEAN_MCSE_MAX)
                      & (np.abs(self.sd_ratio - 1) < self.sd_tolerance), axis=1)


def grid_agreement(result: PosteriorResult, grid: PosteriorResult) -> GridAgreement:
    """Moments of ``result``'s draws (emitter 0) against ``grid``'s on the same frames."""
    diag = result.diagnostics
    if diag is None:
        raise ValueError(f"{result.method} has no MCMC diagnostics (needs ≥ 2 chains of draws)")
    draws = result.theta_flat()[:, :, 0]                                   # (F, S, 2)
    grid_mean, cov = grid.extra["theta_mean"], grid.extra["theta_cov"]   # (F, 2), (F, 2, 2)
    grid_sd = np.sqrt(np.stack([cov[:, 0, 0], cov[:, 1, 1]], -1))
    ess = np.asarray(diag.ess_bulk)[:, 0]
    return GridAgreement(z=np.abs(draws.mean(1) - grid_mean) / np.asarray(diag.mcse_mean)[:, 0],
                         sd_ratio=draws.std(1) / grid_sd,
                         sd_tolerance=np.maximum(SD_TOLERANCE, 4 / np.sqrt(2 * ess)),
                         rhat=np.asarray(diag.rhat)[:, 0], ess=ess)
