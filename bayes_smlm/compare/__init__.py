"""Comparison of posterior methods: NumPy metrics at the core, thin xarray/ArviZ layers on top.

- :mod:`.maps` — variance maps: Pearson correlation, summed ratio, ratio/difference maps;
- :mod:`.entropy` — per-pixel Gaussian KDE entropies, θ entropies (Gaussian, k-NN);
- :mod:`.crlb_gaps` — posterior SD and estimator RMSE against √CRLB;
- :mod:`.kde_calibration` — coverage of the true KDE by per-pixel intervals, z-scores;
- :mod:`.summary` — all of them for every method (:func:`compare_methods`).
"""

from bayes_smlm.compare.kde_calibration import KDECoverage, kde_coverage, signal_mask
from bayes_smlm.compare.maps import (
    VarianceAgreement,
    variance_agreement,
    variance_difference_map,
    variance_ratio_map,
)
from bayes_smlm.compare.summary import compare_methods, comparison_dataset

__all__ = [
    "KDECoverage",
    "VarianceAgreement",
    "compare_methods",
    "comparison_dataset",
    "kde_coverage",
    "signal_mask",
    "variance_agreement",
    "variance_difference_map",
    "variance_ratio_map",
]
