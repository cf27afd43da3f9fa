"""Scores per region of the KDE map: where the signal is, where it is not, and how crowded it is.

A whole-frame summary can pass by two errors cancelling (a surrogate with half the exact variance
on the emitters and a noise floor everywhere else reached a whole-frame summed-variance ratio of
1.00). So every variance-map score is also computed on

- the **signal** pixels: reference posterior mean ≥ 0.05 (the mask of KDE coverage);
- the **background**: reference posterior mean < 0.01, where the exact variance is ≈ 0; its
  *floor* is the median posterior SD there (KDE units);

and KDE coverage and z-scores are split by **crowding**: per signal pixel, the number of true
emitters within 2 LR px of the pixel centre (1, 2, ≥ 3; 0 is counted apart). All NumPy.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from bayes_smlm.compare import schema
from bayes_smlm.compare.kde_calibration import (
    LEVELS,
    SIGNAL_THRESHOLD,
    order_statistic_interval,
    pixel_coverage,
)
from bayes_smlm.compare.maps import variance_agreement

BACKGROUND_THRESHOLD = 0.01  # KDE units: below this reference mean a pixel is background
CROWDING_RADIUS = 2.0  # LR px


def background_mask(
    reference_mean: np.ndarray, threshold: float = BACKGROUND_THRESHOLD
) -> np.ndarray:
    """(F, H, W) pixels where the reference posterior mean of the KDE is below ``threshold``."""
    return np.asarray(reference_mean) < threshold


def crowding(
    theta_true: np.ndarray,
    hr_shape: tuple[int, int],
    upsampling: int,
    radius: float = CROWDING_RADIUS,
) -> np.ndarray:
    """(F, uH, uW) number of true emitters within ``radius`` LR px of each KDE pixel's centre.

    KDE pixel (r, c) has its centre at LR coordinates ((c + ½)/u − ½, (r + ½)/u − ½) — the inverse
    of θ_hr = u(θ + ½) − ½.
    """
    theta = np.asarray(theta_true, np.float64)  # (F, N, 2) as (x, y)
    rows, cols = np.arange(hr_shape[0]), np.arange(hr_shape[1])
    x = (cols + 0.5) / upsampling - 0.5
    y = (rows + 0.5) / upsampling - 0.5
    dx = x[None, None, None, :] - theta[:, :, 0, None, None]
    dy = y[None, None, :, None] - theta[:, :, 1, None, None]
    return ((dx**2 + dy**2) <= radius**2).sum(axis=1)


def crowding_class(count: np.ndarray) -> np.ndarray:
    """Index into :data:`schema.CROWDING_CLASSES` of each emitter count."""
    return np.minimum(np.asarray(count), 3)


def region_variance_scores(
    var: np.ndarray, reference_var: np.ndarray, reference_mean: np.ndarray
) -> dict[str, np.ndarray]:
    """Per-frame variance agreement on the signal pixels and on the background.

    Parameters
    ----------
    var, reference_var : (F, H, W) arrays
        Per-pixel posterior variances of the method and of the reference (KDE units²).
    reference_mean : (F, H, W) array
        The reference posterior mean (defines the regions).

    Returns
    -------
    dict of (F,) arrays
        ``signal_pearson``, ``signal_ratio`` (Σ var / Σ reference var over signal pixels),
        ``background_ratio``, ``background_floor`` and ``reference_background_floor`` (median
        posterior SD over the background, KDE units), ``background_share`` (fraction of the
        method's summed variance that lies on the background).
    """
    var = np.asarray(var, np.float64)
    reference_var = np.asarray(reference_var, np.float64)
    signal = np.asarray(reference_mean) >= SIGNAL_THRESHOLD
    background = background_mask(reference_mean)
    out: dict[str, list[float]] = {
        k: []
        for k in (
            "signal_pearson",
            "signal_ratio",
            "background_ratio",
            "background_floor",
            "reference_background_floor",
            "background_share",
        )
    }
    for f in range(len(var)):
        s, b = signal[f], background[f]
        a, r = var[f][s], reference_var[f][s]
        if a.size > 1 and np.std(r) > 0 and np.std(a) > 0:
            out["signal_pearson"].append(float(np.corrcoef(a, r)[0, 1]))
        else:
            out["signal_pearson"].append(np.nan)
        out["signal_ratio"].append(float(a.sum() / r.sum()) if r.sum() > 0 else np.nan)
        rb = reference_var[f][b].sum()
        out["background_ratio"].append(float(var[f][b].sum() / rb) if rb > 0 else np.inf)
        out["background_floor"].append(float(np.median(np.sqrt(var[f][b]))) if b.any() else np.nan)
        out["reference_background_floor"].append(
            float(np.median(np.sqrt(reference_var[f][b]))) if b.any() else np.nan
        )
        out["background_share"].append(float(var[f][b].sum() / max(var[f].sum(), 1e-300)))
    return {k: np.asarray(v) for k, v in out.items()}


def whole_frame_scores(var: np.ndarray, reference_var: np.ndarray) -> dict[str, np.ndarray]:
    """Per-frame whole-map Pearson r and summed-variance ratio (as in :mod:`.maps`)."""
    agreement = variance_agreement(var, reference_var)
    return {"pearson": agreement.pearson, "ratio": agreement.summed_ratio}


def separation_classes(theta_true: np.ndarray, sigma_psf: float) -> np.ndarray:
    """(F, N) index into :data:`schema.SEPARATION_CLASSES` of each true emitter: its distance to
    its nearest neighbour in units of σ_psf (a lone emitter is in the widest class)."""
    theta = np.asarray(theta_true, np.float64)
    gaps = np.linalg.norm(theta[:, :, None] - theta[:, None], axis=-1)  # (F, N, N)
    n = theta.shape[1]
    gaps[:, np.arange(n), np.arange(n)] = np.inf
    return np.searchsorted(schema.SEPARATION_EDGES, gaps.min(-1) / sigma_psf, side="right")


def separation(
    theta_true: np.ndarray, hr_shape: tuple[int, int], upsampling: int, sigma_psf: float
) -> np.ndarray:
    """(F, uH, uW) index into :data:`schema.SEPARATION_CLASSES` of each KDE pixel: the class of
    the nearest true emitter's distance to its own nearest neighbour, in units of σ_psf (a lone
    emitter is in the widest class)."""
    theta = np.asarray(theta_true, np.float64)
    emitter_class = separation_classes(theta, sigma_psf)  # (F, N)
    rows, cols = np.arange(hr_shape[0]), np.arange(hr_shape[1])
    x = (cols + 0.5) / upsampling - 0.5
    y = (rows + 0.5) / upsampling - 0.5
    d2 = (x[None, None, None, :] - theta[:, :, 0, None, None]) ** 2 + (
        y[None, None, :, None] - theta[:, :, 1, None, None]
    ) ** 2  # (F, N, H, W)
    nearest = np.argmin(d2, axis=1)
    return np.take_along_axis(emitter_class[:, :, None, None], nearest[:, None], 1)[:, 0]


def coverage_by_class(
    kde_samples: Iterable[np.ndarray],
    kde_true: np.ndarray,
    mask: np.ndarray,
    strata: dict[str, tuple[np.ndarray, tuple[str, ...]]],
    levels: tuple[float, ...] = LEVELS,
) -> dict[str, dict[str, Any]]:
    """KDE interval coverage and z-scores over the signal pixels of each class of each
    stratification (``strata``: name → ((F, H, W) class index per pixel, class names)), in one
    pass over the samples.

    Pixels of all frames are pooled per class (a frame contributes its pixels of that class);
    ``frames`` says how many frames had any. Coverage uses the same order-statistic intervals as
    :func:`.kde_calibration.kde_coverage`, so an exact posterior attains the same levels.
    """
    inside: dict[str, dict[str, list[list[np.ndarray]]]] = {
        s: {c: [[] for _ in levels] for c in names} for s, (_, names) in strata.items()
    }
    zs: dict[str, dict[str, list[np.ndarray]]] = {
        s: {c: [] for c in names} for s, (_, names) in strata.items()
    }
    frames_with = {s: {c: 0 for c in names} for s, (_, names) in strata.items()}
    n_samples = None
    for f, samples in enumerate(kde_samples):
        samples = np.sort(np.asarray(samples, np.float64), axis=0)
        n_samples = samples.shape[0]
        for stratum, (classes, names) in strata.items():
            for k, name in enumerate(names):
                m = mask[f] & (classes[f] == k)
                if not m.any():
                    continue
                frames_with[stratum][name] += 1
                covered, z = pixel_coverage(
                    samples[:, m], np.asarray(kde_true[f], np.float64)[m], levels
                )
                for j, hit in enumerate(covered):
                    inside[stratum][name][j].append(hit)
                zs[stratum][name].append(z)
    out: dict[str, dict[str, Any]] = {}
    for stratum, (_, names) in strata.items():
        rows: dict[str, Any] = {}
        for name in names:
            if not frames_with[stratum][name]:
                continue
            z = np.concatenate(zs[stratum][name]) if zs[stratum][name] else np.zeros(0)
            row: dict[str, Any] = {
                schema.CROWD_FRAMES: frames_with[stratum][name],
                schema.CROWD_PIXELS: int(sum(a.size for a in inside[stratum][name][0])),
            }
            for j, level in enumerate(levels):
                row[schema.CROWD_COVERAGE[round(level * 100)]] = float(
                    np.concatenate(inside[stratum][name][j]).mean()
                )
            row[schema.CROWD_Z_SD] = float(np.std(z)) if z.size else np.nan
            rows[name] = row
        if n_samples is not None:
            rows[schema.CROWD_ATTAINED] = {
                schema.CROWD_COVERAGE[round(level * 100)]: order_statistic_interval(
                    n_samples, level
                )[2]
                for level in levels
            }
        out[stratum] = rows
    return out


def region_summary(
    var: np.ndarray,
    reference_var: np.ndarray,
    reference_mean: np.ndarray,
    kde_true: np.ndarray,
    theta_true: np.ndarray,
    hr_shape: tuple[int, int],
    upsampling: int,
    kde_samples: Iterable[np.ndarray] | None = None,
    sigma_psf: float | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Region-aware scalars (medians over frames) and per-frame values of one method.

    ``kde_samples`` (per-frame (S, H, W) arrays), when given, adds coverage and z SD by crowding
    and, with ``sigma_psf`` (LR px), by nearest-neighbour separation.
    """
    f = len(var)
    whole = whole_frame_scores(var, reference_var[:f])
    regions = region_variance_scores(var, reference_var[:f], reference_mean[:f])
    scalars: dict[str, Any] = {
        schema.SIGNAL_PEARSON.key: float(np.nanmedian(regions["signal_pearson"])),
        schema.SIGNAL_RATIO.key: float(np.nanmedian(regions["signal_ratio"])),
        schema.BACKGROUND_FLOOR.key: float(np.nanmedian(regions["background_floor"])),
        schema.REFERENCE_FLOOR.key: float(np.nanmedian(regions["reference_background_floor"])),
        schema.BACKGROUND_SHARE.key: float(np.nanmedian(regions["background_share"])),
    }
    per_frame = {
        "signal_pearson": regions["signal_pearson"].tolist(),
        "signal_ratio": regions["signal_ratio"].tolist(),
        "background_floor": regions["background_floor"].tolist(),
        "background_share": regions["background_share"].tolist(),
        "pearson": whole["pearson"].tolist(),
        "ratio": whole["ratio"].tolist(),
    }
    if kde_samples is not None:
        mask = np.asarray(reference_mean[:f]) >= SIGNAL_THRESHOLD
        strata: dict[str, tuple[np.ndarray, tuple[str, ...]]] = {
            schema.BY_CROWDING.key: (
                crowding_class(crowding(theta_true[:f], hr_shape, upsampling)),
                schema.CROWDING_CLASSES,
            )
        }
        if sigma_psf is not None:
            strata[schema.BY_SEPARATION.key] = (
                separation(theta_true[:f], hr_shape, upsampling, sigma_psf),
                schema.SEPARATION_CLASSES,
            )
        scalars.update(coverage_by_class(kde_samples, kde_true[:f], mask, strata))
    return scalars, per_frame
