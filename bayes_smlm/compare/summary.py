"""Side-by-side comparison of posterior methods against a reference and the truth.

:func:`compare_methods` runs every NumPy metric of this package on what each method returned
(θ draws where it has them; KDE mean and variance maps always; KDE samples where it kept them)
and returns plain nested dicts, ready for ``metrics.json``; :func:`comparison_dataset` is the
thin xarray layer (dims ``method`` × ``frame``) for interactive work.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from bayes_smlm.compare import schema
from bayes_smlm.compare.crlb_gaps import posterior_crlb_gaps, sqrt_crlb_at, truth_order
from bayes_smlm.compare.entropy import (
    draws_covariance,
    gaussian_entropy,
    knn_entropy,
    total_gaussian_entropy,
)
from bayes_smlm.compare.kde_calibration import LEVELS, kde_coverage, signal_mask, theta_kde_samples
from bayes_smlm.compare.maps import variance_agreement
from bayes_smlm.compare.regions import region_summary
from bayes_smlm.compare.sbc import interval_coverage, sbc_ranks
from bayes_smlm.forward.config import Task
from bayes_smlm.methods.diagnostics import over_coordinates
from bayes_smlm.methods.result import PosteriorResult

KDE_SAMPLES = 64  # S per frame for KDE interval coverage: the DDPM's default K, for every method


def kde_samples_of(result: PosteriorResult, n_samples: int = KDE_SAMPLES):
    """Per-frame KDE samples of a result (θ draws pushed forward, or the samples it kept), or
    None when it has neither."""
    if result.theta is not None:
        return theta_kde_samples(result.theta_flat(), result.task, n_samples)
    samples = result.extra.get("kde_samples")
    return None if samples is None else iter(samples)


def _aligned_draws(result: PosteriorResult, theta_true: np.ndarray) -> np.ndarray:
    """(F, S, N, 2) draws with emitters in the order of the truth."""
    flat = result.theta_flat()
    order = truth_order(flat.mean(axis=1), theta_true)
    return np.take_along_axis(flat, order[:, None, :, None], axis=2)


def _theta_metrics(
    result: PosteriorResult, theta_true: np.ndarray, sqrt_crlb: np.ndarray
) -> tuple[dict[str, Any], dict[str, Any]]:
    draws = _aligned_draws(result, theta_true)
    f, s, n, _ = draws.shape
    flat = draws.reshape(f, s, 2 * n)
    gaps = posterior_crlb_gaps(draws, theta_true, sqrt_crlb)
    truth = theta_true.reshape(f, 2 * n)
    gauss = gaussian_entropy(draws_covariance(flat))
    knn = knn_entropy(flat)
    scalars: dict[str, Any] = {
        schema.SD_RATIO["x"].key: float(gaps["sd_ratio_median"][0]),
        schema.SD_RATIO["y"].key: float(gaps["sd_ratio_median"][1]),
        schema.RMSE_RATIO["x"].key: float(gaps["rmse_ratio"][0]),
        schema.RMSE_RATIO["y"].key: float(gaps["rmse_ratio"][1]),
        schema.THETA_ENTROPY_GAUSS.key: float(np.median(gauss)),
        schema.THETA_ENTROPY_KNN.key: float(np.median(knn)),
    }
    if s >= 99:
        sbc = sbc_ranks(flat, truth, n_draws=99, bins=10)
        scalars[schema.SBC_MIN_P.key] = sbc.min_pvalue
        scalars[schema.SBC_RANKS.key] = sbc.ranks.tolist()
    for cov in interval_coverage(flat, truth, LEVELS):
        level = round(cov.level * 100)
        scalars[schema.THETA_COVERAGE[level].key] = cov.fraction
        scalars[schema.THETA_COVERAGE_CI[level].key] = [cov.low, cov.high]
    per_frame = {
        "theta_entropy_gauss": gauss.tolist(),
        "theta_entropy_knn": knn.tolist(),
        "sd_ratio": gaps["sd_ratio"].reshape(f, -1).mean(axis=1).tolist(),
    }
    return scalars, per_frame


def _diagnostics(result: PosteriorResult) -> tuple[dict[str, Any], dict[str, Any]]:
    diag = result.diagnostics
    if diag is None:
        return {}, {}
    rhat, ess_bulk = diag.worst_rhat, diag.smallest_ess_bulk
    ess_tail = over_coordinates(np.nanmin, diag.ess_tail)
    mcse = over_coordinates(np.nanmax, diag.mcse_mean)
    scalars = {
        schema.RHAT_MAX.key: float(np.max(rhat)),
        schema.ESS_BULK_MIN.key: float(np.min(ess_bulk)),
        schema.ESS_TAIL_MIN.key: float(np.min(ess_tail)),
        schema.MCSE_MEAN_MAX.key: float(np.max(mcse)),
        schema.PASS_RATE.key: diag.pass_rate,
    }
    if diag.divergences is not None:
        scalars[schema.DIVERGENCES.key] = int(diag.divergences.sum())
    return scalars, {schema.RHAT_MAX.key: rhat.tolist(), schema.ESS_BULK_MIN.key: ess_bulk.tolist()}


def compare_methods(
    results: Mapping[str, PosteriorResult],
    reference: str,
    task: Task,
    kde_true: np.ndarray,
    theta_true: np.ndarray,
    *,
    kde_samples: int = KDE_SAMPLES,
) -> dict[str, Any]:
    """Every comparison metric for every method, against ``results[reference]`` and the truth.

    A method may have been run on the first F' ≤ F frames only (e.g. an expensive surrogate):
    it is compared on those.

    Returns
    -------
    dict
        ``{"reference", "kde_samples", "signal_threshold", "methods": {name: {"scalars": {…},
        "per_frame": {…}}}}``; see the calibration study's report for every key's meaning.
    """
    ref = results[reference]
    sqrt_crlb = sqrt_crlb_at(task, theta_true)
    mask = signal_mask(ref.kde_mean)
    ref_entropy = total_gaussian_entropy(ref.kde_var, mask)
    out: dict[str, Any] = {"reference": reference, "kde_samples": kde_samples, "methods": {}}
    for name, result in results.items():
        f = result.n_frames
        agreement = variance_agreement(result.kde_var, ref.kde_var[:f])
        entropy = total_gaussian_entropy(result.kde_var, mask[:f])
        scalars: dict[str, Any] = {
            schema.FRAMES.key: f,
            schema.SECONDS_PER_FRAME.key: result.seconds / f,
            schema.VAR_PEARSON.key: agreement.median_pearson,
            schema.VAR_RATIO.key: agreement.median_summed_ratio,
            schema.KDE_ENTROPY.key: float(np.median(entropy)),
            schema.KDE_ENTROPY_GAP.key: float(np.median(entropy - ref_entropy[:f])),
            schema.KDE_ENTROPY_ABOVE.key: float(np.mean(entropy > ref_entropy[:f])),
        }
        per_frame: dict[str, Any] = {
            "var_pearson": agreement.pearson.tolist(),
            "var_ratio": agreement.summed_ratio.tolist(),
            "kde_entropy": entropy.tolist(),
        }
        more, frames = region_summary(
            result.kde_var,
            ref.kde_var,
            ref.kde_mean,
            kde_true,
            theta_true,
            task.hr_shape,
            task.optics.upsampling,
            kde_samples=kde_samples_of(result, kde_samples),
            sigma_psf=task.optics.sigma_psf,
        )
        scalars.update(more)
        per_frame.update(
            {f"region_{k}": v for k, v in frames.items() if k not in ("pearson", "ratio")}
        )  # whole-frame: var_pearson above
        samples = kde_samples_of(result, kde_samples)
        if samples is not None:
            cov = kde_coverage(samples, kde_true[:f], mask[:f])
            for level, attained, c, se in zip(
                cov.levels, cov.attained, cov.coverage, cov.standard_error
            ):
                level = round(level * 100)
                scalars[schema.KDE_COVERAGE[level].key] = float(c)
                scalars[schema.KDE_COVERAGE_SE[level].key] = float(se)
                scalars[schema.KDE_COVERAGE_ATTAINED[level].key] = float(attained)
            scalars.update(cov.z_summary())
            scalars[schema.Z_HISTOGRAM.key] = np.histogram(
                np.clip(cov.z, -6, 6), bins=48, range=(-6, 6)
            )[0].tolist()
            per_frame[schema.KDE_COVERAGE[90].key] = cov.per_frame[:, 1].tolist()
        if result.theta is not None:
            more, frames = _theta_metrics(result, theta_true[:f], sqrt_crlb[:f])
            scalars.update(more)
            per_frame.update(frames)
        more, frames = _diagnostics(result)
        scalars.update(more)
        per_frame.update(frames)
        out["methods"][name] = {"scalars": scalars, "per_frame": per_frame}
    return out


def comparison_dataset(metrics: Mapping[str, Any]):
    """The per-frame metrics of :func:`compare_methods` as an ``xarray.Dataset`` with dims
    ``posterior_method`` × ``frame`` (NaN where a method did not run a frame). The dimension is
    not called ``method``: ``Dataset.sel(method=…)`` is xarray's inexact-match keyword."""
    import xarray as xr

    methods = list(metrics["methods"])
    n = max(len(v) for m in metrics["methods"].values() for v in m["per_frame"].values())
    keys = sorted({k for m in metrics["methods"].values() for k in m["per_frame"]})
    data = {}
    for key in keys:
        arr = np.full((len(methods), n), np.nan)
        for i, name in enumerate(methods):
            values = metrics["methods"][name]["per_frame"].get(key)
            if values is not None:
                arr[i, : len(values)] = values
        data[key] = (("posterior_method", "frame"), arr)
    return xr.Dataset(
        data,
        coords={"posterior_method": methods, "frame": np.arange(n)},
        attrs={"reference": metrics["reference"]},
    )
