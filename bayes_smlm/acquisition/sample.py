"""Structured samples imaged by an sCMOS camera: a TIFF movie, its camera maps and the truth.

The sample is a few filaments (smooth curves across the field of view), densely labelled; in each
frame a fresh random set of labels blinks on — ``emitters_per_frame`` of them, each at least
``min_distance`` px from the others — with photons drawn uniformly from ``i0_range``, on a flat
background. The camera has per-pixel offset, gain and read-noise maps like a calibrated sCMOS
(a few per cent of "hot" pixels with tens of times the median read noise). Frames are drawn with
the package's forward model (eq. 1) and stored as uint16 ADU, as a camera writes them; the
read-noise map given back is what a dark-frame calibration of such a camera measures (the
rounding to whole ADU adds 1/12 ADU²).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from bayes_smlm.errors import ConfigError
from bayes_smlm.forward import physics
from bayes_smlm.forward.checks import check_int

QUANTISATION_VAR = 1.0 / 12.0  # ADU², variance of rounding to whole ADU


@dataclass(frozen=True)
class MovieSettings:
    """What :func:`simulate_movie` images.

    Attributes
    ----------
    frames, height, width : int
        Movie size (frames, LR px).
    emitters_per_frame : int
    min_distance : float
        Least distance between two emitters of a frame, LR px.
    i0_range : (float, float)
        Photons per emitter, uniform.
    background : float
        Photons per pixel.
    filaments : int
        Curves in the sample.
    sigma_psf : float
        PSF σ, LR px.
    pixel_size_nm : float
    offset, gain : float
        Median camera offset (ADU) and gain (ADU/photon); per-pixel spread 3 ADU and 5 %.
    readout_var : float
        Median read-noise variance, ADU²; ``hot_fraction`` of pixels have 30–300× it.
    hot_fraction : float
    """

    frames: int = 150
    height: int = 64
    width: int = 64
    emitters_per_frame: int = 6
    min_distance: float = 6.0
    i0_range: tuple[float, float] = (500.0, 3000.0)
    background: float = 10.0
    filaments: int = 4
    sigma_psf: float = 0.92
    pixel_size_nm: float = 108.3
    offset: float = 100.0
    gain: float = 2.0
    readout_var: float = 4.0
    hot_fraction: float = 0.02

    def __post_init__(self) -> None:
        for name in ("frames", "height", "width", "emitters_per_frame", "filaments"):
            check_int(name, getattr(self, name))
        if not 0 < self.i0_range[0] < self.i0_range[1]:
            raise ConfigError("i0_range", f"needs 0 < low < high (got {self.i0_range})")


@dataclass
class SimulatedMovie:
    """A simulated acquisition: ``movie`` (F, H, W) uint16 ADU, the camera maps (H, W) that a
    calibration gives (offset ADU, gain ADU/photon, readout_var ADU²), and the truth: positions
    ``theta`` (F, N, 2) (x, y) in LR px (pixel centres at integers) and photons ``i0`` (F, N)."""

    movie: np.ndarray
    offset: np.ndarray
    gain: np.ndarray
    readout_var: np.ndarray
    theta: np.ndarray
    i0: np.ndarray
    settings: MovieSettings

    def write(self, folder: str | Path) -> dict[str, Path]:
        """Write ``movie.tif``, ``offset.tif``, ``gain.tif``, ``readout_var.tif`` (float32) and
        ``truth.npz`` into ``folder``, each atomically; returns their paths."""
        import tifffile

        from bayes_smlm.io.atomic import atomic_path, write_npz

        folder = Path(folder)
        paths = {}
        for name, array in (
            ("movie", self.movie),
            ("offset", self.offset),
            ("gain", self.gain),
            ("readout_var", self.readout_var),
        ):
            paths[name] = folder / f"{name}.tif"
            with atomic_path(paths[name]) as tmp:
                tifffile.imwrite(
                    tmp,
                    array if name == "movie" else array.astype(np.float32),
                    photometric="minisblack",
                )  # frames as pages, never RGB planes
        paths["truth"] = write_npz(
            folder / "truth.npz",
            theta=self.theta,
            i0=self.i0,
            settings=np.asarray(json.dumps(dataclasses.asdict(self.settings))),
        )
        return paths


def filament_curves(
    rng: np.random.Generator, settings: MovieSettings, points: int = 4000
) -> np.ndarray:
    """(filaments, points, 2) densely sampled smooth curves crossing the field, LR px."""
    h, w = settings.height, settings.width
    t = np.linspace(0.0, 1.0, points)
    curves = []
    for _ in range(settings.filaments):
        start = rng.uniform([0, 0], [w - 1, h - 1])
        angle = rng.uniform(0, np.pi)
        direction = np.array([np.cos(angle), np.sin(angle)])
        normal = np.array([-direction[1], direction[0]])
        length = 1.5 * max(h, w)
        bend = rng.uniform(-0.1, 0.1, size=3) * max(h, w)
        along = (t - 0.5) * length
        wiggle = sum(b * np.sin((k + 1) * np.pi * t) for k, b in enumerate(bend))
        curves.append(start + along[:, None] * direction + wiggle[:, None] * normal)
    return np.stack(curves)


def _draw_frame_positions(
    rng: np.random.Generator, sites: np.ndarray, settings: MovieSettings
) -> np.ndarray:
    """N positions on the sample's sites, inside the frame, pairwise ≥ min_distance apart."""
    for _ in range(1000):
        chosen: list[np.ndarray] = []
        for index in rng.permutation(len(sites)):
            candidate = sites[index]
            if all(np.hypot(*(candidate - c)) >= settings.min_distance for c in chosen):
                chosen.append(candidate)
                if len(chosen) == settings.emitters_per_frame:
                    return np.stack(chosen)
    raise ConfigError(
        "emitters_per_frame",
        f"cannot place {settings.emitters_per_frame} emitters "
        f"{settings.min_distance:g} px apart on this sample; ask for fewer",
    )


