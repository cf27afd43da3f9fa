"""Finished chunks of a ``localize`` run kept on disk, so that an interrupted run continues.

``localize`` writes each chunk's rows, as soon as they exist, into ``LOCS.csv.partial/`` beside
the output: ``chunk-NNNNNN.npz`` (the rows, and a SHA-256 digest of the chunk's frames) and
``run.json`` (the task and settings of the run). Rerun with the same command, it takes every
chunk whose frames still have the stored digest under the same task and settings, computes the
rest, and removes the folder once the CSV is written. Nothing is assumed: a store of another
task or settings is set aside (its chunks recomputed), and a chunk whose frames changed, or
whose file cannot be read, is computed again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from bayes_smlm.errors import ConfigError
from bayes_smlm.io.atomic import read_npz, write_json, write_npz

RUN_FILE = "run.json"


def partial_folder(out: str | Path) -> Path:
    """``LOCS.csv.partial`` beside ``LOCS.csv``."""
    out = Path(out)
    return out.with_name(out.name + ".partial")


def frames_digest(adu: np.ndarray) -> str:
    """SHA-256 of a chunk's frames as float32 (what the fits saw)."""
    return hashlib.sha256(np.ascontiguousarray(adu, np.float32).tobytes()).hexdigest()


class ChunkStore:
    """The finished chunks of one run (see the module docstring).

    Parameters
    ----------
    folder : Path
        ``LOCS.csv.partial``.
    run : dict
        What the rows depend on besides the frames (task JSON, settings); a store made for
        another run is emptied.
    """

    def __init__(self, folder: str | Path, run: dict[str, Any]):
        self.folder = Path(folder)
        self.run = json.loads(json.dumps(run, sort_keys=True))
        self.resumed = 0
        stored = self._stored_run()
        if stored is not None and stored != self.run:
            shutil.rmtree(self.folder)  # another task or settings: nothing in it is ours
            stored = None
        self.folder.mkdir(parents=True, exist_ok=True)
        if stored is None:
            write_json(self.folder / RUN_FILE, self.run)

    def _stored_run(self) -> dict[str, Any] | None:
        try:
            return json.loads((self.folder / RUN_FILE).read_text())
        except (OSError, ValueError):
            return None

    def _path(self, index: int) -> Path:
        return self.folder / f"chunk-{index:06d}.npz"

    def load(self, index: int, adu: np.ndarray) -> dict[str, np.ndarray] | None:
        """The stored rows of chunk ``index`` if its frames are still ``adu``, else None."""
        path = self._path(index)
        if not path.is_file():
            return None
        try:
            data = read_npz(path, required=("__frames_digest__",))
        except ConfigError:  # cut short by the interruption: compute it again
            return None
        if str(data.pop("__frames_digest__")) != frames_digest(adu):
            return None
        self.resumed += 1
        return data

    def save(self, index: int, adu_digest: str, rows: dict[str, np.ndarray]) -> None:
        write_npz(self._path(index), __frames_digest__=np.asarray(adu_digest), **rows)

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def run_description(task, settings) -> dict[str, Any]:
    """What a chunk's rows depend on besides its frames."""
    return {"task": task.to_json(), "settings": dataclasses.asdict(settings)}


__all__ = ["ChunkStore", "frames_digest", "partial_folder", "run_description"]
