"""Per-pixel sCMOS camera maps from calibration stacks (``bayes-smlm calibrate-camera``).

The camera model (eq. 1): ``ADU = g · Poisson(λ) + Normal(o, w²)`` per pixel. Dark frames (no
light, λ = 0) give the offset o (their mean) and the readout variance w² (their variance, ADU²).
Flat fields at several light levels k give, per pixel, the mean m_k and variance v_k; the
photon-transfer relation ``v_k − w² = g (m_k − o)`` is fitted through the origin by iteratively
reweighted least squares (weights 1/Var(v_k) = (T_k − 1) / 2v̂_k², v̂_k the fitted line's
variance: weights from the noisy v_k themselves would bias g low), so the
gain needs no knowledge of the light level and each pixel's quantum efficiency stays out of it.

Every estimate comes with its standard error per pixel: the offset's √(w²/T), the readout
variance's w²·√(2/(T − 1)), the gain's from the fit. Their size is set by the frame counts alone:
a pixel's relative gain error is ≈ √(2/(T − 1)) / √levels (6.4 % for 5 levels of 100 frames: a
median |error| ≈ 4.3 %); a 2 % median needs ≈ 450 frames per level.

That is what ``localize`` feels: a pixel's photons are (ADU − o)/g, so a gain map off by a few
per cent adds that share of a bright spot's photons as noise the likelihood does not know, and
the stated uncertainties come out too small. Measured on a simulated sparse movie (AMD EPYC,
150 frames): z SD 1.17 / 1.10 (x / y) with maps from 200 dark + 5 × 100 flat frames (gain error
4.3 %), 1.06 / 1.00 with 5 × 400 (2.1 %), 1.00 / 0.96 with 800 + 5 × 1600 (1.1 %), 1.00 / 0.95
with the true maps; the offset and readout-variance maps' errors changed nothing. Told the
gain map's error (``localize --gain-se``, :func:`relative_gain_se`), ``localize`` takes it into
each window's covariance (:func:`~bayes_smlm.acquisition.window_fit.gain_error_widened`): z SD
1.03 / 0.97 with the 5 × 100 maps on the same movie. The precision lost stays lost (RMSE 1.20 /
1.16× the CRLB of the true maps, against 1.03 / 0.98 with them): only more flat frames buy it back.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bayes_smlm.errors import ConfigError

MIN_FRAMES = 20  # a per-pixel variance from fewer is too noisy to be a map (±32 %)
SATURATED_MAX = 1e-4  # share of a stack's pixel values at the file's maximum it tolerates
BRIGHTER_SDS = 3.0  # a flat's median signal must exceed this many readout SDs
LEVEL_SPREAD = 1.2  # the brightest level's median signal over the dimmest's, at least
GAIN_SE_WARN = 0.035  # median relative gain SE above which `localize` would be overconfident
CHUNK = 64  # frames read at a time


@dataclass(frozen=True)
class StackMoments:
    """Per-pixel mean and variance of one calibration stack (ADU, ADU²), over ``frames``."""

    mean: np.ndarray
    var: np.ndarray
    frames: int
    saturated: float  # share of values at the file's maximum (0 for float files)


@dataclass(frozen=True)
class CameraMaps:
    """Per-pixel offset (ADU), readout variance (ADU²) and gain (ADU/photon), each with its
    standard error, and the flats' median signals (ADU above the offset)."""

    offset: np.ndarray
    readout_var: np.ndarray
    gain: np.ndarray
    offset_se: np.ndarray
    readout_var_se: np.ndarray
    gain_se: np.ndarray
    levels: tuple[float, ...]


def stack_moments(path: str | Path, argument: str) -> StackMoments:
    """Mean and variance of every pixel of a TIFF stack, a chunk at a time (Chan's pairwise
    update, in float64: the stack never sits in memory whole)."""
    from bayes_smlm.acquisition.movie import Movie

    movie = Movie(path, argument=argument)
    try:
        total, mean, m2, at_max = 0, None, None, 0
        for _, chunk in movie.chunks(CHUNK):
            chunk = chunk.astype(np.float64)
            if movie.saturation is not None:
                at_max += int(np.count_nonzero(chunk >= movie.saturation))
            n_b = len(chunk)
            mean_b = chunk.mean(0)
            m2_b = ((chunk - mean_b) ** 2).sum(0)
            if mean is None:
                total, mean, m2 = n_b, mean_b, m2_b
                continue
            delta = mean_b - mean
            grown = total + n_b
            mean = mean + delta * n_b / grown
            m2 = m2 + m2_b + delta**2 * total * n_b / grown
            total = grown
    finally:
        movie.close()
    if total < MIN_FRAMES:
        raise ConfigError(
            argument,
            f"{Path(path).name} has {total} frames; a per-pixel variance "
            f"needs at least {MIN_FRAMES}",
        )
    assert mean is not None and m2 is not None  # a stack of MIN_FRAMES or more had chunks
    return StackMoments(mean, m2 / (total - 1), total, at_max / (total * mean.size))