def camera_maps(
    rng: np.random.Generator, settings: MovieSettings
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(offset ADU, gain ADU/photon, readout variance ADU²) maps of a simulated sCMOS."""
    shape = (settings.height, settings.width)
    offset = settings.offset + 3.0 * rng.standard_normal(shape)
    gain = settings.gain * (1.0 + 0.05 * rng.standard_normal(shape))
    readout_var = settings.readout_var * rng.lognormal(0.0, 0.3, shape)
    hot = rng.random(shape) < settings.hot_fraction
    readout_var[hot] *= rng.uniform(30.0, 300.0, hot.sum())
    return offset, gain, readout_var


def simulate_movie(settings: MovieSettings, seed: int) -> SimulatedMovie:
    """Simulate a movie of a filament sample (see the module docstring); same seed, same movie."""
    rng = np.random.default_rng(seed)
    offset, gain, readout_var = camera_maps(rng, settings)
    margin = 1.0
    sites = filament_curves(rng, settings).reshape(-1, 2)
    inside = (
        (sites[:, 0] >= margin)
        & (sites[:, 0] <= settings.width - 1 - margin)
        & (sites[:, 1] >= margin)
        & (sites[:, 1] <= settings.height - 1 - margin)
    )
    sites = sites[inside]
    theta = np.stack([_draw_frame_positions(rng, sites, settings) for _ in range(settings.frames)])
    i0 = rng.uniform(*settings.i0_range, size=theta.shape[:2])
    camera = physics.CameraArrays(
        *(jnp.asarray(a, jnp.float32) for a in (offset, gain, readout_var))
    )
    shape = (settings.height, settings.width)

    def frame(key: jax.Array, positions: jax.Array, photons: jax.Array) -> jax.Array:
        omega = physics.expected_photons(
            positions, photons, settings.background, settings.sigma_psf, shape
        )
        return physics.sample_adu(key, omega, camera)

    keys = jax.random.split(jax.random.PRNGKey(seed), settings.frames)
    adu = np.asarray(
        jax.jit(jax.vmap(frame))(
            keys, jnp.asarray(theta, jnp.float32), jnp.asarray(i0, jnp.float32)
        )
    )
    movie = np.clip(np.rint(adu), 0, np.iinfo(np.uint16).max).astype(np.uint16)
    return SimulatedMovie(
        movie=movie,
        offset=offset,
        gain=gain,
        readout_var=readout_var + QUANTISATION_VAR,
        theta=theta.astype(np.float32),
        i0=i0.astype(np.float32),
        settings=settings,
    )


CALIBRATION_LEVELS = (50.0, 150.0, 400.0, 1000.0, 2500.0)  # photons/px of the flat stacks


def calibration_stacks(
    simulated: SimulatedMovie,
    seed: int,
    dark_frames: int = 200,
    flat_frames: int = 100,
    levels: tuple[float, ...] = CALIBRATION_LEVELS,
) -> dict[str, np.ndarray]:
    """What a user records to calibrate the movie's camera: a dark stack (shutter closed) and
    flat stacks of uniform light, ``levels`` photons per pixel, as uint16 ADU like the movie.

    Returns
    -------
    dict
        ``"dark"``: (dark_frames, H, W); ``"flat1"`` … : (flat_frames, H, W) per level.
    """
    rng = np.random.default_rng(seed)
    shape = simulated.offset.shape
    read_sd = np.sqrt(simulated.readout_var - QUANTISATION_VAR)  # rounding adds it back

    def stack(photons: float, frames: int) -> np.ndarray:
        counts = rng.poisson(photons, (frames,) + shape) if photons else 0.0
        adu = (
            simulated.gain * counts
            + simulated.offset
            + read_sd * rng.standard_normal((frames,) + shape)
        )
        return np.clip(np.rint(adu), 0, np.iinfo(np.uint16).max).astype(np.uint16)

    stacks = {"dark": stack(0.0, dark_frames)}
    stacks.update({f"flat{k + 1}": stack(level, flat_frames) for k, level in enumerate(levels)})
    return stacks
