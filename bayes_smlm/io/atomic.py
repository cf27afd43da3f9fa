"""File output that never leaves a half-written file: write to a temporary sibling, then rename."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from bayes_smlm.errors import ConfigError


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it over ``path`` atomically.

    The temporary file keeps ``path``'s suffix so writers that dispatch on it (``np.savez``,
    matplotlib) behave as for the final name. On error the temporary file is removed and
    ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}",
                               dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual mode
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def give_usual_modes(folder: str | Path) -> None:
    """chmod a folder made by ``tempfile.mkdtemp`` (0700) and its files to the umask's modes."""
    mask = _umask()
    os.chmod(folder, 0o777 & ~mask)
    for path in Path(folder).iterdir():
        if path.is_file():
            os.chmod(path, 0o666 & ~mask)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def check_suffix(path: str | Path, suffix: str, argument: str = "out") -> Path:
    """``path`` as a Path if it ends in ``suffix``, else a one-line ConfigError."""
    path = Path(path)
    if path.suffix != suffix:
        raise ConfigError(argument, f"must end in {suffix} (got {path.name})")
    return path


def write_text(path: str | Path, text: str) -> Path:
    """Atomically write a text file."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: str | Path, data: Any) -> Path:
    """Atomically write pretty JSON."""
    return write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def write_npz(path: str | Path, **arrays: Any) -> Path:
    """Atomically write an uncompressed ``.npz`` (no pickled objects)."""
    path = check_suffix(path, ".npz")
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
    return path


def read_npz(path: str | Path, required: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """Read an ``.npz`` without unpickling; check that ``required`` arrays are present."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError("file", f"file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as data:
            out = {k: data[k] for k in data.files}
    except Exception as err:
        raise ConfigError("file", f"cannot read {path} as .npz ({err})") from None
    missing = [k for k in required if k not in out]
    if missing:
        raise ConfigError("file", f"{path} lacks arrays {missing}")
    return out
