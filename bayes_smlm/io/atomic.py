"""File output that never leaves a half-written file and never loses a result.

Every writer goes to a temporary sibling and renames it over the target. Entry points check their
outputs with :func:`check_output_file` / :func:`check_output_dir` *before* any work, so a path that
cannot be written is refused in one line; if writing still fails at the end (a disk filled up, a
folder vanished), the writer keeps the result in the temporary folder and says where
(:class:`OutputError`).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import hashlib
import json
import os
import re
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from bayes_smlm.errors import BayesSMLMError, ConfigError


class OutputError(BayesSMLMError):
    """A result could not be written where asked; the message says where it was kept instead."""


NAME_MAX = 255  # bytes in one file name on every filesystem we write to (ext4, xfs, tmpfs, APFS)
SPACE_MARGIN = 1.05  # a writer's output is a little larger than its arrays (headers, alignment)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it over ``path`` atomically.

    The temporary file keeps ``path``'s suffix so writers that dispatch on it (``np.savez``,
    matplotlib) behave as for the final name, and its name fits the filesystem's limit however
    long ``path``'s is. On error the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    prefix, suffix = temporary_name_parts(path)
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual mode
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def temporary_name_parts(path: Path, tag: str = "tmp") -> tuple[str, str]:
    """``(prefix, suffix)`` of a hidden temporary sibling of ``path`` (``.STEM.XXXXXXXX.tag
    SUFFIX``), the stem shortened so that the whole name, with mkstemp's 8 random characters,
    fits :data:`NAME_MAX` bytes."""
    suffix = f".{tag}{path.suffix}"
    room = NAME_MAX - len(suffix.encode()) - 8 - 2  # the dots before and after the stem
    stem = path.stem.encode()[: max(room, 1)].decode(errors="ignore")
    return f".{stem}.", suffix


def hidden_sibling(path: str | Path, tag: str) -> Path:
    """``.NAME.tag`` beside ``path`` (a lock, a staging folder); where that would pass the
    filesystem's :data:`NAME_MAX` bytes, the name is cut and a digest of the whole name added,
    so that two long names never share a sibling."""
    path = Path(os.path.abspath(path))
    name = f".{path.name}.{tag}"
    if len(name.encode()) > NAME_MAX:
        digest = hashlib.sha256(path.name.encode()).hexdigest()[:16]
        keep = NAME_MAX - len(f"..{digest}.{tag}".encode())
        name = f".{path.name.encode()[:keep].decode(errors='ignore')}.{digest}.{tag}"
    return path.parent / name


def free_bytes(folder: str | Path) -> int:
    """Bytes this process may still write under ``folder`` (its nearest existing ancestor)."""
    existing = Path(os.path.abspath(folder))
    while not existing.exists():
        existing = existing.parent
    return shutil.disk_usage(existing).free


def describe_bytes(n: float) -> str:
    """``n`` bytes in words (kB, MB, GB), for messages."""
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} bytes"


def os_reason(err: BaseException) -> str:
    """One line saying why an operating-system or library write failed (HDF5's messages span
    lines and carry a time stamp; keep the reason)."""
    if isinstance(err, OSError) and err.strerror:
        return err.strerror
    text = str(err) or type(err).__name__
    if "No space left on device" in text or "errno = 28" in text:
        return "No space left on device"
    said = re.search(r"error message = '([^']+)'", text)  # HDF5's report of the OS's error
    if said:
        return said.group(1)
    if re.search(r"\d+ requested and \d+ written", text):  # numpy's tofile on a full disk
        return "the file system took only part of the data (a full disk?)"
    return text.splitlines()[0]


def check_room(folder: str | Path, nbytes: int, argument: str = "out") -> None:
    """A one-line ConfigError, before any work, if ``folder``'s disk has no room for
    ``nbytes`` (an output whose size is known in advance: a movie, a rendering)."""
    try:
        check_free_space(Path(folder), nbytes)
    except OSError as err:
        raise ConfigError(argument, f"{folder}: {err.strerror}") from None


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


def check_output_file(path: str | Path, suffix: str | None = None, argument: str = "out") -> Path:
    """``path`` if a file can be written there (checked before any work), else a one-line
    ConfigError: a wrong suffix, a folder of that name, a parent that is a file, or a folder
    this process may not write in."""
    path = Path(path)
    if suffix is not None:
        check_suffix(path, suffix, argument)
    if path.is_dir():
        raise ConfigError(argument, f"{path} is a folder; give a file name")
    check_writable_folder(path.parent, argument)
    return path


def check_output_dir(path: str | Path, argument: str = "out") -> Path:
    """``path`` if it is (or can be made) a folder this process may write in, else a one-line
    ConfigError."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(argument, f"{path} is a file, not a folder")
    check_writable_folder(path, argument)
    return path


