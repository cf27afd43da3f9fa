"""One writer per output: a lock held beside a command's ``--out`` for the whole run.

Two runs into one output (two trainings into one new folder, two seeds racing into one zarr
store) would otherwise both succeed and one result would silently replace the other. The lock is
an advisory ``flock`` on a hidden file beside the target that names the process holding it; the
kernel releases it when that process ends however it ends, so a killed run never blocks the next.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from bayes_smlm.errors import ConfigError
from bayes_smlm.io.atomic import check_writable_folder, hidden_sibling

_HELD: set[Path] = set()  # lock files this process holds


def lock_path(target: str | Path) -> Path:
    """The lock file of ``target``: ``.NAME.lock`` beside it (:func:`hidden_sibling`)."""
    return hidden_sibling(target, "lock")


@contextlib.contextmanager
def hold_output(target: str | Path, argument: str = "out") -> Iterator[Path]:
    """Hold ``target`` for this process until the block ends; a one-line ConfigError naming the
    other process if one holds it already.

    The lock file is removed on release. A process that opened it just before its removal
    checks, after locking, that the file it locked is still the one at the path (else it tries
    again), so two processes never both hold one target.
    """
    path = lock_path(target)
    if path in _HELD:  # this process holds it already (a command that calls another's writer)
        yield path
        return
    check_writable_folder(path.parent, argument)  # one line for a parent that is a file, …
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _describe_holder(fd)
            os.close(fd)
            raise ConfigError(
                argument,
                f"{target} is being written by another run ({holder}); "
                "wait for it to finish, or give another output",
            ) from None
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # locked a file its holder had just removed: take the new one
    try:
        os.ftruncate(fd, 0)
        os.write(
            fd,
            json.dumps(
                {
                    "pid": os.getpid(),
                    "host": socket.gethostname(),
                    "since": time.strftime("%Y-%m-%d %H:%M:%S"),
                }
            ).encode(),
        )
        _HELD.add(path)
        yield path
    finally:
        _HELD.discard(path)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        os.close(fd)


def _describe_holder(fd: int) -> str:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        holder = json.loads(os.read(fd, 4096).decode() or "{}")
        return f"process {holder['pid']} on {holder['host']} since {holder['since']}"
    except (ValueError, KeyError, OSError):
        return "a process that has not yet said which"