def calibrate(
    dark: StackMoments, flats: Sequence[StackMoments], names: Sequence[str] = ()
) -> CameraMaps:
    """Offset, readout variance and gain maps (module docstring) from the moments of the dark
    stack and of two or more flat stacks at different light levels."""
    names = list(names) or [f"flat {k + 1}" for k in range(len(flats))]
    offset, readout_var = dark.mean, dark.var
    readout_sd = np.sqrt(np.median(readout_var))
    levels = []
    for flat, name in zip(flats, names):
        if flat.mean.shape != offset.shape:
            raise ConfigError(
                "flat",
                f"{name} has frames of {flat.mean.shape[0]} x "
                f"{flat.mean.shape[1]} px, the dark frames "
                f"{offset.shape[0]} x {offset.shape[1]}",
            )
        if flat.saturated > SATURATED_MAX:
            raise ConfigError(
                "flat",
                f"{name}: {100 * flat.saturated:.2f} % of its pixel values "
                "sit at the most the file can hold (saturated): the "
                "light there is unknown; use a dimmer level",
            )
        signal = float(np.median(flat.mean - offset))
        if signal < BRIGHTER_SDS * readout_sd:
            raise ConfigError(
                "flat",
                f"{name} is no brighter than the dark frames (median "
                f"{signal:.1f} ADU above the offset, readout SD "
                f"{readout_sd:.1f} ADU)",
            )
        levels.append(signal)
    if len(levels) < 2 or max(levels) < LEVEL_SPREAD * min(levels):
        raise ConfigError(
            "flat",
            f"needs flats at two or more light levels (got "
            f"{len(levels)} level(s), median signals "
            f"{', '.join(f'{v:.0f}' for v in levels)} ADU): the "
            "photon-transfer fit has nothing to check its line against",
        )
    x = np.stack([f.mean - offset for f in flats])  # (K, H, W) ADU
    y = np.stack([f.var - readout_var for f in flats])  # ADU²
    frames = np.array([f.frames for f in flats], float)[:, None, None]
    # weights from the fitted line, not the noisy v_k (which would favour low draws: bias)
    gain = np.sum(x * y, 0) / np.sum(x * x, 0)
    for _ in range(3):
        predicted = np.maximum(gain * x + readout_var, 1e-12)
        weight = (frames - 1) / (2.0 * predicted**2)
        sxx = np.sum(weight * x * x, 0)
        gain = np.sum(weight * x * y, 0) / sxx
    return CameraMaps(
        offset=offset,
        readout_var=readout_var,
        gain=gain,
        offset_se=np.sqrt(readout_var / dark.frames),
        readout_var_se=readout_var * np.sqrt(2.0 / (dark.frames - 1)),
        gain_se=1.0 / np.sqrt(sxx),
        levels=tuple(levels),
    )


def relative_gain_se(maps: CameraMaps) -> float:
    """The gain map's relative standard error as one number, ``localize --gain-se``: the root
    mean square of ``gain_se / gain`` over the pixels (the extra variance it adds is what
    matters, so the mean of squares, not the median)."""
    return float(np.sqrt(np.mean((maps.gain_se / np.abs(maps.gain)) ** 2)))


def write_camera_maps(folder: str | Path, maps: CameraMaps) -> dict[str, Path]:
    """``offset.tif``, ``readout_var.tif``, ``gain.tif`` (float32, what ``--set camera.*=``
    takes) and their ``*_se.tif`` standard errors into ``folder``, each atomically."""
    import tifffile

    from bayes_smlm.io.atomic import atomic_path

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name in ("offset", "readout_var", "gain", "offset_se", "readout_var_se", "gain_se"):
        paths[name] = folder / f"{name}.tif"
        with atomic_path(paths[name]) as tmp:
            tifffile.imwrite(tmp, getattr(maps, name).astype(np.float32), photometric="minisblack")
    return paths


__all__ = [
    "CameraMaps",
    "StackMoments",
    "calibrate",
    "relative_gain_se",
    "stack_moments",
    "write_camera_maps",
]
