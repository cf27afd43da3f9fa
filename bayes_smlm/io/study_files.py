"""What every study writes besides its report, so ``bayes-smlm report DIR`` can rebuild it.

A study folder holds ``config.json`` (study name, preset, seed, resolved settings), ``metrics.json``
(every number of the report), ``frames.npz`` (the simulated frames and their truth), the NetCDF
posteriors under ``posteriors/`` and the figures; ``report.md`` is rendered from those files only.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from bayes_smlm.errors import ConfigError
from bayes_smlm.io.atomic import read_npz, write_json, write_npz

CONFIG = "config.json"
METRICS = "metrics.json"
FRAMES = "frames.npz"
POSTERIORS = "posteriors"


def write_study_config(out: Path, study: str, preset: str, seed: int, settings: dict[str, Any],
                       **extra: Any) -> Path:
    """Write the resolved configuration of a study run."""
    return write_json(out / CONFIG, {"study": study, "preset": preset, "seed": seed,
                                     "settings": settings, **extra})


def read_json(out: Path, name: str, required: tuple[str, ...] = ()) -> dict[str, Any]:
    """A JSON object of a study folder holding the ``required`` keys, or a one-line error naming
    the file and what is wrong with it."""
    path = Path(out) / name
    if not path.is_file():
        raise ConfigError("dir", f"{path} not found: is {out} a study report folder?")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ConfigError("dir", f"{path} is not valid JSON ({getattr(err, 'msg', err)}); "
                                 "re-run the study to rewrite it") from None
    if not isinstance(data, dict) or not data:
        raise ConfigError("dir", f"{path} holds no study results (expected a JSON object with "
                                 "the study's keys); re-run the study to rewrite it")
    missing = [key for key in required if key not in data]
    if missing:
        raise ConfigError("dir", f"{path} lacks {', '.join(missing)}; re-run the study to "
                                 "rewrite it")
    return data


def save_frames(out: Path, adu: np.ndarray, kde: np.ndarray, theta: np.ndarray) -> Path:
    return write_npz(out / FRAMES, adu=adu, kde=kde, theta=theta)


def load_frames(out: Path) -> dict[str, np.ndarray]:
    path = Path(out) / FRAMES
    if not path.is_file():
        raise ConfigError("dir", f"{path} not found: re-run the study to recreate it")
    return read_npz(path, ("adu", "kde", "theta"))


def posterior_path(out: Path, method: str) -> Path:
    return Path(out) / POSTERIORS / f"{method}.nc"
