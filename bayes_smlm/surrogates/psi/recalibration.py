"""Post-hoc recalibration of a surrogate's per-pixel spread, fitted on separate simulated frames.

A named option, never the raw default: reports show raw and recalibrated numbers side by side.
The map is a function of the surrogate's own output only (no truth, no reference at use time):
pixels are binned by the surrogate's per-pixel sample mean m (KDE units), and each bin b has an SD
scale s_b = √(Σ var_reference / Σ var_surrogate) over the bin's pixels of the *fitting* frames
(exact posteriors of frames simulated for this purpose, disjoint from any scored frame). A sample
y becomes m + s(m)·(y − m): the sample mean is kept, the per-pixel variance is multiplied by s(m)².
Bins of m ≈ 0, where the exact variance is ≈ 0 and a diffusion model leaves a noise floor, get
s ≈ 0; the bins on the emitters correct the spread where the signal is.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from bayes_smlm.errors import ConfigError
from bayes_smlm.surrogates.settings import EARLIER_SAMPLER

# Bin edges over the surrogate's per-pixel mean, KDE units (one kernel peaks at 1).
DEFAULT_EDGES = (0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.35, 0.6)
MIN_PIXELS = 100  # a bin with fewer fitting pixels keeps s = 1
# records written before ``fitted_on`` named its solver and steps were fitted on the then default
LEGACY_SAMPLER = EARLIER_SAMPLER


@dataclass(frozen=True)
class SpreadRecalibration:
    """Per-bin SD scales over the surrogate's per-pixel mean.

    Attributes
    ----------
    edges : tuple of float
        Inner bin edges (KDE units); bin 0 is below ``edges[0]``, the last above ``edges[-1]``.
    sd_scale : tuple of float
        s_b for each of the len(edges) + 1 bins.
    pixels : tuple of int
        Fitting pixels per bin.
    fitted_on : dict
        Provenance: task, frames, seed, reference method, sampler.
    """

    edges: tuple[float, ...]
    sd_scale: tuple[float, ...]
    pixels: tuple[int, ...]
    fitted_on: dict[str, Any]

    def __post_init__(self) -> None:
        if len(self.sd_scale) != len(self.edges) + 1 or len(self.pixels) != len(self.sd_scale):
            raise ValueError("sd_scale and pixels need one entry per bin (len(edges) + 1)")
        if not all(np.isfinite(self.sd_scale)) or min(self.sd_scale) < 0:
            raise ValueError(f"sd_scale must be finite and >= 0 (got {self.sd_scale})")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SpreadRecalibration:
        """The recalibration a checkpoint's config records, checked: increasing finite bin
        edges, one finite positive scale per bin; a one-line ConfigError otherwise (NaN scales
        would turn every variance map into NaN)."""
        try:
            edges = np.asarray(data["edges"], np.float64)
            scales = np.asarray(data["sd_scale"], np.float64)
            pixels = tuple(int(n) for n in data["pixels"])
            fitted_on = dict(data.get("fitted_on", {}))
        except (KeyError, TypeError, ValueError) as err:
            raise ConfigError("checkpoint", f"its recalibration is not readable ({err})") from None
        if (
            edges.ndim != 1
            or scales.shape != (edges.size + 1,)
            or len(pixels) != scales.size
            or not np.isfinite(edges).all()
            or np.any(np.diff(edges) <= 0)
            or not np.isfinite(scales).all()
            or np.any(scales < 0)
        ):
            raise ConfigError(
                "checkpoint",
                "its recalibration needs increasing finite edges and "
                "one finite scale >= 0 per bin (edges + 1, with a "
                f"pixel count each); got edges {edges.tolist()!s:.60}, "
                f"scales {scales.tolist()!s:.60}",
            )
        return cls(
            edges=tuple(edges.tolist()),
            sd_scale=tuple(scales.tolist()),
            pixels=pixels,
            fitted_on=fitted_on,
        )

    @property
    def sampler(self) -> tuple[str, int]:
        """(solver, steps) of the Ψ samples the scales were fitted on: the only sampler they
        hold for (another sampler spreads its samples differently)."""
        if "solver" in self.fitted_on:
            return str(self.fitted_on["solver"]), int(self.fitted_on["steps"])
        return LEGACY_SAMPLER

    def scale_map(self, mean: np.ndarray) -> np.ndarray:
        """s(m) for every pixel of a mean map (any shape)."""
        return np.asarray(self.sd_scale)[np.digitize(mean, self.edges)]

    def apply(self, samples: np.ndarray) -> np.ndarray:
        """Recalibrated samples (F, K, H, W) → same shape, float32."""
        samples = np.asarray(samples, np.float32)
        mean = samples.mean(axis=1, keepdims=True)
        return (mean + self.scale_map(mean) * (samples - mean)).astype(np.float32)


def fit_spread_recalibration(
    mean: np.ndarray,
    var: np.ndarray,
    reference_var: np.ndarray,
    fitted_on: dict[str, Any],
    edges: tuple[float, ...] = DEFAULT_EDGES,
) -> SpreadRecalibration:
    """Fit s_b = √(Σ reference var / Σ surrogate var) per bin of the surrogate's mean.

    Parameters
    ----------
    mean, var : (F, H, W) arrays
        The surrogate's per-pixel sample mean and variance on the fitting frames.
    reference_var : (F, H, W) array
        The exact posterior variance on the same frames.
    """
    bins = np.digitize(np.asarray(mean), edges)
    var, reference_var = np.asarray(var, np.float64), np.asarray(reference_var, np.float64)
    scales, counts = [], []
    for b in range(len(edges) + 1):
        m = bins == b
        counts.append(int(m.sum()))
        total = var[m].sum()
        scales.append(
            float(np.sqrt(reference_var[m].sum() / total))
            if counts[-1] >= MIN_PIXELS and total > 0
            else 1.0
        )
    return SpreadRecalibration(
        edges=tuple(edges), sd_scale=tuple(scales), pixels=tuple(counts), fitted_on=fitted_on
    )


def recalibration_of(config: dict[str, Any]) -> SpreadRecalibration | None:
    """The fitted recalibration recorded in a Ψ checkpoint's config, or None."""
    data = config.get("recalibration")
    return None if data is None else SpreadRecalibration.from_dict(data)
