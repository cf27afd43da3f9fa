"""Side-by-side comparison of posterior methods against a reference and the truth.

:func:`compare_methods` runs every NumPy metric of this package on what each method returned
(θ draws where it has them; KDE mean and variance maps always; KDE samples where it kept them)
and returns plain nested dicts, ready for ``metrics.json``; :func:`comparison_dataset` is the
thin xarray layer (dims ``method`` × ``frame``) for interactive work.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from ..calibration import interval_coverage, sbc_ranks
from ..config import Task
from ..methods.result import PosteriorResult
from .crlb_gaps import posterior_crlb_gaps, truth_order
from .entropy import draws_covariance, gaussian_entropy, knn_entropy, total_gaussian_entropy
from .kde_calibration import LEVELS, kde_coverage, signal_mask, theta_kde_samples
from .maps import variance_agreement
from .regions import region_summary

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


def _theta_metrics(result: PosteriorResult, theta_true: np.ndarray,
                   sqrt_crlb: np.ndarray) -> tuple[dict[str, Any], dict[str, Any]]:
    draws = _aligned_draws(result, theta_true)
    f, s, n, _ = draws.shape
    flat = draws.reshape(f, s, 2 * n)
    gaps = posterior_crlb_gaps(draws, theta_true, sqrt_crlb)
    truth = theta_true.reshape(f, 2 * n)
    gauss = gaussian_entropy(draws_covariance(flat))
    knn = knn_entropy(flat)
    scalars = {
        "sd_ratio_x": float(gaps["sd_ratio_median"][0]), "sd_ratio_y": float(gaps["sd_ratio_median"][1]),
        "rmse_ratio_x": float(gaps["rmse_ratio"][0]), "rmse_ratio_y": float(gaps["rmse_ratio"][1]),
        "theta_entropy_gauss_median": float(np.median(gauss)),
        "theta_entropy_knn_median": float(np.median(knn)),
    }
    if s >= 99:
        sbc = sbc_ranks(flat, truth, n_draws=99, bins=10)
        scalars["sbc_min_pvalue"] = sbc.min_pvalue
        scalars["sbc_ranks"] = sbc.ranks.tolist()
    for cov in interval_coverage(flat, truth, LEVELS):
        scalars[f"theta_coverage_{int(cov.level * 100)}"] = cov.fraction
        scalars[f"theta_coverage_{int(cov.level * 100)}_ci"] = [cov.low, cov.high]
    per_frame = {"theta_entropy_gauss": gauss.tolist(), "theta_entropy_knn": knn.tolist(),
                 "sd_ratio": gaps["sd_ratio"].reshape(f, -1).mean(axis=1).tolist()}
    return scalars, per_frame


def _diagnostics(result: PosteriorResult) -> tuple[dict[str, Any], dict[str, Any]]:
    from ..posterior_io import to_datatree
    if result.theta is None or result.theta.shape[0] < 2:
        return {}, {}
    diag = to_datatree(result)["diagnostics"].dataset
    rhat = diag["rhat"].max(["emitter", "axis"]).values
    ess_bulk = diag["ess_bulk"].min(["emitter", "axis"]).values
    ess_tail = diag["ess_tail"].min(["emitter", "axis"]).values
    mcse = diag["mcse_mean"].max(["emitter", "axis"]).values
    scalars = {"rhat_max": float(np.max(rhat)), "ess_bulk_min": float(np.min(ess_bulk)),
               "ess_tail_min": float(np.min(ess_tail)), "mcse_mean_max": float(np.max(mcse)),
               "diagnostics_pass_rate": float(diag.attrs["pass_rate"])}
    if "divergences" in diag:
        scalars["divergences"] = int(diag["divergences"].sum())
    return scalars, {"rhat_max": rhat.tolist(), "ess_bulk_min": ess_bulk.tolist()}


def compare_methods(results: Mapping[str, PosteriorResult], reference: str, task: Task,
                    kde_true: np.ndarray, theta_true: np.ndarray, *,
                    kde_samples: int = KDE_SAMPLES) -> dict[str, Any]:
    """Every comparison metric for every method, against ``results[reference]`` and the truth.

    A method may have been run on the first F' ≤ F frames only (e.g. an expensive surrogate):
    it is compared on those.

    Returns
    -------
    dict
        ``{"reference", "kde_samples", "signal_threshold", "methods": {name: {"scalars": {…},
        "per_frame": {…}}}}``; see the calibration study's report for every key's meaning.
    """
    from .crlb_gaps import sqrt_crlb_at
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
            "frames": f, "seconds_per_frame": result.seconds / f,
            "var_pearson_median": agreement.median_pearson,
            "var_ratio_median": agreement.median_summed_ratio,
            "kde_entropy_median": float(np.median(entropy)),
            "kde_entropy_minus_reference_median": float(np.median(entropy - ref_entropy[:f])),
            "kde_entropy_above_reference": float(np.mean(entropy > ref_entropy[:f])),
        }
        per_frame: dict[str, Any] = {"var_pearson": agreement.pearson.tolist(),
                                     "var_ratio": agreement.summed_ratio.tolist(),
                                     "kde_entropy": entropy.tolist()}
        more, frames = region_summary(
            result.kde_var, ref.kde_var, ref.kde_mean, kde_true, theta_true, task.hr_shape,
            task.optics.upsampling, kde_samples=kde_samples_of(result, kde_samples))
        scalars.update(more)
        per_frame.update({f"region_{k}": v for k, v in frames.items()
                          if k not in ("pearson", "ratio")})
        samples = kde_samples_of(result, kde_samples)
        if samples is not None:
            cov = kde_coverage(samples, kde_true[:f], mask[:f])
            for level, attained, c, se in zip(cov.levels, cov.attained, cov.coverage,
                                              cov.standard_error):
                key = f"kde_coverage_{int(level * 100)}"
                scalars[key], scalars[key + "_se"] = float(c), float(se)
                scalars[key + "_attained"] = float(attained)
            scalars.update(cov.z_summary())
            scalars["z_histogram"] = np.histogram(np.clip(cov.z, -6, 6), bins=48,
                                                  range=(-6, 6))[0].tolist()
            per_frame["kde_coverage_90"] = cov.per_frame[:, 1].tolist()
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
                arr[i, :len(values)] = values
        data[key] = (("posterior_method", "frame"), arr)
    return xr.Dataset(data, coords={"posterior_method": methods, "frame": np.arange(n)},
                      attrs={"reference": metrics["reference"]})
