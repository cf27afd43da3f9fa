"""``localize``: a movie in, one row per emitter out — position, photons, background and the
posterior SD of each, from the window fits of :mod:`window_fit`.

Per chunk of frames: ADU → photons with the camera maps, candidates on the whole frame
(:func:`spots.find_spots`), windows (:func:`regions.plan_windows`: overlapping candidates
jointly), one compiled fit per window shape and emitter count, rows in frame order.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bayes_smlm.acquisition.movie import Movie
from bayes_smlm.acquisition.regions import WindowGroup, frames_apart, half_width, plan_windows
from bayes_smlm.acquisition.settings import LocalizeSettings
from bayes_smlm.acquisition.spots import Spots, find_spots
from bayes_smlm.acquisition.window_fit import WindowFits, fit_windows
from bayes_smlm.acquisition.window_sampling import WindowDraws, sample_windows
from bayes_smlm.forward import physics
from bayes_smlm.forward.config import Task
from bayes_smlm.methods.diagnostics import ESS_MIN, RHAT_MAX

CHI2_FLAG = 3.0  # χ² per degree of freedom of a window above which its fit is flagged
RESIDUAL_MIN_DISTANCE = 1.5  # px: residual peaks nearer a fitted emitter are its own misfit
RESIDUAL_CHI2 = 2.0  # χ²/dof of a window above which its frame is searched for missed emitters


COLUMNS = {"frame": int, "x": float, "y": float, "sd_x": float, "sd_y": float,
           "corr_xy": float, "i0": float, "sd_i0": float, "background": float,
           "sd_background": float, "snr": float, "window": int, "emitters_in_window": int,
           "chi2_dof": float, "iterations": int, "converged": bool, "flagged": bool,
           "r_hat": float, "ess_bulk": float, "divergences": int}  # the last 3: NaN / 0 but nuts


def _empty() -> dict[str, np.ndarray]:
    return {name: np.zeros(0, dtype) for name, dtype in COLUMNS.items()}


def _take(table: dict[str, np.ndarray], which: np.ndarray) -> dict[str, np.ndarray]:
    """The rows ``which`` (mask or indices) of every column."""
    return {name: values[which] for name, values in table.items()}


def _concat(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Tables one after the other."""
    return {name: np.concatenate([p[name] for p in parts]) for name in COLUMNS}


def _start(group: WindowGroup, photons: np.ndarray, pedestal: np.ndarray, task: Task
           ) -> tuple[np.ndarray, ...]:
    """Window counts, pedestals, fitted pixels and starting parameters of a group. A window
    fits the pixels within the single-emitter half-width of one of its candidates: the rest of
    its rectangle holds neighbours it does not model."""
    sh, sw = group.shape
    rows = group.origin[:, :1, None] + np.arange(sh)[None, :, None]
    cols = group.origin[:, 1:, None] + np.arange(sw)[None, None, :]
    window_photons = photons[group.frame[:, None, None], rows, cols]
    window_pedestal = np.broadcast_to(pedestal, photons.shape[1:])[rows, cols]
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
    return window_photons + window_pedestal, window_pedestal, fitted, start


def frame_candidates(task: Task, adu: np.ndarray, threshold: float
                     ) -> tuple[np.ndarray, np.ndarray, Spots]:
    """The first step of ``localize``: frames (F, H, W) ADU → photons ``(ADU − o)/g`` with the
    task's camera maps, the read-noise pedestal ``w²/g²`` (H, W), and the candidates of
    :func:`spots.find_spots` above signal-to-noise ``threshold``."""
    camera = physics.camera_arrays(task)
    offset, gain, readout_var = (np.asarray(a, np.float32) for a in camera)
    photons = (adu - offset) / gain
    pedestal = np.broadcast_to(readout_var / gain**2, task.shape).astype(np.float32)
    return photons, pedestal, find_spots(photons, pedestal, task.optics.sigma_psf, threshold)


