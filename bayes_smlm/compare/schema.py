"""One schema for the per-method scalars of a comparison: every key that
:func:`~bayes_smlm.compare.summary.compare_methods` writes under ``methods.<name>.scalars`` in
``metrics.json``, with the label, number format and meaning the reports use.

Writers and readers refer to the :class:`Metric` objects below, never to their key strings, so a
key is typed once. :data:`SCALARS` lists them all (the report's glossary and the tests read it).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

COVERAGE_LEVELS = (50, 90, 95)  # % — the levels of every interval-coverage metric
CROWDING_CLASSES = ("0", "1", "2", ">=3")  # true emitters within 2 LR px of a signal pixel
# nearest-neighbour distance of a signal pixel's nearest true emitter, in σ_psf
SEPARATION_EDGES = (0.5, 1.0, 2.0)
SEPARATION_CLASSES = ("<0.5", "0.5-1", "1-2", ">=2")
# Keys of one row of BY_CROWDING (one row per class, plus ATTAINED: the levels an exact
# posterior attains with the same number of samples).
CROWD_FRAMES, CROWD_PIXELS, CROWD_Z_SD, CROWD_ATTAINED = "frames", "pixels", "z_sd", "attained"
CROWD_COVERAGE = {lv: f"coverage_{lv}" for lv in COVERAGE_LEVELS}


@dataclass(frozen=True)
class Metric:
    """A scalar of ``metrics.json``.

    Attributes
    ----------
    key : str
        Its key under ``scalars``.
    label : str
        Column header in the reports.
    fmt : str
        ``format`` spec of a table cell.
    doc : str
        What it measures, with units.
    """

    key: str
    label: str
    fmt: str = ".3f"
    doc: str = ""

    def of(self, scalars: Mapping[str, Any], default: Any = None) -> Any:
        """Its value in a method's scalars (``default`` where the method has none)."""
        return scalars.get(self.key, default)

    def cell(self, scalars: Mapping[str, Any]) -> str:
        """Its value formatted for a table; "—" where missing or not finite."""
        return format_cell(self.of(scalars), self.fmt)


def format_cell(value: Any, fmt: str = ".3f") -> str:
    """A table cell: ``value`` by ``fmt``, "—" for None or a non-finite float."""
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "—"
    return format(value, fmt) if isinstance(value, (float, int)) else str(value)


SCALARS: dict[str, Metric] = {}


def _metric(key: str, label: str, fmt: str = ".3f", doc: str = "") -> Metric:
    if key in SCALARS:
        raise ValueError(f"metric {key!r} is declared twice")
    SCALARS[key] = metric = Metric(key, label, fmt, doc)
    return metric


def _family(members, key: str, label: str, fmt: str, doc: str) -> dict:
    """One metric per member (a coverage level in %, an axis); ``{}`` in the texts stands for
    the member."""
    return {m: _metric(key.format(m), label.format(m), fmt, doc.format(m)) for m in members}


# cost
FRAMES = _metric("frames", "frames", "d", "frames the method was scored on")
SECONDS_PER_FRAME = _metric(
    "seconds_per_frame",
    "s/frame",
    ".3f",
    "wall time per frame, s: PosteriorResult.seconds (checkpoint loading "
    "and compilation in, imports and frame reading out) / frames",
)

# variance maps, whole frame
VAR_PEARSON = _metric(
    "var_pearson_median",
    "var map r (median)",
    ".3f",
    "Pearson r of the per-pixel variance map with the reference's, median over frames",
)
VAR_RATIO = _metric(
    "var_ratio_median",
    "Σvar ratio (median)",
    ".2f",
    "summed variance over the reference's, median over frames",
)

# variance maps by region
SIGNAL_PEARSON = _metric(
    "signal_pearson_median",
    "r (signal)",
    ".3f",
    "as var map r, on pixels where the reference mean ≥ 0.05",
)
SIGNAL_RATIO = _metric(
    "signal_ratio_median", "Σvar ratio (signal)", ".2f", "as Σvar ratio, on the signal pixels"
)
BACKGROUND_FLOOR = _metric(
    "background_floor_median",
    "background SD floor",
    ".2e",
    "median posterior SD where the reference mean < 0.01 (KDE units)",
)
REFERENCE_FLOOR = _metric(
    "reference_background_floor_median",
    "reference floor",
    ".2e",
    "the reference's own SD floor on the same pixels",
)
BACKGROUND_SHARE = _metric(
    "background_share_median",
    "variance share on background",
    ".3f",
    "share of the method's summed variance on the background",
)

