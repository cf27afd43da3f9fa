"""Frozen, validated task configuration: optics, camera, scene prior.

Units follow docs/conventions.md §2: positions and σx in low-resolution (LR) pixels, σy in
high-resolution (HR) pixels, intensities in photons, camera offset in ADU, gain in ADU/photon,
readout variance in ADU². Camera and background values are scalars or per-pixel (H, W) maps.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bayes_smlm.errors import ConfigError
from bayes_smlm.forward.checks import (
    MapLike,
    check_choice,
    check_map,
    check_number,
    check_range,
)
from bayes_smlm.forward.count_prior import check_count


@dataclass(frozen=True, eq=False)
class Optics:
    """Point-spread function and KDE grid.

    Attributes
    ----------
    sigma_psf : float
        σx, standard deviation of the Gaussian PSF in LR pixels.
    sigma_kde : float
        σy, KDE kernel width in HR pixels (paper text: 3.0; authors' experiments: 1.5).
    upsampling : int
        u, HR pixels per LR pixel along each axis.
    pixel_size_nm : float
        Size of one LR pixel in the sample plane, nm.
    """

    sigma_psf: float = 0.92
    sigma_kde: float = 1.5
    upsampling: int = 4
    pixel_size_nm: float = 108.3


@dataclass(frozen=True, eq=False)
class Camera:
    """Camera model of eq. 1: ``ADU = gain * Poisson(ω) + Normal(offset, readout_var)``.

    Each attribute is a scalar or an (H, W) map (sCMOS).

    Attributes
    ----------
    offset : float or ndarray
        Dark offset o, ADU.
    gain : float or ndarray
        Gain g, ADU per photo-electron; > 0.
    readout_var : float or ndarray
        Readout variance w², ADU²; >= 0.
    """

    offset: MapLike = 100.0
    gain: MapLike = 1.0
    readout_var: MapLike = 5.0


@dataclass(frozen=True, eq=False)
class ScenePrior:
    """Prior over scenes: N emitters i.i.d. uniform on a disc about the frame centre.

    Attributes
    ----------
    n_emitters : int
        Emitters per frame.
    radius : float
        Disc radius in LR pixels.
    i0 : float
        Photons per emitter (the fixed value used by the simulator).
    background : float or ndarray
        Background photons per pixel, scalar or (H, W) map.
    i0_range : (float, float)
        Uniform prior on i0 when intensity is a latent variable, photons.
    background_range : (float, float)
        Uniform prior on a scalar background when it is a latent variable, photons/pixel.
    brightness : {"fixed", "drawn"}
        What the simulator does with intensity and background: ``fixed`` gives every emitter
        ``i0`` photons on the ``background``; ``drawn`` draws each emitter's i0 from
        U(``i0_range``) and each frame's scalar background from U(``background_range``) — the
        priors that inference with unknown i0 and b assumes (``i0`` and ``background`` then
        serve only as typical values, e.g. for φ's input scale).
    count : str
        The prior over the emitter count (:mod:`bayes_smlm.forward.count_prior`): ``fixed``
        (``n_emitters`` in every frame), ``poisson`` (mean ``n_emitters``) or a range ``LO-HI``.
    """

    n_emitters: int = 1
    radius: float = 7.0
    i0: float = 200.0
    background: MapLike = 0.0
    i0_range: tuple[float, float] = (20.0, 2000.0)
    background_range: tuple[float, float] = (0.0, 50.0)
    brightness: str = "fixed"
    count: str = "fixed"


@dataclass(frozen=True, eq=False)
class Task:
    """A simulated SMLM task: frame size, optics, camera and scene prior.

    Build tasks with :func:`make_task` (which validates); tasks are immutable.
    """

    name: str
    height: int = 20
    width: int = 20
    optics: Optics = field(default_factory=Optics)
    camera: Camera = field(default_factory=Camera)
    prior: ScenePrior = field(default_factory=ScenePrior)

    @property
    def shape(self) -> tuple[int, int]:
        """LR frame shape (H, W)."""
        return (self.height, self.width)

    @property
    def hr_shape(self) -> tuple[int, int]:
        """KDE shape (u·H, u·W)."""
        u = self.optics.upsampling
        return (u * self.height, u * self.width)

    @property
    def centre(self) -> tuple[float, float]:
        """Frame centre (x, y) in LR pixels: ((W-1)/2, (H-1)/2)."""
        return ((self.width - 1) / 2.0, (self.height - 1) / 2.0)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict; maps become nested lists."""

        def plain(v: Any) -> Any:
            if isinstance(v, np.ndarray):
                return v.tolist()
            if isinstance(v, tuple):
                return list(v)
            return v

        out: dict[str, Any] = {"name": self.name, "height": self.height, "width": self.width}
        for section in SECTIONS:
            obj = getattr(self, section)
            out[section] = {f.name: plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
        if self.prior.count == "fixed":  # the default, left out: tasks written before the field
            del out["prior"]["count"]  # existed keep their JSON (cache digests, checkpoints)
        return out

    def to_json(self) -> str:
        """Canonical JSON string (sorted keys), also used to compare tasks."""
        return json.dumps(self.to_dict(), sort_keys=True)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Task) and self.to_json() == other.to_json()

    def __hash__(self) -> int:
        return hash(self.to_json())


SECTIONS = {"optics": Optics, "camera": Camera, "prior": ScenePrior}

# Flat key -> section, so `--set gain=2` and `--set camera.gain=2` both work.
FIELD_SECTION = {f.name: sec for sec, cls in SECTIONS.items() for f in dataclasses.fields(cls)}
MAP_FIELDS = {"offset", "gain", "readout_var", "background"}
BRIGHTNESS = ("fixed", "drawn")  # ScenePrior.brightness
# Frames, photon counts and likelihoods are float32, which holds whole numbers exactly only up to
# 2^24 ≈ 1.7e7: photons per emitter or pixel, ADU offsets and read-noise variances beyond it are
# not arithmetic this package can do (nor what a camera records: a pixel's full well is ≈ 1e5).
COUNT_LIMIT = 2.0**24
GAIN_LIMIT = 2.0**16  # ADU per photon: one photon would fill a 16-bit camera's whole range
TEXT_FIELDS = {"name", "brightness", "count"}


def validate(task: Task) -> Task:
    """Check every value of ``task``; return a task whose maps are read-only float arrays.

    Raises
    ------
    ConfigError
        Naming the first offending field (``section.field``) and its allowed range.
    """
    height = int(check_number("height", task.height, lo=4, hi=1024, integer=True))
    width = int(check_number("width", task.width, lo=4, hi=1024, integer=True))
    shape = (height, width)
    o, c, p = task.optics, task.camera, task.prior
    optics = Optics(
        sigma_psf=check_number("optics.sigma_psf", o.sigma_psf, lo=0.0, lo_open=True, hi=50.0),
        sigma_kde=check_number("optics.sigma_kde", o.sigma_kde, lo=0.0, lo_open=True, hi=200.0),
        upsampling=int(check_number("optics.upsampling", o.upsampling, lo=1, hi=16, integer=True)),
        pixel_size_nm=check_number("optics.pixel_size_nm", o.pixel_size_nm, lo=0.0, lo_open=True),
    )
    camera = Camera(
        offset=check_map("camera.offset", c.offset, shape, lo=-COUNT_LIMIT, hi=COUNT_LIMIT),
        gain=check_map("camera.gain", c.gain, shape, lo=0.0, lo_open=True, hi=GAIN_LIMIT),
        readout_var=check_map("camera.readout_var", c.readout_var, shape, lo=0.0, hi=COUNT_LIMIT),
    )
    max_radius = min(height, width) / 2.0
    prior = ScenePrior(
        n_emitters=int(check_number("prior.n_emitters", p.n_emitters, lo=1, hi=1000, integer=True)),
        radius=check_number("prior.radius", p.radius, lo=0.0, lo_open=True, hi=max_radius),
        i0=check_number("prior.i0", p.i0, lo=0.0, lo_open=True, hi=COUNT_LIMIT),
        background=check_map("prior.background", p.background, shape, lo=0.0, hi=COUNT_LIMIT),
        i0_range=check_range("prior.i0_range", p.i0_range, lo=0.0, lo_open=True, hi=COUNT_LIMIT),
        background_range=check_range(
            "prior.background_range", p.background_range, lo=0.0, lo_open=False, hi=COUNT_LIMIT
        ),
        brightness=check_choice("prior.brightness", p.brightness, BRIGHTNESS),
        count=check_count("prior.count", p.count),
    )
    if not isinstance(task.name, str) or not task.name:
        raise ConfigError("name", "must be a non-empty string")
    return Task(
        name=task.name, height=height, width=width, optics=optics, camera=camera, prior=prior
    )


def task_from_dict(data: Mapping[str, Any]) -> Task:
    """Inverse of :meth:`Task.to_dict` (validates)."""
    unknown = set(data) - {"name", "height", "width", *SECTIONS}
    if unknown:
        raise ConfigError("config", f"unknown keys {sorted(unknown)}")
    sections = {}
    for sec, cls in SECTIONS.items():
        values = dict(data.get(sec, {}))
        allowed = {f.name for f in dataclasses.fields(cls)}
        extra = set(values) - allowed
        if extra:
            raise ConfigError(f"config.{sec}", f"unknown keys {sorted(extra)}")
        for key in MAP_FIELDS & set(values):
            if isinstance(values[key], list):
                try:
                    values[key] = np.asarray(values[key], dtype=np.float64)
                except (TypeError, ValueError):
                    raise ConfigError(
                        f"config.{sec}.{key}", "must be a number or a rectangular array of numbers"
                    ) from None
        for key in ("i0_range", "background_range"):
            if key in values:
                values[key] = tuple(values[key])
        sections[sec] = cls(**values)
    return validate(
        Task(
            name=data.get("name", "custom"),
            height=data.get("height", 20),
            width=data.get("width", 20),
            **sections,
        )
    )


def task_from_json(text: str) -> Task:
    """Parse a task from its JSON string (as stored in simulated ``.npz`` files)."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise ConfigError("config", f"is not valid JSON ({err.msg})") from None
    return task_from_dict(data)


def with_overrides(task: Task, overrides: Mapping[str, Any]) -> Task:
    """Return a validated copy of ``task`` with fields replaced.

    Parameters
    ----------
    overrides : mapping
        Keys are ``field`` or ``section.field`` (``gain``, ``camera.gain``, ``height``); values are
        numbers, (H, W) arrays for map fields, or (low, high) pairs for the prior ranges.
    """
    top: dict[str, Any] = {}
    per_section: dict[str, dict[str, Any]] = {sec: {} for sec in SECTIONS}
    for key, value in overrides.items():
        section, name = _resolve_key(key)
        (top if section is None else per_section[section])[name] = value
    sections = {
        sec: dataclasses.replace(getattr(task, sec), **vals) for sec, vals in per_section.items()
    }
    return validate(dataclasses.replace(task, **top, **sections))


def _resolve_key(key: str) -> tuple[str | None, str]:
    if key in ("height", "width", "name"):
        return None, key
    if "." in key:
        section, name = key.split(".", 1)
        if section in SECTIONS and FIELD_SECTION.get(name) == section:
            return section, name
    elif key in FIELD_SECTION:
        return FIELD_SECTION[key], key
    known = sorted(["height", "width"] + [f"{s}.{n}" for n, s in FIELD_SECTION.items()])
    raise ConfigError("set", f"unknown key {key!r}; known keys: {', '.join(known)}")


def parse_override(text: str) -> tuple[str, Any]:
    """Parse one ``key=value`` from the command line.

    ``value`` is a number, ``low,high`` for ranges, or a path to a ``.npy``/``.tif`` map for the
    camera and background fields.
    """
    if "=" not in text:
        raise ConfigError("set", f"expected key=value (got {text!r})")
    key, raw = (s.strip() for s in text.split("=", 1))
    section, name = _resolve_key(key)
    if name in ("i0_range", "background_range"):
        return key, tuple(_parse_float(key, part) for part in raw.split(","))
    if name in MAP_FIELDS and not _looks_numeric(raw):
        return key, read_map(raw, argument=key)
    if name in TEXT_FIELDS:
        return key, raw
    return key, _parse_float(key, raw)


def _looks_numeric(raw: str) -> bool:
    try:
        float(raw)
    except ValueError:
        return False
    return True


def _parse_float(key: str, raw: str) -> float:
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(key, f"must be a number (got {raw!r})") from None


def read_map(path: str | Path, *, argument: str) -> np.ndarray:
    """Read a per-pixel map from ``.npy``, ``.tif``/``.tiff`` or ``.csv`` (comma-separated rows)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(argument, f"map file not found: {p}")
    suffix = p.suffix.lower()
    try:
        if suffix == ".npy":
            arr = np.load(p, allow_pickle=False)
        elif suffix in (".tif", ".tiff"):
            import tifffile

            arr = tifffile.imread(p)
        elif suffix in (".csv", ".txt"):
            arr = np.loadtxt(p, delimiter=",", ndmin=2)
        else:
            raise ConfigError(argument, f"map file must be .npy, .tif or .csv (got {p.name})")
    except ConfigError:
        raise
    except Exception as err:  # unreadable file: report it in one line
        raise ConfigError(argument, f"cannot read map {p}: {err}") from None
    arr = np.asarray(arr)
    if arr.dtype.kind not in "iuf":  # strings, booleans, objects; complex would lose a part
        raise ConfigError(argument, f"map {p.name} must hold real numbers (got dtype {arr.dtype})")
    return arr.astype(np.float64)
