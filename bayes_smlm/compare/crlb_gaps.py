"""How far posteriors and point estimates are from the Cramér–Rao lower bound (NumPy core).

All ratios are dimensionless, per axis (x, y): posterior SD / √CRLB (≈ 1 for an efficient,
well-specified posterior at this photon count), and RMSE / √CRLB of an estimator (≥ 1 for any
unbiased one), each error normalised by the √CRLB of its own frame so frames of different
difficulty pool fairly. CRLBs are evaluated at the true positions.
"""

from __future__ import annotations

import numpy as np

from bayes_smlm.forward.config import Task
from bayes_smlm.forward.fisher import position_crlb_sd
from bayes_smlm.localization.detection import match_frame
from bayes_smlm.localization.matching import match_points


def sqrt_crlb_at(task: Task, theta_true: np.ndarray) -> np.ndarray:
    """(F, N, 2) √CRLB of every emitter's (x, y), LR px, jointly over the emitters of a frame."""
    return position_crlb_sd(task, theta_true)


def truth_order(estimate: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """(F, N) indices such that ``estimate[f, order[f]]`` best matches ``truth[f]`` (least
    squares, one-to-one); estimate and truth (F, N, 2)."""
    order = np.empty(truth.shape[:2], int)
    for f in range(len(truth)):
        rows, cols = match_points(estimate[f], truth[f], squared=True)
        order[f, cols] = rows
    return order


def normalised_rmse(errors: np.ndarray, sqrt_crlb: np.ndarray) -> np.ndarray:
    """(2,) √(mean over emitters of (error / √CRLB)²) per axis; errors and √CRLB (..., 2)."""
    z = np.asarray(errors).reshape(-1, 2) / np.asarray(sqrt_crlb).reshape(-1, 2)
    return np.sqrt(np.mean(z**2, axis=0))


def posterior_crlb_gaps(
    theta_flat: np.ndarray, theta_true: np.ndarray, sqrt_crlb: np.ndarray
) -> dict[str, np.ndarray]:
    """Posterior SD / √CRLB and posterior-mean RMSE / √CRLB of θ draws.

    Parameters
    ----------
    theta_flat : (F, S, N, 2) array
        Label-aligned draws, LR px.
    theta_true, sqrt_crlb : (F, N, 2) arrays

    Returns
    -------
    dict
        ``sd_ratio`` (F, N, 2) per emitter; ``sd_ratio_median`` (2,); ``rmse_ratio`` (2,).
    """
    mean, sd = theta_flat.mean(axis=1), theta_flat.std(axis=1, ddof=1)
    order = truth_order(mean, theta_true)[..., None]
    mean = np.take_along_axis(mean, order, axis=1)
    sd = np.take_along_axis(sd, order, axis=1)
    ratio = sd / sqrt_crlb
    return {
        "sd_ratio": ratio,
        "sd_ratio_median": np.median(ratio.reshape(-1, 2), axis=0),
        "rmse_ratio": normalised_rmse(mean - theta_true, sqrt_crlb),
    }


def detection_crlb_gap(
    found_xy: list[np.ndarray], theta_true: np.ndarray, sqrt_crlb: np.ndarray, tolerance: float
) -> dict[str, float | np.ndarray]:
    """RMSE / √CRLB of detections (e.g. φ + LoG) matched one-to-one within ``tolerance`` LR px.

    ``found_xy[f]`` holds frame f's detections (K_f, 2); unmatched ones are false positives and do
    not enter the RMSE (the recall is returned beside it).
    """
    error_rows, scale_rows, tp = [], [], 0
    for f, found in enumerate(found_xy):
        i_found, i_true = match_frame(found, theta_true[f], tolerance)
        tp += len(i_found)
        error_rows.append(found[i_found] - theta_true[f][i_true])
        scale_rows.append(sqrt_crlb[f][i_true])
    errors = np.concatenate(error_rows).reshape(-1, 2)
    scales = np.concatenate(scale_rows).reshape(-1, 2)
    n_true = theta_true.shape[0] * theta_true.shape[1]
    return {
        "rmse_ratio": normalised_rmse(errors, scales) if tp else np.full(2, np.nan),
        "recall": tp / n_true,
        "matched": tp,
    }
