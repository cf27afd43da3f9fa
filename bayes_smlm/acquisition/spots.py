"""Candidate emitters on whole frames: a PSF-matched difference-of-Gaussians filter of the photon
image, divided by its own noise SD, and its local maxima above a threshold.

Working in photons with the per-pixel camera maps makes the threshold a signal-to-noise ratio
that means the same on every pixel of an sCMOS chip: a hot pixel (large read-noise variance w²)
has a large noise SD and does not pass, and an emitter of any brightness passes once its filtered
peak stands ``threshold`` noise SDs above the local background.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter, maximum_filter

BACKGROUND_SCALE = 3.0  # the DoG's wide Gaussian, in PSF widths (local background estimate)


@dataclass(frozen=True)
class Spots:
    """Candidates of a chunk of frames, flat: ``frame`` (M,) index within the chunk, ``row``,
    ``col`` (M,) whole pixels of the peak, ``snr`` (M,) filtered signal / its noise SD."""

    frame: np.ndarray
    row: np.ndarray
    col: np.ndarray
    snr: np.ndarray

    def take(self, which: np.ndarray) -> Spots:
        """The candidates ``which`` (mask or indices)."""
        return Spots(self.frame[which], self.row[which], self.col[which], self.snr[which])

    def joined(self, other: Spots) -> Spots:
        """These candidates, then ``other``'s."""
        return Spots(
            *(
                np.concatenate([getattr(self, f), getattr(other, f)])
                for f in ("frame", "row", "col", "snr")
            )
        )

    def first_per_pixel(self) -> tuple[Spots, np.ndarray]:
        """The first candidate on each (frame, row, col) — later ones on the same pixel (two
        fitted emitters rounding to one pixel) repeat it — and (M,) the index among those of
        each candidate's pixel."""
        keys = np.stack([self.frame, self.row, self.col], 1)
        _, first, pixel = np.unique(keys, axis=0, return_index=True, return_inverse=True)
        return self.take(first), pixel.ravel()


def _filtered_variance(variance: np.ndarray, sigma: float) -> np.ndarray:
    """Variance of the DoG-filtered image of independent pixels with variances ``variance``
    (F, H, W): the pixel variances convolved with the squared filter weights w². With
    w = G_σ − G_sσ (s = :data:`BACKGROUND_SCALE`) and G_a·G_b = G_c / (2π(a² + b²)),
    c² = a²b²/(a² + b²), w² is three Gaussians, so three separable filters do it."""
    wide = BACKGROUND_SCALE * sigma
    out = np.zeros_like(variance)
    for a, b, weight in ((sigma, sigma, 1.0), (sigma, wide, -2.0), (wide, wide, 1.0)):
        c = a * b / np.hypot(a, b)
        out += (
            weight
            / (2 * np.pi * (a * a + b * b))
            * gaussian_filter(variance, (0.0, c, c), mode="nearest")
        )
    return out


def find_spots(
    photons: np.ndarray,
    pedestal: np.ndarray | float,
    sigma_psf: float,
    threshold: float,
    subtracted: np.ndarray | None = None,
) -> Spots:
    """Local maxima of the DoG signal-to-noise image above ``threshold``.

    Parameters
    ----------
    photons : (F, H, W) array
        ``(ADU − o)/g``, photons per pixel (background included).
    pedestal : (H, W) array or scalar
        Read-noise variance in photons², ``w²/g²``.
    sigma_psf : float
        PSF σ, LR px.
    threshold : float
        Least signal-to-noise ratio of a candidate.
    subtracted : (F, H, W) array, optional
        Expected photons already subtracted from ``photons`` (fitted emitters, when ``photons``
        is a residual): their shot noise is still in the image. The shot-noise variance is the
        local level — ``photons`` smoothed over 3 PSF widths — plus these.
    """
    snr = snr_image(photons, pedestal, sigma_psf, subtracted)
    peaks = (snr >= threshold) & (snr == maximum_filter(snr, size=(1, 3, 3), mode="nearest"))
    frame, row, col = np.nonzero(peaks)
    return Spots(frame=frame, row=row, col=col, snr=snr[frame, row, col])


def snr_image(
    photons: np.ndarray,
    pedestal: np.ndarray | float,
    sigma_psf: float,
    subtracted: np.ndarray | None = None,
) -> np.ndarray:
    """(F, H, W) DoG-filtered signal over its noise SD, every pixel: the arguments of
    :func:`find_spots`."""
    photons = np.asarray(photons, np.float32)
    smooth = gaussian_filter(photons, (0.0, sigma_psf, sigma_psf), mode="nearest")
    wide = BACKGROUND_SCALE * sigma_psf
    local = gaussian_filter(photons, (0.0, wide, wide), mode="nearest")
    signal = smooth - local
    shot = local if subtracted is None else local + subtracted
    variance = np.maximum(shot, 0.0) + pedestal
    noise_sd = np.sqrt(np.maximum(_filtered_variance(variance, sigma_psf), 1e-12))
    return signal / noise_sd
