"""Per-frame MCMC diagnostics of θ draws: rank R-hat, bulk/tail ESS and the MCSE of the mean,
from arviz-stats' array functions (NumPy in, NumPy out), computed once per result.

Frames whose worst coordinate has R-hat > 1.01 or bulk ESS < 400, or whose sampler reported any
divergent transition (its draws may miss part of the posterior), are flagged, not hidden.
:func:`diagnostics_dataset` is the thin xarray view stored in a posterior's DataTree.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import xarray as xr
from arviz_stats.base import array_stats

RHAT_MAX = 1.01
ESS_MIN = 400.0
TAIL_PROB = 0.89  # tail ESS of the 5.5 % and 94.5 % quantiles (arviz-stats' default ci_prob)


@dataclass(frozen=True)
class DrawDiagnostics:
    """Diagnostics of draws (C, D, F, N, 2), per (frame, emitter, axis) and per frame.

    Attributes
    ----------
    rhat, ess_bulk, ess_tail, mcse_mean : (F, N, 2) ndarray
        Rank-normalised R-hat, bulk and tail ESS, MCSE of the mean (LR px).
    flagged : (F,) bool ndarray
        Worst R-hat > ``rhat_max``, smallest bulk ESS < ``ess_min``, R-hat not finite, or any
        divergent transition.
    divergences : (F,) int ndarray or None
        Divergent transitions per frame, where the sampler reports them.
    rhat_max, ess_min : float
        The thresholds used.
    """

    rhat: np.ndarray
    ess_bulk: np.ndarray
    ess_tail: np.ndarray
    mcse_mean: np.ndarray
    flagged: np.ndarray
    divergences: np.ndarray | None
    rhat_max: float
    ess_min: float

    @property
    def worst_rhat(self) -> np.ndarray:
        """(F,) largest R-hat over emitters and axes (NaN only where all are)."""
        return over_coordinates(np.nanmax, self.rhat)

    @property
    def smallest_ess_bulk(self) -> np.ndarray:
        """(F,) smallest bulk ESS over emitters and axes."""
        return over_coordinates(np.nanmin, self.ess_bulk)

    @property
    def pass_rate(self) -> float:
        """Fraction of frames not flagged."""
        return float(1.0 - self.flagged.mean())


def over_coordinates(fn, values: np.ndarray) -> np.ndarray:
    """(F,) ``fn`` (np.nanmax, np.nanmin) of (F, N, 2) values over emitters and axes, skipping
    NaN as xarray's reductions do."""
    with warnings.catch_warnings():  # an all-NaN frame stays NaN (and is flagged)
        warnings.simplefilter("ignore", RuntimeWarning)
        return fn(values, axis=(1, 2))


def draw_diagnostics(
    theta: np.ndarray,
    diverging: np.ndarray | None = None,
    *,
    rhat_max: float = RHAT_MAX,
    ess_min: float = ESS_MIN,
) -> DrawDiagnostics:
    """Diagnostics of θ draws (chain, draw, frame, emitter, axis); needs at least two chains.

    ``diverging`` (chain, draw, frame), when given, is summed into divergences per frame.
    """
    draws = np.moveaxis(np.asarray(theta), (0, 1), (-2, -1))  # arviz-stats: chain, draw last
    rhat = np.asarray(array_stats.rhat(draws, method="rank"))
    ess_bulk = np.asarray(array_stats.ess(draws, method="bulk"))
    ess_tail = np.asarray(array_stats.ess(draws, method="tail", prob=TAIL_PROB))
    mcse = np.asarray(array_stats.mcse(draws, method="mean"))
    worst_rhat = over_coordinates(np.nanmax, rhat)
    smallest_ess = over_coordinates(np.nanmin, ess_bulk)
    flagged = (worst_rhat > rhat_max) | (smallest_ess < ess_min) | ~np.isfinite(worst_rhat)
    divergences = None if diverging is None else np.asarray(diverging).sum(axis=(0, 1))
    if divergences is not None:
        flagged = flagged | (divergences > 0)
    return DrawDiagnostics(
        rhat=rhat,
        ess_bulk=ess_bulk,
        ess_tail=ess_tail,
        mcse_mean=mcse,
        flagged=flagged,
        divergences=divergences,
        rhat_max=rhat_max,
        ess_min=ess_min,
    )


def diagnostics_dataset(diag: DrawDiagnostics) -> xr.Dataset:
    """The ``diagnostics`` group of a posterior DataTree (dims frame, emitter, axis = x|y)."""
    f, n, _ = diag.rhat.shape
    coords = {"frame": np.arange(f), "emitter": np.arange(n), "axis": ["x", "y"]}
    dims = ("frame", "emitter", "axis")
    out = xr.Dataset(
        {
            "rhat": (dims, diag.rhat),
            "ess_bulk": (dims, diag.ess_bulk),
            "ess_tail": (dims, diag.ess_tail),
            "mcse_mean": (dims, diag.mcse_mean),
            "flagged": (("frame",), diag.flagged),
        },
        coords=coords,
    )
    if diag.divergences is not None:
        out["divergences"] = (("frame",), diag.divergences)
    out.attrs.update(
        {"rhat_max": diag.rhat_max, "ess_min": diag.ess_min, "pass_rate": diag.pass_rate}
    )
    return out
