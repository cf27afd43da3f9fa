"""Per-pixel camera offset and readout variance from a movie's own quiet pixels, for a user
without calibration maps (``localize --camera from-movie``).

Away from every spot, a pixel of an sCMOS movie reads ADU = o_i + g_i·Poisson(b) + N(0, w_i²):
its mean over its quiet frames is o_i + g_i·b and its variance g_i²·b + w_i². With a background b
the same in every frame and pixel, the movie cannot tell g_i from b — **the gain is not
identifiable from such a movie** — so the gain is taken as the scalar the user gives
(``camera.gain``), b from the median pixel's level above the given ``camera.offset``, and then
o_i = mean_i − g·b (offsets relative to the given one) and, where var_i − g²·b exceeds the given
``camera.readout_var`` by :data:`NOISY_SE` standard errors, w_i² = var_i − g²·b (elsewhere the
given value). What this recovers: the per-pixel offsets (to within g_i·b's spread, ≈ 5 % of g·b
for a typical sCMOS) and the readout variance of noisy ("hot") pixels, whose w² is tens to
hundreds of times the median — the pixels that put false emitters and overconfident fits in a
table. What it cannot: per-pixel gain, and readout variances small beside the background's shot
noise g²·b.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.ndimage import maximum_filter

from bayes_smlm.acquisition.spots import find_spots
from bayes_smlm.errors import ConfigError
from bayes_smlm.forward.config import Task

QUIET_RADIUS = 3.0  # PSF σ: pixels within this of a candidate are not quiet in that frame
MIN_QUIET = 10  # quiet frames a pixel needs for its own estimate (else the given scalars)
NOISY_SE = 4.0  # standard errors above the given readout variance that make a pixel noisy
QUANTISATION_VAR = 1.0 / 12.0  # ADU²: the least readout variance a whole-ADU camera shows


@dataclass(frozen=True)
class MovieCamera:
    """Camera maps estimated from a movie: ``offset`` (H, W) ADU, ``readout_var`` (H, W) ADU²
    (the given scalar but at noisy pixels),
    ``gain`` the scalar assumed (ADU/photon), ``background`` the level assumed uniform
    (photons/px), ``quiet_frames`` (H, W) how many frames each pixel's estimate used (pixels with
    fewer than :data:`MIN_QUIET` keep the given scalars), ``noisy`` (H, W) the pixels with a
    readout variance of their own."""

    offset: np.ndarray
    readout_var: np.ndarray
    gain: float
    background: float
    quiet_frames: np.ndarray
    noisy: np.ndarray

    def summary(self) -> str:
        """One line of what was estimated and what was assumed."""
        own = self.quiet_frames >= MIN_QUIET
        return (
            f"camera from the movie: offset of {own.mean():.0%} of pixels from their quiet "
            f"frames (median {np.median(self.quiet_frames):.0f}), readout variance of "
            f"{self.noisy.mean():.1%} (the noisy ones); "
            f"assumed: gain {self.gain:g} ADU/photon in every pixel (a movie of constant "
            f"background cannot tell gain from background) and a uniform background "
            f"({self.background:.2f} photons/px); readout variance median "
            f"{np.median(self.readout_var):.2f} ADU², largest {self.readout_var.max():.0f}"
        )


def camera_from_movie(
    movie: Any, task: Task, *, chunk_frames: int = 500, threshold: float = 6.0
) -> MovieCamera:
    """Estimate the offset and readout-variance maps of ``movie`` (a
    :class:`~bayes_smlm.acquisition.movie.Movie`) from its quiet pixels (module docstring).
    ``task`` gives the scalar camera (``camera.offset``, ``gain``, ``readout_var``) and the PSF
    σ; its camera must not hold maps already."""
    camera = task.camera
    if any(np.ndim(v) for v in (camera.offset, camera.gain, camera.readout_var)):
        raise ConfigError(
            "camera",
            "from-movie estimates the offset and readout-variance maps: "
            "give scalar camera.* values (or drop --camera from-movie)",
        )
    offset, gain, readout_var = (float(v) for v in (camera.offset, camera.gain, camera.readout_var))
    sigma = task.optics.sigma_psf
    reach = 2 * int(np.ceil(QUIET_RADIUS * sigma)) + 1
    total = np.zeros(task.shape)
    squares = np.zeros(task.shape)
    count = np.zeros(task.shape)
    for _, adu in movie.chunks(chunk_frames):
        adu = np.asarray(adu, np.float64)
        photons = (adu - offset) / gain
        spots = find_spots(photons, readout_var / gain**2, sigma, threshold)
        busy = np.zeros(adu.shape, bool)
        busy[spots.frame, spots.row, spots.col] = True
        quiet = ~maximum_filter(busy, size=(1, reach, reach), mode="constant")
        total += np.sum(adu * quiet, 0)
        squares += np.sum(adu**2 * quiet, 0)
        count += quiet.sum(0)
    own = count >= MIN_QUIET
    mean = np.where(own, total / np.maximum(count, 1), np.nan)
    variance = np.where(own, (squares - count * mean**2) / np.maximum(count - 1, 1), np.nan)
    if not own.any():
        raise ConfigError(
            "camera",
            f"from-movie needs pixels quiet in ≥ {MIN_QUIET} frames; "
            "this movie has none (too short or too crowded)",
        )
    background = max((float(np.nanmedian(mean)) - offset) / gain, 0.0)
    offset_map = np.where(own, mean - gain * background, offset)
    # a normal pixel's w² is small beside the background's shot noise g²b, and the gain's
    # spread between pixels (unknown) moves g²b by more than w²: only a readout variance
    # clearly above the given one (a noisy pixel) is the pixel's own
    excess = variance - gain**2 * background - readout_var
    noisy = own & (excess > NOISY_SE * variance * np.sqrt(2.0 / np.maximum(count - 1, 1)))
    readout_map = np.where(
        noisy, np.maximum(variance - gain**2 * background, QUANTISATION_VAR), readout_var
    )
    return MovieCamera(
        offset=offset_map.astype(np.float32),
        readout_var=readout_map.astype(np.float32),
        gain=gain,
        background=background,
        quiet_frames=count.astype(int),
        noisy=noisy,
    )