# entropies
KDE_ENTROPY = _metric(
    "kde_entropy_median",
    "KDE entropy (nats, median)",
    ".1f",
    "Gaussian entropy ½ log(2πe σ²) summed over the signal pixels, nats",
)
KDE_ENTROPY_GAP = _metric(
    "kde_entropy_minus_reference_median",
    "Δ entropy vs reference",
    "+.1f",
    "KDE entropy minus the reference's, median over frames, nats",
)
KDE_ENTROPY_ABOVE = _metric(
    "kde_entropy_above_reference",
    "entropy above reference",
    ".2f",
    "fraction of frames whose KDE entropy exceeds the reference's",
)
THETA_ENTROPY_GAUSS = _metric(
    "theta_entropy_gauss_median",
    "θ entropy Gaussian",
    ".2f",
    "Gaussian entropy of the θ draws, median over frames, nats",
)
THETA_ENTROPY_KNN = _metric(
    "theta_entropy_knn_median",
    "θ entropy k-NN",
    ".2f",
    "k-nearest-neighbour entropy of the θ draws, median, nats",
)

# KDE calibration
KDE_COVERAGE = _family(
    COVERAGE_LEVELS,
    "kde_coverage_{}",
    "KDE cover {} %",
    ".3f",
    "fraction of signal pixels whose true KDE is in the central {} % interval, mean over frames",
)
KDE_COVERAGE_SE = _family(
    COVERAGE_LEVELS,
    "kde_coverage_{}_se",
    "SE of KDE cover {} %",
    ".3f",
    "standard error of that mean over frames",
)
KDE_COVERAGE_ATTAINED = _family(
    COVERAGE_LEVELS,
    "kde_coverage_{}_attained",
    "attainable {} %",
    ".3f",
    "the level an exact posterior attains with S samples",
)
Z_MEAN = _metric("z_mean", "z mean", ".2f", "mean of z = (y0 − mean)/SD over signal pixels")
Z_SD = _metric("z_sd", "z SD", ".2f", "SD of z over signal pixels")
Z_ABS_GT_3 = _metric("z_abs_gt_3", "P(|z| > 3)", ".4f", "fraction of signal pixels with |z| > 3")
Z_PIXELS = _metric("z_pixels", "z pixels", "d", "signal pixels behind the z statistics")
Z_HISTOGRAM = _metric("z_histogram", "z histogram", "", "counts of z in 48 bins over [−6, 6]")
BY_CROWDING = _metric(
    "by_crowding",
    "by crowding",
    "",
    "coverage and z SD per crowding class (CROWDING_CLASSES) and 'attained'",
)
BY_SEPARATION = _metric(
    "by_separation",
    "by separation",
    "",
    "coverage and z SD per nearest-neighbour separation class "
    "(SEPARATION_CLASSES, in σ_psf) and 'attained'",
)

# θ calibration and CRLB gaps
SBC_MIN_P = _metric(
    "sbc_min_pvalue",
    "SBC min p",
    ".3f",
    "smallest χ² p-value of the SBC rank histograms over coordinates",
)
SBC_RANKS = _metric("sbc_ranks", "SBC ranks", "", "ranks of the truth among 99 thinned draws")
THETA_COVERAGE = _family(
    COVERAGE_LEVELS,
    "theta_coverage_{}",
    "θ cover {} %",
    ".3f",
    "fraction of true coordinates inside the central {} % interval",
)
THETA_COVERAGE_CI = _family(
    COVERAGE_LEVELS,
    "theta_coverage_{}_ci",
    "θ cover {} % CI",
    "",
    "Clopper–Pearson 95 % interval of that fraction",
)
SD_RATIO = _family(
    "xy", "sd_ratio_{}", "SD/√CRLB {}", ".2f", "posterior SD of {} over √CRLB, median"
)
RMSE_RATIO = _family(
    "xy", "rmse_ratio_{}", "RMSE/√CRLB {}", ".2f", "RMSE of the posterior mean of {} over √CRLB"
)

# MCMC diagnostics
RHAT_MAX = _metric("rhat_max", "max R-hat", ".3f", "worst rank R-hat over frames and coordinates")
ESS_BULK_MIN = _metric("ess_bulk_min", "min bulk ESS", ".0f", "smallest bulk ESS")
ESS_TAIL_MIN = _metric("ess_tail_min", "min tail ESS", ".0f", "smallest tail ESS")
MCSE_MEAN_MAX = _metric("mcse_mean_max", "max MCSE (px)", ".4f", "largest MCSE of a mean, LR px")
PASS_RATE = _metric(
    "diagnostics_pass_rate",
    "diagnostics pass rate",
    ".2f",
    "fraction of frames with R-hat ≤ 1.01, bulk ESS ≥ 400 and no divergence",
)
DIVERGENCES = _metric("divergences", "divergences", "d", "divergent transitions, all frames")