def check_writable_folder(folder: Path, argument: str) -> None:
    """A one-line ConfigError unless files can be made in ``folder`` (or, where it does not
    exist yet, in its nearest existing ancestor)."""
    existing = Path(os.path.abspath(folder))
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(argument, f"{existing} is a file, not a folder")
    try:  # the permission bits do not tell the whole story (read-only mounts, ACLs)
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as err:
        raise ConfigError(argument, f"cannot write in {existing} ({err.strerror})") from None


def write_with_rescue(
    path: str | Path, write: Callable[[Path], object], nbytes: int | None = None
) -> Path:
    """``write(tmp)`` then rename ``tmp`` over ``path``; if that fails, write to a file in the
    system's temporary folder instead and raise :class:`OutputError` naming both.

    ``nbytes`` (the output's approximate size, when the caller knows it) is checked against the
    free space first: a writer is not started on a disk it would fill (HDF5 can crash, not
    fail, when it runs out of space half-way).
    """
    path = Path(path)
    try:
        check_free_space(path.parent, nbytes)
        with atomic_path(path) as tmp:
            write(tmp)
        return path
    except OSError as err:
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        name = f"bayes-smlm-{stamp}-{os.getpid()}-{path.name}"
        rescue = Path(tempfile.gettempdir()) / name.encode()[: NAME_MAX - 40].decode(
            errors="ignore"
        )
        try:
            check_free_space(rescue.parent, nbytes)
            with atomic_path(rescue) as tmp:
                write(tmp)
        except OSError as second:
            needed = f"; it needs about {describe_bytes(nbytes)}" if nbytes else ""
            raise OutputError(
                f"could not write {path} ({os_reason(err)}) nor keep the result "
                f"in {rescue.parent} ({os_reason(second)}){needed}: free some "
                "space and rerun"
            ) from None
        raise OutputError(
            f"could not write {path} ({os_reason(err)}); the result is kept in {rescue}"
        ) from None


def check_free_space(folder: Path, nbytes: int | None) -> None:
    """An ENOSPC OSError, before writing, if ``folder``'s disk lacks ``nbytes`` (× a margin);
    None: nothing known, nothing checked."""
    if nbytes is None:
        return
    free = free_bytes(folder)
    if free < SPACE_MARGIN * nbytes:
        raise OSError(
            errno.ENOSPC,
            f"No space left on device (needs about "
            f"{describe_bytes(SPACE_MARGIN * nbytes)}, "
            f"{describe_bytes(free)} free)",
        )


def write_text(path: str | Path, text: str) -> Path:
    """Atomically write a text file."""
    data = text.encode("utf-8")
    return write_with_rescue(path, lambda tmp: tmp.write_bytes(data), nbytes=len(data))


def write_json(path: str | Path, data: Any) -> Path:
    """Atomically write pretty JSON."""
    return write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def write_npz(path: str | Path, **arrays: Any) -> Path:
    """Atomically write an uncompressed ``.npz`` (no pickled objects)."""
    path = check_suffix(path, ".npz")

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)

    return write_with_rescue(path, write, nbytes=sum(np.asarray(a).nbytes for a in arrays.values()))


def read_npz(path: str | Path, required: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """Read an ``.npz`` without unpickling; check that ``required`` arrays are present."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError("file", f"file not found: {path}")
    try:
        data = np.load(path, allow_pickle=False)
        out = None if isinstance(data, np.ndarray) else _arrays_of(data)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        # np.load calls anything that is not a zip or .npy "pickled data": say what it is not
        reason = (
            str(err).splitlines()[0]
            if str(err) and "pickled" not in str(err)
            else "not a zip archive of .npy arrays"
        )
        raise ConfigError("file", f"cannot read {path} as .npz ({reason})") from None
    if out is None:  # a lone .npy under an .npz name
        raise ConfigError("file", f"{path} is a single .npy array, not an .npz archive")
    missing = [k for k in required if k not in out]
    if missing:
        raise ConfigError("file", f"{path} lacks arrays {missing}")
    return out


def _arrays_of(archive) -> dict[str, np.ndarray]:
    with archive:
        return {k: archive[k] for k in archive.files}