def localize_frames(task: Task, adu: np.ndarray, settings: LocalizeSettings,
                    first_frame: int = 0) -> dict[str, np.ndarray]:
    """Localizations of frames ``adu`` (F, H, W) ADU of ``task``'s shape and camera: a dict of
    :data:`COLUMNS` arrays; ``frame`` is the index in ``adu``, positions in LR px (pixel centres
    at integers), photons and photons/px, ``window`` numbers the windows of this call.

    After the first fit, the fitted emitters are subtracted and candidates searched again in
    the residual (``settings.residual_passes`` times): two emitters closer than the filter
    resolves leave a residual peak beside the one fitted between them, and the frames where one
    appears are fitted again with it. With ``settings.method == "nuts"`` the final emitters'
    windows are then sampled, seeded by (``settings.seed``, ``first_frame`` = the movie index of
    ``adu[0]``, the window's number in this call).
    """
    photons, pedestal, spots = frame_candidates(task, adu, settings.threshold)
    sigma = task.optics.sigma_psf
    table = _fit_candidates(task, photons, pedestal, spots, settings)
    for _ in range(settings.residual_passes):
        # only frames with a window the model does not explain hide a missed emitter
        suspect = np.unique(table["frame"][table["chi2_dof"] > RESIDUAL_CHI2])
        if not len(suspect):
            break
        fitted = _take(table, np.isin(table["frame"], suspect))
        fitted["frame"] = np.searchsorted(suspect, fitted["frame"])
        emitters = _emitter_model(fitted, (len(suspect),) + task.shape, sigma)
        extra = find_spots(photons[suspect] - emitters, pedestal, sigma, settings.threshold,
                           subtracted=emitters)
        extra = _away_from(extra, fitted, RESIDUAL_MIN_DISTANCE, task.height)
        if not len(extra.frame):
            break
        extra = Spots(suspect[extra.frame], extra.row, extra.col, extra.snr)
        again = np.isin(table["frame"], extra.frame)
        kept = _take(table, ~again)
        candidates = _candidates_of(_take(table, again), task).joined(extra)
        refit = _fit_candidates(task, photons, pedestal, candidates, settings)
        refit["window"] = refit["window"] + (kept["window"].max(initial=-1) + 1)
        table = _concat([kept, refit])
    if settings.method == "nuts":
        table = _fit_candidates(task, photons, pedestal, _candidates_of(table, task), settings,
                                sample_first_frame=first_frame)
    return _take(table, np.lexsort((table["x"], table["y"], table["frame"])))


def _candidates_of(table: dict[str, np.ndarray], task: Task) -> Spots:
    """Fitted emitters as candidates for another fit: their pixels and signal-to-noise."""
    return Spots(frame=table["frame"].astype(int),
                 row=np.clip(np.rint(table["y"]), 0, task.height - 1).astype(int),
                 col=np.clip(np.rint(table["x"]), 0, task.width - 1).astype(int),
                 snr=table["snr"])


def _fit_candidates(task: Task, photons: np.ndarray, pedestal: np.ndarray, spots: Spots,
                    settings: LocalizeSettings, sample_first_frame: int | None = None
                    ) -> dict[str, np.ndarray]:
    """Rows of the window fits of the candidates ``spots``; with ``sample_first_frame`` (the
    movie index of the chunk's first frame, for the seeds), NUTS posteriors started from the
    fits."""
    groups = plan_windows(spots.frame, spots.row, spots.col, task.shape, task.optics.sigma_psf,
                          joint=settings.joint, max_emitters=settings.max_emitters)
    parts, window_base = [_empty()], 0
    for group in groups:
        counts, window_pedestal, fitted, start = _start(group, photons, pedestal, task)
        fit = fit_windows(task, counts, window_pedestal, start, group.active, fitted,
                          max_iter=settings.max_iter, tol=settings.tol)
        draws = None if sample_first_frame is None else sample_windows(
            task, counts, window_pedestal, fit, group.active, fitted, seed=settings.seed,
            first_frame=sample_first_frame, first_window=window_base, chains=settings.chains,
            draws=settings.draws, warmup=settings.warmup)
        parts.append(_rows(group, fit, task, window_base, spots.snr[group.members], draws))
        window_base += len(group.frame)
    return _concat(parts)


