"""Scoring localizations of a simulated movie against its truth: detection, accuracy against the
Cramér–Rao bound, calibration of the stated uncertainties, and of the rendered SD map."""

from __future__ import annotations

from typing import Any

import numpy as np

from bayes_smlm.acquisition.render import render
from bayes_smlm.forward.config import Task
from bayes_smlm.forward.fisher import fisher_information
from bayes_smlm.localization.matching import match_points

TOLERANCE_PX = 1.0  # a localization within 1 LR px of a true emitter can be its match


def match_movie(
    rows: dict[str, np.ndarray], theta: np.ndarray, tolerance: float = TOLERANCE_PX
) -> tuple[np.ndarray, np.ndarray]:
    """One-to-one matches per frame: (row indices into ``rows``, flat indices into the true
    emitters ``theta`` (F, N, 2) reshaped to (F·N, 2))."""
    found_all, true_all = [], []
    n = theta.shape[1]
    for f in range(theta.shape[0]):
        sel = np.flatnonzero(rows["frame"] == f)
        found = np.stack([rows["x"][sel], rows["y"][sel]], 1)
        i, j = match_points(found, theta[f], tolerance=tolerance)
        found_all.append(sel[i])
        true_all.append(f * n + j)
    return np.concatenate(found_all).astype(int), np.concatenate(true_all).astype(int)


def crlb_sd(task: Task, theta: np.ndarray, i0: np.ndarray, background: float) -> np.ndarray:
    """(F, N, 2) √CRLB of every true emitter, LR px, with each emitter's i0 and the background
    unknown too (the information of the whole frame, the task's camera maps)."""
    return np.stack(
        [
            fisher_information(
                task,
                theta[f],
                i0=i0[f],
                background=background,
                include_intensity=True,
                include_background=True,
            ).sd_xy
            for f in range(theta.shape[0])
        ]
    )


def score_movie(
    rows: dict[str, np.ndarray],
    theta: np.ndarray,
    i0: np.ndarray,
    crlb: np.ndarray,
    pixel_nm: float,
) -> dict:
    """Precision, recall, RMSE (nm) and its ratio to the CRLB-limited RMSE, z = error / stated SD
    (all matches and unflagged ones), median fitted / true intensity; precision and recall also
    of the unflagged localizations alone (what a user keeps who drops the flagged rows)."""
    found, true = match_movie(rows, theta)
    flat_theta, flat_i0 = theta.reshape(-1, 2), i0.reshape(-1)
    error = np.stack([rows["x"][found], rows["y"][found]], 1) - flat_theta[true]
    sd = np.stack([rows["sd_x"][found], rows["sd_y"][found]], 1)
    z = error / sd
    flagged = rows["flagged"][found].astype(bool)
    rmse = np.sqrt(np.mean(error**2, 0))
    limit = np.sqrt(np.mean(crlb.reshape(-1, 2)[true] ** 2, 0))
    return {
        "localizations": int(len(rows["x"])),
        "true_emitters": int(flat_i0.size),
        "matched": int(len(found)),
        "precision": len(found) / max(len(rows["x"]), 1),
        "recall": len(found) / flat_i0.size,
        "flagged": int(rows["flagged"].sum()),
        "rmse_nm": (rmse * pixel_nm).tolist(),
        "crlb_rmse_nm": (limit * pixel_nm).tolist(),
        "rmse_over_crlb": (rmse / limit).tolist(),
        "z_sd": z.std(0).tolist(),
        "z_sd_unflagged": z[~flagged].std(0).tolist() if (~flagged).any() else [np.nan] * 2,
        "intensity_ratio_median": float(np.median(rows["i0"][found] / flat_i0[true])),
        "matched_flagged": int(flagged.sum()),
        "precision_unflagged": int((~flagged).sum()) / max(int((~rows["flagged"]).sum()), 1),
        "recall_unflagged": int((~flagged).sum()) / flat_i0.size,
    }


def score_sd_map(
    rows: dict[str, np.ndarray],
    theta: np.ndarray,
    pixel_nm: float,
    render_nm: float,
    sigma_nm: float,
    shape_px: tuple[int, int],
) -> dict:
    """Rendered image of the localizations vs the same rendering of the true positions: z per
    pixel (true − mean) / SD on the pixels with signal (true ≥ 0.05), its SD and the coverage
    of central 50/90/95 % intervals — matched localizations only, so that missed and spurious
    emitters (which no SD map accounts for) do not enter.

    The image is each localization's kernel blurred by its posterior, so its expectation is the
    truth blurred twice (covariance 2Σ per emitter): a bias that does not shrink with more
    localizations while the SD does. ``expected`` scores the same z against that expectation
    (the image's fluctuation alone); ``z_sd`` against the truth includes the bias.
    """
    found, true = match_movie(rows, theta)
    rows_px, cols_px = shape_px
    shape = (
        int(np.ceil(rows_px * pixel_nm / render_nm)),
        int(np.ceil(cols_px * pixel_nm / render_nm)),
    )
    nm = lambda v: (v + 0.5) * pixel_nm  # noqa: E731  (LR px, centres at integers → nm)
    estimate = render(
        nm(rows["x"][found]),
        nm(rows["y"][found]),
        rows["sd_x"][found] * pixel_nm,
        rows["sd_y"][found] * pixel_nm,
        rows["corr_xy"][found],
        pixel_nm=render_nm,
        sigma_nm=sigma_nm,
        shape=shape,
    )
    flat = theta.reshape(-1, 2)[true]
    zeros = np.zeros(len(flat))
    exact = render(
        nm(flat[:, 0]),
        nm(flat[:, 1]),
        zeros,
        zeros,
        pixel_nm=render_nm,
        sigma_nm=sigma_nm,
        shape=shape,
    )
    blurred = render(
        nm(flat[:, 0]),
        nm(flat[:, 1]),
        np.sqrt(2) * rows["sd_x"][found] * pixel_nm,
        np.sqrt(2) * rows["sd_y"][found] * pixel_nm,
        rows["corr_xy"][found],
        pixel_nm=render_nm,
        sigma_nm=sigma_nm,
        shape=shape,
    )
    signal = exact.mean >= 0.05
    out: dict[str, Any] = {"pixels": int(signal.sum())}
    for name, reference in (("truth", exact.mean), ("expected", blurred.mean)):
        z = (reference[signal] - estimate.mean[signal]) / np.maximum(estimate.sd[signal], 1e-12)
        out[name] = _z_summary(z)
    # the truth's numbers also at the top level, as before
    out.update(out["truth"])
    return {**out, "estimate": estimate, "exact": exact}


def _z_summary(z: np.ndarray) -> dict:
    """SD of z and the coverage of central 50/90/95 % normal intervals."""
    from scipy.stats import norm

    coverage = {
        f"{level}": float(np.mean(np.abs(z) <= norm.ppf(0.5 + level / 200)))
        for level in (50, 90, 95)
    }
    return {"z_sd": float(z.std()), "coverage": coverage}
