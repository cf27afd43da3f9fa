"""Calibration of posterior draws against known truths (numpy core).

- Simulation-based calibration (Talts et al. 2018): the rank of the true value among L
  (approximately independent) posterior draws is uniform on {0, …, L} when the posterior is
  right; tested with a χ² test on equal-width rank bins.
- Empirical coverage of central credible intervals, with Clopper–Pearson intervals.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class SBCResult:
    """Ranks (M, P) of M truths among ``n_draws`` draws, and the χ² uniformity test per column."""

    ranks: np.ndarray
    n_draws: int
    bins: int
    chi2: np.ndarray
    pvalue: np.ndarray

    @property
    def min_pvalue(self) -> float:
        return float(np.min(self.pvalue))


def thin_to(draws: np.ndarray, n: int) -> np.ndarray:
    """Evenly thin the draw axis (axis 1) of (M, S, …) to n draws (reduces autocorrelation)."""
    s = draws.shape[1]
    if n > s:
        raise ValueError(f"cannot thin {s} draws to {n}")
    idx = np.linspace(0, s - 1, n).round().astype(int)
    return draws[:, idx]


def sbc_ranks(
    draws: np.ndarray, truth: np.ndarray, *, n_draws: int = 99, bins: int = 10
) -> SBCResult:
    """SBC ranks and χ² uniformity tests.

    Parameters
    ----------
    draws : (M, S, P) array
        Posterior draws of P scalar quantities for each of M simulated data sets.
    truth : (M, P) array
        The values the data were simulated from (drawn from the prior).
    n_draws : int
        L: draws are thinned to L so ranks lie in {0, …, L}; choose L + 1 divisible by ``bins``.
    bins : int
        Equal-width rank bins of the χ² test (expected M / bins each).
    """
    thinned = thin_to(np.asarray(draws), n_draws)
    ranks = (thinned < np.asarray(truth)[:, None, :]).sum(1)
    edges = np.linspace(0, n_draws + 1, bins + 1)
    m = ranks.shape[0]
    chi2 = np.empty(ranks.shape[1])
    pvalue = np.empty(ranks.shape[1])
    for p in range(ranks.shape[1]):
        counts, _ = np.histogram(ranks[:, p], bins=edges)
        expected = m / bins
        chi2[p] = np.sum((counts - expected) ** 2 / expected)
        pvalue[p] = stats.chi2.sf(chi2[p], bins - 1)
    return SBCResult(ranks=ranks, n_draws=n_draws, bins=bins, chi2=chi2, pvalue=pvalue)


@dataclass(frozen=True)
class Coverage:
    """Fraction of truths inside the central ``level`` interval, with a 99 % Clopper–Pearson
    interval for that fraction."""

    level: float
    covered: int
    total: int
    low: float
    high: float

    @property
    def fraction(self) -> float:
        return self.covered / self.total


def interval_coverage(
    draws: np.ndarray, truth: np.ndarray, levels: tuple[float, ...] = (0.5, 0.9, 0.95)
) -> list[Coverage]:
    """Empirical coverage of central credible intervals, pooled over all quantities.

    Parameters
    ----------
    draws : (M, S, …) array
        Draws along axis 1.
    truth : (M, …) array
        True values, same trailing shape.
    """
    draws = np.asarray(draws)
    truth = np.asarray(truth)
    out = []
    for level in levels:
        lo, hi = np.quantile(draws, [(1 - level) / 2, (1 + level) / 2], axis=1)
        inside = (truth >= lo) & (truth <= hi)
        k, n = int(inside.sum()), int(inside.size)
        ci = stats.binomtest(k, n, level).proportion_ci(confidence_level=0.99)
        out.append(Coverage(level=level, covered=k, total=n, low=ci.low, high=ci.high))
    return out
