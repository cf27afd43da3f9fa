"""Calibration of per-pixel KDE posteriors against the true KDE y0 (NumPy).

Every method is scored the same way, from S KDE samples per frame (pushed forward from θ draws,
or drawn by a generative surrogate): is y0 inside each pixel's central interval, and how far is
it from the posterior mean in posterior SDs?

The interval of level ℓ is made of order statistics, [y₍ᵢ₎, y₍ⱼ₎] with i = ⌊(S+1)(1−ℓ)/2⌋ and
j = S+1−i: for an exact posterior, a fresh posterior draw (which y0 is, when θ is drawn from the
prior) lands inside it with probability exactly (j−i)/(S+1), the *attained* level reported beside
the nominal one, whatever S. Only *signal* pixels count — where y0 or the reference posterior mean
reaches ``threshold`` (a fraction of one kernel's peak) in the *reference posterior mean*:
elsewhere every method is ≈ 0 and coverage is trivially perfect. The mask depends on the frame x
only, never on y0: selecting pixels by the truth (e.g. y0 ≥ threshold) breaks the
exchangeability of y0 with the draws and biases coverage upwards (measured here: 0.97 instead of
0.91 for the exact posterior at the 90 % level). Pixels of one frame are correlated, so
uncertainty comes from the spread of per-frame coverage over independent frames.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from bayes_smlm.compare.sbc import thin_to
from bayes_smlm.compare.schema import COVERAGE_LEVELS, Z_ABS_GT_3, Z_MEAN, Z_PIXELS, Z_SD
from bayes_smlm.methods.pushforward import kde_images

LEVELS = tuple(level / 100 for level in COVERAGE_LEVELS)  # (0.5, 0.9, 0.95)
SIGNAL_THRESHOLD = 0.05  # KDE units (one kernel peaks at 1)


def signal_mask(reference_mean: np.ndarray, threshold: float = SIGNAL_THRESHOLD) -> np.ndarray:
    """(F, H, W) pixels where the reference posterior mean of the KDE reaches ``threshold``."""
    return np.asarray(reference_mean) >= threshold


def order_statistic_interval(n_samples: int, level: float) -> tuple[int, int, float]:
    """0-based indices (lo, hi) into sorted samples and the attained level (j−i)/(S+1)."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1) (got {level})")
    i = int(np.floor((n_samples + 1) * (1.0 - level) / 2.0))
    i = max(i, 1)
    j = n_samples + 1 - i
    return i - 1, j - 1, (j - i) / (n_samples + 1)


@dataclass(frozen=True)
class KDECoverage:
    """Coverage of y0 by central intervals of one method.

    Attributes
    ----------
    levels, attained : (L,) arrays
        Nominal levels and the levels an exact posterior attains with S samples.
    per_frame : (F, L) array
        Fraction of the frame's signal pixels covered.
    z : (P,) array
        (y0 − mean) / SD over all signal pixels of all frames (SD > 0).
    n_samples : int
        S.
    """

    levels: np.ndarray
    attained: np.ndarray
    per_frame: np.ndarray
    z: np.ndarray
    n_samples: int

    @property
    def coverage(self) -> np.ndarray:
        """(L,) mean per-frame coverage."""
        return np.nanmean(self.per_frame, axis=0)

    @property
    def standard_error(self) -> np.ndarray:
        """(L,) standard error of :attr:`coverage` over frames."""
        n = np.sum(np.isfinite(self.per_frame[:, 0]))
        return np.nanstd(self.per_frame, axis=0, ddof=1) / np.sqrt(max(n, 1))

    def z_summary(self) -> dict[str, float]:
        z = self.z
        return {
            Z_MEAN.key: float(np.mean(z)),
            Z_SD.key: float(np.std(z)),
            Z_ABS_GT_3.key: float(np.mean(np.abs(z) > 3.0)),
            Z_PIXELS.key: int(z.size),
        }


def pixel_coverage(
    sorted_samples: np.ndarray, truth: np.ndarray, levels: tuple[float, ...]
) -> tuple[list[np.ndarray], np.ndarray]:
    """Per pixel: is the truth inside each level's order-statistic interval, and its z-score.

    Parameters
    ----------
    sorted_samples : (S, P) array
        Samples of P pixels, sorted along axis 0.
    truth : (P,) array

    Returns
    -------
    inside : list of (P,) bool arrays, one per level
    z : (P',) array over the pixels with SD > 0
    """
    n_samples = sorted_samples.shape[0]
    inside = []
    for level in levels:
        lo, hi, _ = order_statistic_interval(n_samples, level)
        inside.append((truth >= sorted_samples[lo]) & (truth <= sorted_samples[hi]))
    sd = sorted_samples.std(axis=0, ddof=1)
    ok = sd > 0
    return inside, (truth[ok] - sorted_samples.mean(axis=0)[ok]) / sd[ok]


def kde_coverage(
    kde_samples: Iterable[np.ndarray],
    kde_true: np.ndarray,
    mask: np.ndarray,
    levels: tuple[float, ...] = LEVELS,
) -> KDECoverage:
    """Coverage of the true KDE by per-pixel central intervals, frame by frame.

    Parameters
    ----------
    kde_samples : iterable of (S, H, W) arrays
        The method's KDE samples of each frame (a generator keeps memory to one frame).
    kde_true : (F, H, W) array
        The KDE y0 of the true positions.
    mask : (F, H, W) bool array
        Signal pixels (:func:`signal_mask`).
    """
    per_frame, zs, n_samples = [], [], None
    for f, samples in enumerate(kde_samples):
        samples = np.sort(np.asarray(samples, np.float64), axis=0)
        n_samples = samples.shape[0]
        m = mask[f]
        inside, z = pixel_coverage(samples[:, m], np.asarray(kde_true[f], np.float64)[m], levels)
        per_frame.append([i.mean() if i.size else np.nan for i in inside])
        zs.append(z)
    if n_samples is None:
        raise ValueError("kde_coverage needs at least one frame")
    attained = [order_statistic_interval(n_samples, level)[2] for level in levels]
    return KDECoverage(
        levels=np.asarray(levels),
        attained=np.asarray(attained),
        per_frame=np.asarray(per_frame),
        z=np.concatenate(zs),
        n_samples=n_samples,
    )


def theta_kde_samples(theta_flat: np.ndarray, task, n_samples: int) -> Iterator[np.ndarray]:
    """KDE samples of each frame from θ draws (F, S, N, 2), evenly thinned to ``n_samples``."""
    for frame_draws in thin_to(theta_flat, n_samples):
        yield kde_images(frame_draws, task)
