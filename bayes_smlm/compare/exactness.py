"""Is a sampler exact? Its θ moments against the ``grid`` ground truth, frame by frame.

The bar every exact method in the registry meets on one-emitter frames: each posterior mean
within 4 Monte Carlo standard errors of the grid's, each posterior SD within 5 % of the grid's
(or within 4 standard errors of the sample SD, where the draws are too few to resolve 5 %).

The SD's standard error comes from the effective sample size of the centred squares, not of the
draws: HMC's draws are often antithetic in the mean (bulk ESS above the number of draws) while
their squares are positively autocorrelated (ESS 2–3 × smaller), so an error taken from the ESS
of the mean — as arviz-stats 0.8's ``mcse(method="sd")`` does — is too small by √2–√3.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from arviz_stats.base import array_stats

from bayes_smlm.methods.result import PosteriorResult

MEAN_MCSE_MAX = 4.0  # |mean − grid mean| / MCSE
SD_TOLERANCE = 0.05  # |SD / grid SD − 1|
SD_SE_MAX = 4.0  # ... or this many standard errors of the sample SD, if larger


@dataclass(frozen=True)
class GridAgreement:
    """Per frame and axis (F, 2): ``z`` = |mean − grid mean| / MCSE, ``sd_ratio`` = SD / grid
    SD, ``sd_tolerance`` = the larger of 5 % and 4 relative SE of the sample SD (see
    :func:`sd_standard_error`); ``rhat``, ``ess`` (bulk)."""

    z: np.ndarray
    sd_ratio: np.ndarray
    sd_tolerance: np.ndarray
    rhat: np.ndarray
    ess: np.ndarray

    @property
    def frame_agrees(self) -> np.ndarray:
        """(F,) both axes' mean and SD within the bar."""
        return np.all(
            (self.z < MEAN_MCSE_MAX) & (np.abs(self.sd_ratio - 1) < self.sd_tolerance), axis=1
        )


def sd_standard_error(draws: np.ndarray) -> np.ndarray:
    """Monte Carlo standard error of the sample SD of MCMC draws.

    Parameters
    ----------
    draws : (..., chain, draw) ndarray
        Draws of one scalar per leading index; at least two chains.

    Returns
    -------
    (...) ndarray
        SE(SD) ≈ √(Var(c²) / ESS(c²)) / (2 SD) with c = draw − mean, in the draws' unit.
    """
    draws = np.asarray(draws, np.float64)
    centred_sq = (draws - draws.mean(axis=(-2, -1), keepdims=True)) ** 2
    ess = np.asarray(array_stats.ess(centred_sq, method="mean"))
    var = centred_sq.mean(axis=(-2, -1))
    var_of_sq = (centred_sq**2).mean(axis=(-2, -1)) - var**2
    return np.sqrt(var_of_sq / ess) / (2 * np.sqrt(var))


def grid_agreement(result: PosteriorResult, grid: PosteriorResult) -> GridAgreement:
    """Moments of ``result``'s draws (emitter 0) against ``grid``'s on the same frames."""
    diag = result.diagnostics
    if diag is None:
        raise ValueError(f"{result.method} has no MCMC diagnostics (needs ≥ 2 chains of draws)")
    draws = result.theta_flat()[:, :, 0]  # (F, S, 2)
    grid_mean, cov = grid.extra["theta_mean"], grid.extra["theta_cov"]  # (F, 2), (F, 2, 2)
    grid_sd = np.sqrt(np.stack([cov[:, 0, 0], cov[:, 1, 1]], -1))
    ess = np.asarray(diag.ess_bulk)[:, 0]
    assert result.theta is not None  # diagnostics exist only for θ draws
    by_chain = np.moveaxis(result.theta[:, :, :, 0], (0, 1), (-2, -1))  # (F, 2, C, D)
    sd = draws.std(1)
    return GridAgreement(
        z=np.abs(draws.mean(1) - grid_mean) / np.asarray(diag.mcse_mean)[:, 0],
        sd_ratio=sd / grid_sd,
        sd_tolerance=np.maximum(SD_TOLERANCE, SD_SE_MAX * sd_standard_error(by_chain) / sd),
        rhat=np.asarray(diag.rhat)[:, 0],
        ess=ess,
    )