def _emitter_model(table: dict[str, np.ndarray], shape: tuple[int, ...], sigma: float
                   ) -> np.ndarray:
    """(F, H, W) expected photons of the fitted emitters alone (no background), each drawn in a
    patch of ±4σ about it."""
    model = np.zeros(shape, np.float32)
    if not len(table["x"]):
        return model
    half = int(np.ceil(4 * sigma)) + 1
    offsets = np.arange(-half, half + 1)
    rows = np.rint(table["y"]).astype(int)[:, None] + offsets                  # (M, S)
    cols = np.rint(table["x"]).astype(int)[:, None] + offsets
    ey = np.asarray(physics.pixel_integrated_gaussian(rows, table["y"][:, None], sigma))
    ex = np.asarray(physics.pixel_integrated_gaussian(cols, table["x"][:, None], sigma))
    ey = np.where((rows >= 0) & (rows < shape[1]), ey, 0.0)
    ex = np.where((cols >= 0) & (cols < shape[2]), ex, 0.0)
    patch = table["i0"][:, None, None] * ey[:, :, None] * ex[:, None, :]
    frames = np.broadcast_to(table["frame"].astype(int)[:, None, None], patch.shape)
    np.add.at(model, (frames, np.clip(rows, 0, shape[1] - 1)[:, :, None],
                      np.clip(cols, 0, shape[2] - 1)[:, None, :]), patch)
    return model


def _away_from(spots: Spots, table: dict[str, np.ndarray], distance: float, height: int
               ) -> Spots:
    """The candidates farther than ``distance`` px from every fitted emitter of their frame."""
    if not len(spots.frame) or not len(table["x"]):
        return spots
    from scipy.spatial import cKDTree
    gap = 2.0 * distance + 1.0  # more than the query's reach, fits up to ½ px off the frame
    fitted = frames_apart(table["frame"], table["x"], table["y"], height, gap)
    found = frames_apart(spots.frame, spots.col, spots.row, height, gap)
    near, _ = cKDTree(fitted).query(found, distance_upper_bound=distance)
    return spots.take(~np.isfinite(near))


def _rows(group: WindowGroup, fit: WindowFits, task: Task, window_base: int, snr: np.ndarray,
          draws: WindowDraws | None = None) -> dict[str, np.ndarray]:
    """One row per occupied slot of the group's windows: the Laplace fit's mode and SDs, or,
    with ``draws``, the NUTS posterior's means and SDs and its diagnostics."""
    b, k = fit.mode.shape[0], group.n_slots
    active = group.active.ravel()
    centre, covariance = (fit.mode, fit.covariance) if draws is None else (draws.mean,
                                                                          draws.covariance)
    sd = np.sqrt(np.maximum(np.diagonal(covariance, axis1=1, axis2=2), 0.0))
    x_index, y_index = 2 * np.arange(k), 2 * np.arange(k) + 1
    i0_index = 2 * k + np.arange(k)
    cov_xy = covariance[:, x_index, y_index]
    lo_i0, hi_i0 = task.prior.i0_range
    chi2_dof = fit.chi2 / fit.dof
    mode_i0 = fit.mode[:, i0_index]
    flagged = (~fit.converged | ~fit.positive_definite)[:, None] | (mode_i0 <= lo_i0) \
        | (mode_i0 >= hi_i0) | (chi2_dof > CHI2_FLAG)[:, None]

    def per_window(values: np.ndarray) -> np.ndarray:
        return np.repeat(values, k)

    rows = {
        "frame": per_window(group.frame),
        "x": (centre[:, x_index] + group.origin[:, 1:]).ravel(),
        "y": (centre[:, y_index] + group.origin[:, :1]).ravel(),
        "sd_x": sd[:, x_index].ravel(), "sd_y": sd[:, y_index].ravel(),
        "corr_xy": (cov_xy / np.maximum(sd[:, x_index] * sd[:, y_index], 1e-30)).ravel(),
        "i0": centre[:, i0_index].ravel(), "sd_i0": sd[:, i0_index].ravel(),
        "background": per_window(centre[:, -1]), "sd_background": per_window(sd[:, -1]),
        "snr": np.where(group.active, snr, 0.0).ravel(),
        "window": per_window(window_base + np.arange(b)),
        "emitters_in_window": per_window(group.active.sum(1)),
        "chi2_dof": per_window(chi2_dof), "iterations": per_window(fit.iterations),
        "converged": per_window(fit.converged),
        "r_hat": np.full(b * k, np.nan), "ess_bulk": np.full(b * k, np.nan),
        "divergences": np.zeros(b * k, int),
    }
    if draws is not None:
        # an emitter's diagnostics: its x, y, i0 and the window's b
        own = np.stack([x_index, y_index, i0_index, np.full(k, 3 * k)], 1)      # (K, 4)
        r_hat, ess = draws.rhat[:, own].max(-1), draws.ess_bulk[:, own].min(-1)  # (B, K)
        divergent = draws.divergences[:, None] > 0
        flagged = flagged | ~(r_hat <= RHAT_MAX) | ~(ess >= ESS_MIN) | divergent
        rows.update({"r_hat": r_hat.ravel(), "ess_bulk": ess.ravel(),
                     "divergences": per_window(draws.divergences)})
    rows["flagged"] = flagged.ravel()
    return _take(rows, active)


