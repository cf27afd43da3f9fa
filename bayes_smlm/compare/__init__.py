"""Comparison of posterior methods: NumPy metrics at the core, thin xarray/ArviZ layers on top."""

from .maps import VarianceAgreement, variance_agreement

__all__ = ["VarianceAgreement", "variance_agreement"]
