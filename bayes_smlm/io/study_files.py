"""What every study writes besides its report, so ``bayes-smlm report DIR`` can rebuild it.

A study folder holds ``config.json`` (study name, preset, seed, resolved settings), ``metrics.json``
(every number of the report), ``frames.npz`` (the simulated frames and their truth), the NetCDF
posteriors under ``posteriors/`` and the figures; ``report.md`` is rendered from those files only.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bayes_smlm.errors import ConfigError
from bayes_smlm.io.atomic import (
    OutputError,
    hidden_sibling,
    os_reason,
    read_npz,
    write_json,
    write_npz,
)

CONFIG = "config.json"
METRICS = "metrics.json"
FRAMES = "frames.npz"
POSTERIORS = "posteriors"


def write_study_config(
    out: Path, study: str, preset: str, seed: int, settings: dict[str, Any], **extra: Any
) -> Path:
    """Write the resolved configuration of a study run."""
    return write_json(
        out / CONFIG,
        {"study": study, "preset": preset, "seed": seed, "settings": settings, **extra},
    )


def read_json(out: Path, name: str, required: tuple[str, ...] = ()) -> dict[str, Any]:
    """A JSON object of a study folder holding the ``required`` keys, or a one-line error naming
    the file and what is wrong with it."""
    path = Path(out) / name
    if not path.is_file():
        raise ConfigError("dir", f"{path} not found: is {out} a study report folder?")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(
            "dir",
            f"{path} is not valid JSON ({getattr(err, 'msg', err)}); "
            "re-run the study to rewrite it",
        ) from None
    if not isinstance(data, dict) or not data:
        raise ConfigError(
            "dir",
            f"{path} holds no study results (expected a JSON object with "
            "the study's keys); re-run the study to rewrite it",
        )
    missing = [key for key in required if key not in data]
    if missing:
        raise ConfigError(
            "dir", f"{path} lacks {', '.join(missing)}; re-run the study to rewrite it"
        )
    return data


def save_frames(out: Path, adu: np.ndarray, kde: np.ndarray, theta: np.ndarray) -> Path:
    return write_npz(out / FRAMES, adu=adu, kde=kde, theta=theta)


def load_frames(out: Path) -> dict[str, np.ndarray]:
    path = Path(out) / FRAMES
    if not path.is_file():
        raise ConfigError("dir", f"{path} not found: re-run the study to recreate it")
    return read_npz(path, ("adu", "kde", "theta"))


METHOD_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,99}")
STUDY_FILES = (CONFIG, METRICS, "report.md")  # a folder holding one of these is a study's


def posterior_path(out: Path, method: str) -> Path:
    """``out/posteriors/METHOD.nc``; ``method`` is read from files, so it must be a plain name
    (letters, digits, ``_ . + -``; no path separators, no ``..``) — a one-line error otherwise."""
    if not METHOD_NAME.fullmatch(str(method)) or ".." in str(method):
        raise ConfigError(
            "dir",
            f"{out}: the method name {str(method)[:60]!r} in its files is "
            "not a plain name; the folder was not written by a study",
        )
    return Path(out) / POSTERIORS / f"{method}.nc"


def run_in_fresh_folder(out: Path, run: Callable[[Path], Path]) -> Path:
    """``run(staging)`` in an empty hidden sibling of ``out``, which then replaces ``out``: a
    study folder holds one finished run or the one before it, never parts of two.

    ``out`` must be new, empty, or a study folder (it holds a ``config.json``, ``metrics.json``
    or ``report.md``): any other folder is refused rather than replaced. Returns ``run``'s path
    moved under ``out``. The caller holds ``out`` (:func:`bayes_smlm.io.locks.hold_output`).
    """
    out = Path(out)
    if out.is_dir() and any(out.iterdir()) and not any((out / n).is_file() for n in STUDY_FILES):
        raise ConfigError(
            "out",
            f"{out} holds files that are not a study's; give a new or empty "
            "folder (a study replaces its folder as a whole)",
        )
    staging, replaced = hidden_sibling(out, "partial"), hidden_sibling(out, "replaced")
    for leftover in (staging, replaced):  # of a run that was interrupted
        shutil.rmtree(leftover, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        result = Path(run(staging))
        if out.exists():
            os.replace(out, replaced)
        os.replace(staging, out)
    except OSError as err:
        kept = "holds the previous run as it was" if out.exists() else "was not made"
        raise OutputError(
            f"could not write the study into {out} ({os_reason(err)}); {out} {kept}"
        ) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(replaced, ignore_errors=True)
    return out / result.relative_to(staging) if result.is_relative_to(staging) else result


def check_one_run(out: Path, config: dict[str, Any], metrics: dict[str, Any]) -> None:
    """A one-line error unless ``config.json`` and ``metrics.json`` of ``out`` come from one run
    (the same study, preset and seed)."""
    made_by = metrics.get("provenance", {})
    differ = [
        key
        for key in ("study", "preset", "seed")
        if key in made_by and made_by[key] != config.get(key)
    ]
    if differ:
        raise ConfigError(
            "dir",
            f"{out}: {CONFIG} and {METRICS} come from different runs "
            f"({', '.join(f'{k} {config.get(k)!r} vs {made_by[k]!r}' for k in differ)}); "
            "re-run the study into its own folder",
        )
