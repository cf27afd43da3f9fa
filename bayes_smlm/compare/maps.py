"""Agreement of per-pixel KDE marginal-variance maps between a method and a reference (NumPy)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class VarianceAgreement:
    """Per-frame agreement of variance maps (method vs reference).

    Attributes
    ----------
    pearson : (F,) ndarray
        Pearson correlation of the two maps over pixels, per frame.
    summed_ratio : (F,) ndarray
        Σ var_method / Σ var_reference, per frame.
    """

    pearson: np.ndarray
    summed_ratio: np.ndarray

    @property
    def median_pearson(self) -> float:
        return float(np.median(self.pearson))

    @property
    def median_summed_ratio(self) -> float:
        return float(np.median(self.summed_ratio))


def variance_agreement(var: np.ndarray, reference: np.ndarray) -> VarianceAgreement:
    """Pearson correlation and summed-variance ratio of ``var`` against ``reference``, per frame.

    Parameters
    ----------
    var, reference : (F, H, W) ndarray
        Per-pixel marginal variances of the KDE (KDE units²).

    Raises
    ------
    ValueError
        If the shapes differ or a reference map is constant (its correlation is undefined).
    """
    var, reference = np.asarray(var, np.float64), np.asarray(reference, np.float64)
    if var.shape != reference.shape or var.ndim != 3:
        raise ValueError(
            f"variance maps must share an (F, H, W) shape (got {var.shape} and {reference.shape})"
        )
    a = var.reshape(len(var), -1)
    b = reference.reshape(len(reference), -1)
    a_c, b_c = a - a.mean(axis=1, keepdims=True), b - b.mean(axis=1, keepdims=True)
    norm_b = np.sqrt((b_c**2).sum(axis=1))
    if np.any(norm_b == 0):
        raise ValueError("a reference variance map is constant; its correlation is undefined")
    norm_a = np.sqrt((a_c**2).sum(axis=1))
    pearson = np.where(
        norm_a > 0, (a_c * b_c).sum(axis=1) / (np.maximum(norm_a, 1e-300) * norm_b), 0.0
    )
    return VarianceAgreement(pearson=pearson, summed_ratio=a.sum(axis=1) / b.sum(axis=1))


def variance_ratio_map(var: np.ndarray, reference: np.ndarray, floor: float = 1e-6) -> np.ndarray:
    """Per-pixel log10 of var / reference, both floored at ``floor`` (KDE units²) so pixels where
    both are ≈ 0 read 0 instead of 0/0."""
    return np.log10(np.maximum(var, floor) / np.maximum(reference, floor))


def variance_difference_map(var: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Per-pixel var − reference (KDE units²)."""
    return np.asarray(var, np.float64) - np.asarray(reference, np.float64)
