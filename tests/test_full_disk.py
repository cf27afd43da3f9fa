"""Every command that writes, on a disk that is full: a non-zero exit status, one line that says
so (and where a finished result was kept), no partial file, no signal. Before: a segmentation
fault in the NetCDF writer, and OSError / SafetensorError tracebacks elsewhere."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_cli import run_cli
from test_lost_results import small_disk


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    from bayes_smlm.cli.main import main

    folder = tmp_path_factory.mktemp("inputs")
    assert (
        main(
            [
                "simulate",
                "--task",
                "isolated",
                "--frames",
                "8",
                "--seed",
                "1",
                "--out",
                str(folder / "f.npz"),
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "simulate",
                "--task",
                "paper",
                "--frames",
                "24",
                "--seed",
                "1",
                "--out",
                str(folder / "paper.npz"),
            ]
        )
        == 0
    )  # 240 detections: more than the disk holds
    assert (
        main(["simulate-movie", "--frames", "12", "--size", "32", "--out", str(folder / "movie")])
        == 0
    )
    assert (
        main(
            [
                "localize",
                str(folder / "movie" / "movie.tif"),
                "--quiet",
                "--out",
                str(folder / "locs.csv"),
            ]
        )
        == 0
    )
    return folder


@pytest.fixture
def full_disk(tmp_path, monkeypatch):
    """A folder on an 8 kB tmpfs (a page or two free); where none can be mounted, a disk that
    reports no free space to the writers' checks."""
    with small_disk(tmp_path / "disk", "8k") as grow:
        if grow is None:
            import bayes_smlm.io.atomic as atomic

            monkeypatch.setattr(atomic, "free_bytes", lambda folder: 0)
        yield tmp_path / "disk"


COMMANDS = {
    "simulate": [
        "simulate",
        "--task",
        "paper",
        "--frames",
        "20",
        "--seed",
        "0",
        "--out",
        "{disk}/s.npz",
    ],
    "posterior-nc": [
        "posterior",
        "{inputs}/f.npz",
        "--method",
        "grid",
        "--quiet",
        "--out",
        "{disk}/p.nc",
    ],
    "posterior-zarr": [
        "posterior",
        "{inputs}/f.npz",
        "--method",
        "grid",
        "--quiet",
        "--chunk-frames",
        "4",
        "--out",
        "{disk}/p.zarr",
    ],
    "render": ["render", "{inputs}/locs.csv", "--out", "{disk}/r"],
    "simulate-movie": ["simulate-movie", "--frames", "20", "--size", "64", "--out", "{disk}/m"],
    "localize": ["localize", "{inputs}/movie/movie.tif", "--quiet", "--out", "{disk}/l.csv"],
    "study": ["study", "forward-model", "--preset", "smoke", "--out", "{disk}/st"],
    "train-phi": [
        "train-phi",
        "--task",
        "isolated",
        "--steps",
        "1",
        "--quiet",
        "--out",
        "{disk}/phi",
    ],
    "detect-phi": ["detect-phi", "{inputs}/paper.npz", "--out", "{disk}/d.csv"],
    "train-psi": [
        "train-psi",
        "--task",
        "isolated",
        "--steps",
        "1",
        "--quiet",
        "--out",
        "{disk}/psi",
    ],
    "train-npe": [
        "train-npe",
        "--task",
        "isolated",
        "--steps",
        "1",
        "--simulations",
        "256",
        "--batch-size",
        "64",
        "--validation-frames",
        "64",
        "--quiet",
        "--out",
        "{disk}/npe",
    ],
}
TRAININGS = ("train-phi", "train-psi", "train-npe")  # a checkpoint folder grows as it trains


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_a_full_disk_is_one_line_and_no_partial_file(name, inputs, full_disk, capsys):
    argv = [a.format(disk=full_disk, inputs=inputs) for a in COMMANDS[name]]
    status, _, err = run_cli(capsys, *argv)
    lines = [line for line in err.strip().splitlines() if "error:" in line]
    assert status not in (0, None) and len(lines) == 1 and "Traceback" not in err, err
    assert "No space left on device" in lines[0] or "full disk" in lines[0], err
    kept = lines[0].split("the result is kept in ")
    if len(kept) == 2:  # a finished result moved aside, whole
        rescue = Path(kept[1].strip())
        assert rescue.exists() and rescue.stat().st_size > 0
        rescue.unlink()
    leftovers = [p for p in full_disk.rglob("*") if p.is_file() and not p.name.endswith(".lock")]
    if name == "posterior-zarr":  # a store keeps its finished chunks for the resume
        assert "rerun the same command" in lines[0], err
    elif name == "localize":  # so does localize, in LOCS.csv.partial/, every file whole
        assert "rerun the same command" in lines[0], err
        for path in leftovers:
            assert path.parent.name == "l.csv.partial", path
            json.loads(path.read_text()) if path.suffix == ".json" else np.load(path)
    elif name in TRAININGS:  # what a training wrote before the disk filled is whole
        for path in leftovers:
            assert path.suffix == ".json", path
            json.loads(path.read_text())
    else:
        assert leftovers == [], leftovers


def test_the_netcdf_writer_never_dies_of_a_signal(inputs, tmp_path):
    """The segmentation fault of issue 27 came from HDF5 running out of space half-way; the
    writer now checks the room first and turns what fails into one line. A separate process, so
    a signal would show. Without a tmpfs, a file-size limit stops the writes instead (EFBIG)."""
    import resource
    import signal

    def limit_file_size():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (32_000, 32_000))

    with small_disk(tmp_path / "disk", "64k") as grow:
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "bayes_smlm.cli.main",
                "posterior",
                str(inputs / "f.npz"),
                "--method",
                "grid",
                "--quiet",
                "--out",
                str(tmp_path / "disk" / "p.nc"),
            ],
            capture_output=True,
            text=True,
            timeout=300,
            preexec_fn=None if grow else limit_file_size,
            env={
                **{k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"},
                "BAYES_SMLM_JAX_CACHE": "off",
            },
        )  # its writes: not the point
    assert proc.returncode in (1, 2), proc.stderr  # an exit status, not a signal (negative)
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
