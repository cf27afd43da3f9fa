"""Candidates → fitted rows: the windows of a set of candidates (:func:`regions.plan_windows`),
each fitted (:func:`window_fit.fit_windows`), its count of emitters chosen by evidence
(:func:`window_counts.count_emitters`), optionally sampled by NUTS, and written as one row per
emitter (:data:`COLUMNS`). ``localize``'s passes (:mod:`pipeline`) call it on the whole frame's
candidates, then on the windows they fit again.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from bayes_smlm.acquisition.neighbours import take_rows
from bayes_smlm.acquisition.regions import WindowGroup, half_width, plan_windows
from bayes_smlm.acquisition.settings import LocalizeSettings
from bayes_smlm.acquisition.spots import Spots
from bayes_smlm.acquisition.window_counts import CountedWindows, count_emitters
from bayes_smlm.acquisition.window_fit import (
    fit_windows,
    gain_error_widened,
    misfit,
    quasi_dispersion,
)
from bayes_smlm.acquisition.window_sampling import WindowDraws, sample_windows
from bayes_smlm.forward import physics
from bayes_smlm.forward.config import Task
from bayes_smlm.methods.diagnostics import ESS_MIN, RHAT_MAX

COLUMNS = {
    "frame": int,
    "x": float,
    "y": float,
    "sd_x": float,
    "sd_y": float,
    "corr_xy": float,
    "i0": float,
    "sd_i0": float,
    "background": float,
    "sd_background": float,
    "snr": float,
    "p_exists": float,
    "window": int,
    "emitters_in_window": int,
    "chi2_dof": float,
    "misfit": bool,
    "iterations": int,
    "converged": bool,
    "flagged": bool,
    "r_hat": float,
    "ess_bulk": float,
    "divergences": int,
}  # the last 3: NaN / 0 but nuts


def empty_table() -> dict[str, np.ndarray]:
    return {name: np.zeros(0, dtype) for name, dtype in COLUMNS.items()}


def concat_tables(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Tables one after the other."""
    return {name: np.concatenate([p[name] for p in parts]) for name in COLUMNS}


def _start(
    group: WindowGroup,
    photons: np.ndarray,
    pedestal: np.ndarray,
    task: Task,
    neighbours: np.ndarray | None = None,
) -> tuple[np.ndarray, ...]:
    """Window counts, rate offsets, fitted pixels and starting parameters of a group. A window
    fits the pixels within the single-emitter half-width of one of its candidates: the rest of
    its rectangle holds neighbours it does not model. ``neighbours`` (F, H, W): expected photons
    of emitters fitted in other windows, added to the rate as known."""
    sh, sw = group.shape
    rows = group.origin[:, :1, None] + np.arange(sh)[None, :, None]
    cols = group.origin[:, 1:, None] + np.arange(sw)[None, None, :]
    window_photons = photons[group.frame[:, None, None], rows, cols]
    window_pedestal = np.broadcast_to(pedestal, photons.shape[1:])[rows, cols]
    offset = (
        window_pedestal
        if neighbours is None
        else (window_pedestal + neighbours[group.frame[:, None, None], rows, cols])
    )
    lo_i0, hi_i0 = task.prior.i0_range
    lo_b, hi_b = task.prior.background_range
    b = np.clip(np.percentile(window_photons, 25, axis=(1, 2)), lo_b, hi_b)
    peak = photons[group.frame[:, None], group.peaks[..., 0], group.peaks[..., 1]]
    centre = float(physics.pixel_integrated_gaussian(0.0, 0.0, task.optics.sigma_psf)) ** 2
    i0 = np.where(group.active, np.clip((peak - b[:, None]) / centre, lo_i0, hi_i0), 0.0)
    xy = (group.peaks[..., ::-1] - group.origin[:, None, ::-1]).reshape(len(b), -1)
    start = np.concatenate([xy, i0, b[:, None]], 1)
    h = half_width(task.optics.sigma_psf)
    near_row = np.abs(rows[:, None, :, :] - group.peaks[:, :, None, None, 0]) <= h  # (B,K,Sh,1)
    near_col = np.abs(cols[:, None, :, :] - group.peaks[:, :, None, None, 1]) <= h  # (B,K,1,Sw)
    fitted = np.any(near_row & near_col & group.active[:, :, None, None], axis=1)
    return window_photons + window_pedestal, offset, fitted, start


