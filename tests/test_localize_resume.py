"""An interrupted `localize` continues where it stopped: killed mid-run and run again with the
same command, it writes the CSV an uninterrupted run writes, taking only chunks whose frames
are unchanged."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from test_acquisition import maps_of, small_movie  # noqa: F401  (the fixture)
from test_cli import run_cli

from bayes_smlm.acquisition.resume import ChunkStore, frames_digest


def localize_command(folder, out) -> list[str]:
    return [
        "localize",
        str(folder / "movie.tif"),
        *maps_of(folder),
        "--chunk-frames",
        "2",
        "--quiet",
        "--out",
        str(out),
    ]


@pytest.mark.slow
def test_a_killed_run_resumes_to_the_uninterrupted_csv(small_movie, tmp_path, capsys):
    whole = tmp_path / "whole.csv"
    status, _, err = run_cli(capsys, *localize_command(small_movie, whole))
    assert status == 0, err
    out = tmp_path / "locs.csv"
    partial = tmp_path / "locs.csv.partial"
    job = subprocess.Popen(
        [sys.executable, "-m", "bayes_smlm.cli.main", *localize_command(small_movie, out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 600
    while len(list(partial.glob("chunk-*.npz"))) < 2 and job.poll() is None:
        assert time.monotonic() < deadline, "no chunk finished in 10 minutes"
        time.sleep(0.2)
    os.kill(job.pid, signal.SIGKILL)  # as a killed job: no clean-up runs
    job.wait()
    assert not out.exists() and len(list(partial.glob("chunk-*.npz"))) >= 2
    status, printed, err = run_cli(capsys, *localize_command(small_movie, out))
    assert status == 0, err
    resumed = int(printed.split("resumed: ")[1].split()[0])
    assert 2 <= resumed < 5  # 10 frames in chunks of 2: not all were done
    assert out.read_text() == whole.read_text()  # the rows of an uninterrupted run
    assert not partial.exists()  # cleaned up once the CSV is written


def test_a_store_takes_only_chunks_whose_frames_and_run_are_unchanged(tmp_path):
    frames = np.arange(2 * 4 * 4, dtype=np.float32).reshape(2, 4, 4)
    rows = {"x": np.array([1.5, 2.5]), "flagged": np.array([False, True])}
    store = ChunkStore(tmp_path / "p", {"task": "t", "settings": {"a": 1}})
    store.save(0, frames_digest(frames), rows)
    again = ChunkStore(tmp_path / "p", {"task": "t", "settings": {"a": 1}})
    loaded = again.load(0, frames)
    assert loaded is not None and np.array_equal(loaded["x"], rows["x"])
    assert loaded["flagged"].dtype == bool and again.resumed == 1
    changed = frames.copy()
    changed[1, 2, 3] += 1.0  # one pixel of one frame differs
    assert again.load(0, changed) is None
    (tmp_path / "p" / "chunk-000001.npz").write_bytes(b"PK\x03\x04 cut short")
    assert again.load(1, frames) is None  # a file the kill cut short: computed again
    other = ChunkStore(tmp_path / "p", {"task": "t", "settings": {"a": 2}})
    assert other.load(0, frames) is None and not list(other.folder.glob("chunk-*"))