def localize_chunk(task: Task, adu: np.ndarray, settings: LocalizeSettings, first_frame: int
                   ) -> dict[str, np.ndarray]:
    """:func:`localize_frames` of a chunk of a movie starting at frame ``first_frame``, with
    ``frame`` counted over the movie (``window`` still over the chunk)."""
    rows = localize_frames(task, adu, settings, first_frame=first_frame)
    rows["frame"] = rows["frame"] + first_frame
    return rows


def localize_movie(movie: Movie, task: Task, settings: LocalizeSettings | None = None, *,
                   progress: bool = False, client: Any = None,
                   store: Any = None) -> dict[str, np.ndarray]:
    """:func:`localize_frames` over a whole movie, chunk by chunk (``settings.chunk_frames``),
    here or on the Dask workers of ``client`` (a ``distributed.Client``; the same rows either
    way); ``frame`` counts from 0 over the movie and ``window`` over all of it. With a
    :class:`~bayes_smlm.acquisition.resume.ChunkStore`, each chunk's rows are saved as they come
    and chunks it already holds (for the same frames) are taken from it."""
    from tqdm.auto import tqdm

    from bayes_smlm.acquisition.resume import frames_digest
    from bayes_smlm.cluster.chunks import run_chunks
    settings = settings or LocalizeSettings()
    parts: dict[int, dict[str, np.ndarray]] = {}
    digests: dict[int, str] = {}
    with tqdm(total=len(movie), desc="localize", unit="frame", disable=not progress) as bar:
        def keep(index: int, rows: dict[str, np.ndarray]) -> None:
            if index in digests:
                store.save(index, digests.pop(index), rows)
            parts[index] = rows
            bar.update(min(settings.chunk_frames, len(movie) - index * settings.chunk_frames))

        def chunks():
            for i, (first, adu) in enumerate(movie.chunks(settings.chunk_frames)):
                done = None if store is None else store.load(i, adu)
                if done is not None:
                    keep(i, done)
                    continue
                if store is not None:
                    digests[i] = frames_digest(adu)
                yield i, (task, adu, settings, first)

        run_chunks(localize_chunk, chunks(), keep, client=client)
    windows = 0
    for index in sorted(parts):  # windows numbered over the movie, in frame order
        rows = parts[index]
        rows["window"] = rows["window"] + windows
        windows = int(rows["window"].max()) + 1 if len(rows["window"]) else windows
    return _concat([_empty()] + [parts[i] for i in sorted(parts)])