def candidates_of(table: dict[str, np.ndarray], task: Task) -> Spots:
    """Fitted emitters as candidates for another fit: their pixels and signal-to-noise."""
    return Spots(
        frame=table["frame"].astype(int),
        row=np.clip(np.rint(table["y"]), 0, task.height - 1).astype(int),
        col=np.clip(np.rint(table["x"]), 0, task.width - 1).astype(int),
        snr=table["snr"],
    )


def fit_candidates(
    task: Task,
    photons: np.ndarray,
    pedestal: np.ndarray,
    spots: Spots,
    settings: LocalizeSettings,
    log_density: float,
    sample_first_frame: int | None = None,
    only: np.ndarray | None = None,
    neighbours: np.ndarray | None = None,
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Rows of the window fits of the candidates ``spots``, each window's count of emitters
    chosen by its evidence (:func:`window_counts.count_emitters`), and (M,) bool: which
    candidates were in a fitted window. ``only`` (M,) bool: fit only the windows holding one of
    these candidates; ``neighbours`` (F, H, W) expected photons of emitters outside the windows
    (:func:`_start`). With ``sample_first_frame`` (the movie index of the chunk's first frame,
    for the seeds), NUTS posteriors started from the fits."""
    groups = plan_windows(
        spots.frame,
        spots.row,
        spots.col,
        task.shape,
        task.optics.sigma_psf,
        joint=settings.joint,
        max_emitters=settings.max_emitters,
    )
    parts, window_base = [empty_table()], 0
    fitted_candidates = np.zeros(len(spots.frame), bool)
    if only is not None:  # every window of a linked group that holds one of them
        chosen = np.unique(
            np.concatenate(
                [g.component[np.any(g.active & only[g.members], 1)] for g in groups]
                + [np.zeros(0, int)]
            )
        )
    for group in groups:
        if only is not None:
            group = group.take(np.isin(group.component, chosen))
            if not len(group.frame):
                continue
        fitted_candidates[group.members[group.active]] = True
        counts, window_pedestal, fitted, start = _start(group, photons, pedestal, task, neighbours)
        fit = fit_windows(
            task,
            counts,
            window_pedestal,
            start,
            group.active,
            fitted,
            max_iter=settings.max_iter,
            tol=settings.tol,
        )
        counted = _counted(
            task, counts, window_pedestal, fitted, fit, group.active, settings, log_density
        )
        if settings.gain_se > 0:
            counted = dataclasses.replace(
                counted,
                fit=gain_error_widened(
                    task,
                    counted.fit,
                    counts,
                    window_pedestal,
                    fitted,
                    counted.active,
                    settings.gain_se,
                ),
            )
        draws = (
            None
            if sample_first_frame is None
            else sample_windows(
                task,
                counts,
                window_pedestal,
                counted.fit,
                counted.active,
                fitted,
                seed=settings.seed,
                first_frame=sample_first_frame,
                first_window=window_base,
                chains=settings.chains,
                draws=settings.draws,
                warmup=settings.warmup,
            )
        )
        parts.append(_rows(group, counted, task, window_base, spots.snr[group.members], draws))
        window_base += len(group.frame)
    return concat_tables(parts), fitted_candidates


def _counted(
    task: Task,
    counts: np.ndarray,
    pedestal: np.ndarray,
    fitted: np.ndarray,
    fit,
    active: np.ndarray,
    settings: LocalizeSettings,
    log_density: float,
) -> CountedWindows:
    """The windows' counts by evidence, or (``settings.min_p_exists == 0``) every candidate."""
    if settings.min_p_exists == 0:
        return CountedWindows(
            fit=fit,
            active=active,
            p_exists=np.where(active, np.nan, 0.0),
            count_probability=np.full((len(active), active.shape[1] + 1), np.nan),
        )
    return count_emitters(
        task,
        counts,
        pedestal,
        fitted,
        fit,
        active,
        log_density=log_density,
        min_p_exists=settings.min_p_exists,
        max_iter=settings.max_iter,
        tol=settings.tol,
    )


def _rows(
    group: WindowGroup,
    counted: CountedWindows,
    task: Task,
    window_base: int,
    snr: np.ndarray,
    draws: WindowDraws | None = None,
) -> dict[str, np.ndarray]:
    """One row per emitter of the windows' reported counts: the Laplace fit's mode and SDs, or,
    with ``draws``, the NUTS posterior's means and SDs and its diagnostics."""
    fit = counted.fit
    b, k = fit.mode.shape[0], group.n_slots
    active = counted.active.ravel()
    centre, covariance = (
        (fit.mode, fit.covariance) if draws is None else (draws.mean, draws.covariance)
    )
    chi2_dof = fit.chi2 / fit.dof
    # a window the model does not explain: the quasi-likelihood covariance φΣ, φ = χ²/dof
    dispersion = quasi_dispersion(fit)
    sd = np.sqrt(np.maximum(np.diagonal(covariance, axis1=1, axis2=2), 0.0) * dispersion[:, None])
    x_index, y_index = 2 * np.arange(k), 2 * np.arange(k) + 1
    i0_index = 2 * k + np.arange(k)
    cov_xy = covariance[:, x_index, y_index]
    lo_i0, hi_i0 = task.prior.i0_range
    mode_i0 = fit.mode[:, i0_index]
    bad_fit = misfit(fit.chi2, fit.dof, fit.chi2_var, 3 * counted.active.sum(1) + 1)
    flagged = (
        (~fit.converged | ~fit.positive_definite | bad_fit)[:, None]
        | (mode_i0 <= lo_i0)
        | (mode_i0 >= hi_i0)
    )

    def per_window(values: np.ndarray) -> np.ndarray:
        return np.repeat(values, k)

    rows = {
        "frame": per_window(group.frame),
        "x": (centre[:, x_index] + group.origin[:, 1:]).ravel(),
        "y": (centre[:, y_index] + group.origin[:, :1]).ravel(),
        "sd_x": sd[:, x_index].ravel(),
        "sd_y": sd[:, y_index].ravel(),
        "corr_xy": (cov_xy / np.maximum(sd[:, x_index] * sd[:, y_index], 1e-30)).ravel(),
        "i0": centre[:, i0_index].ravel(),
        "sd_i0": sd[:, i0_index].ravel(),
        "background": per_window(centre[:, -1]),
        "sd_background": per_window(sd[:, -1]),
        "snr": np.where(counted.active, snr, 0.0).ravel(),
        "p_exists": counted.p_exists.ravel(),
        "window": per_window(window_base + np.arange(b)),
        "emitters_in_window": per_window(counted.active.sum(1)),
        "chi2_dof": per_window(chi2_dof),
        "misfit": per_window(bad_fit),
        "iterations": per_window(fit.iterations),
        "converged": per_window(fit.converged),
        "r_hat": np.full(b * k, np.nan),
        "ess_bulk": np.full(b * k, np.nan),
        "divergences": np.zeros(b * k, int),
    }
    if draws is not None:
        # an emitter's diagnostics: its x, y, i0 and the window's b
        own = np.stack([x_index, y_index, i0_index, np.full(k, 3 * k)], 1)  # (K, 4)
        r_hat, ess = draws.rhat[:, own].max(-1), draws.ess_bulk[:, own].min(-1)  # (B, K)
        divergent = draws.divergences[:, None] > 0
        flagged = flagged | ~(r_hat <= RHAT_MAX) | ~(ess >= ESS_MIN) | divergent
        rows.update(
            {
                "r_hat": r_hat.ravel(),
                "ess_bulk": ess.ravel(),
                "divergences": per_window(draws.divergences),
            }
        )
    rows["flagged"] = flagged.ravel()
    return take_rows(rows, active)
