"""The movie path as real acquisitions meet it: frames without a molecule, files cut short,
frames no camera records, overrides that disagree with the file, and addresses that are not."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from test_acquisition import (
    maps_of,
    small_movie,  # noqa: F401  (a module-scoped fixture: one movie)
)
from test_cli import assert_one_line_error, run_cli

from bayes_smlm.acquisition.table import read_localizations


def dark_frames(folder, n, seed=0):
    """``n`` frames of the movie's camera with no emitter and no background: offset + read noise."""
    rng = np.random.default_rng(seed)
    offset = tifffile.imread(folder / "offset.tif")
    sd = np.sqrt(tifffile.imread(folder / "readout_var.tif"))
    return np.clip(
        np.rint(offset + sd * rng.standard_normal((n,) + offset.shape)), 0, 65535
    ).astype(np.uint16)


def localize(capsys, movie, folder, *extra):
    out = movie.parent / f"{movie.stem}.csv"
    status, stdout, err = run_cli(
        capsys, "localize", str(movie), *maps_of(folder), "--quiet", "--out", str(out), *extra
    )
    return status, out, err


def test_a_movie_of_background_only_gives_an_empty_table(tmp_path, capsys, small_movie):
    """Was IndexError: index -1 is out of bounds, in the window planner."""
    movie = tmp_path / "dark.tif"
    tifffile.imwrite(movie, dark_frames(small_movie, 6))
    status, out, err = localize(capsys, movie, small_movie)
    assert status == 0, err
    table = read_localizations(out)
    assert len(table["x [nm]"]) == 0 and "frame" in table


def test_emitters_that_start_late_are_found_as_in_the_movie_alone(tmp_path, capsys, small_movie):
    """Four dark frames before the movie, in chunks of two: the first two chunks are empty. The
    movie's rows are those of the movie localized alone, four frames later."""
    frames = tifffile.imread(small_movie / "movie.tif")
    late = tmp_path / "late.tif"
    tifffile.imwrite(late, np.concatenate([dark_frames(small_movie, 4), frames]))
    alone = tmp_path / "alone.tif"
    tifffile.imwrite(alone, frames)
    status, late_out, err = localize(capsys, late, small_movie, "--chunk-frames", "2")
    assert status == 0, err
    status, alone_out, err = localize(capsys, alone, small_movie, "--chunk-frames", "2")
    assert status == 0, err
    late_rows, alone_rows = read_localizations(late_out), read_localizations(alone_out)
    assert len(alone_rows["x [nm]"]) >= 10 * 3 * 0.9
    np.testing.assert_array_equal(late_rows["frame"], alone_rows["frame"] + 4)
    for column in ("x [nm]", "y [nm]", "uncertainty_x [nm]"):
        np.testing.assert_allclose(late_rows[column], alone_rows[column], rtol=1e-6)


@pytest.mark.parametrize("layout", [{}, {"imagej": True}, {"compression": "zlib"}])
def test_a_tiff_cut_short_is_refused_or_read_as_far_as_it_goes(
    tmp_path, capsys, small_movie, layout
):
    """Cut at 60 %: tifffile read such files as one frame (ImageJ, compressed) or raised
    IndexError. Now: one line naming the first missing frame, and --frames 0:K processes the
    frames that are whole, the same rows as those frames of the whole file."""
    frames = tifffile.imread(small_movie / "movie.tif")
    whole = tmp_path / "whole.tif"
    tifffile.imwrite(whole, frames, **layout)
    cut = tmp_path / "cut.tif"
    data = whole.read_bytes()
    cut.write_bytes(data[: len(data) * 6 // 10])
    status, _, err = localize(capsys, cut, small_movie)
    assert_one_line_error(
        status, err, "cut.tif declares 10 frames but holds only frames 0-", "--frames 0:"
    )
    readable = int(err.rsplit("--frames 0:", 1)[1].split()[0])
    assert 3 <= readable < 10
    status, cut_out, err = localize(capsys, cut, small_movie, "--frames", f"0:{readable}")
    assert status == 0, err
    status, whole_out, err = localize(capsys, whole, small_movie, "--frames", f"0:{readable}")
    assert status == 0, err
    np.testing.assert_array_equal(
        read_localizations(cut_out)["x [nm]"], read_localizations(whole_out)["x [nm]"]
    )
    status, _, err = localize(capsys, cut, small_movie, "--frames", "0:99")
    assert_one_line_error(status, err, "argument --frames:", "STOP <= 10")


@pytest.mark.parametrize(
    "spoil, message",
    [
        (
            lambda f: (
                f.astype(np.float32)
                * np.where(np.arange(f.size).reshape(f.shape) == 99, np.nan, 1.0)
            ),
            "frame 0 has 1 non-finite pixel",
        ),
        (
            lambda f: np.where(np.arange(len(f))[:, None, None] == 5, 65535, f).astype(np.uint16),
            "frame 5: 100 % of pixels are saturated",
        ),
        (lambda f: np.zeros_like(f), "lie more than 6 read-noise SDs below the camera offset"),
        (lambda f: -f.astype(np.float32), "lie more than 6 read-noise SDs below the camera offset"),
    ],
)
def test_frames_no_camera_records_are_refused_by_the_frame_gate(
    tmp_path, capsys, small_movie, spoil, message
):
    """The gate .npz frames pass now serves TIFFs: these gave thousands of flagged rows, or
    dropped a frame's localizations, with exit status 0."""
    movie = tmp_path / "spoilt.tif"
    tifffile.imwrite(movie, spoil(tifffile.imread(small_movie / "movie.tif")))
    status, out, err = localize(capsys, movie, small_movie)
    assert_one_line_error(status, err, "argument MOVIE:", "spoilt.tif", message)
    assert not out.exists()


def test_overrides_and_maps_that_disagree_with_the_data(tmp_path, capsys, small_movie):
    movie = str(small_movie / "movie.tif")
    status, _, err = run_cli(
        capsys, "localize", movie, "--set", "height=40", "--out", str(tmp_path / "a.csv")
    )
    assert_one_line_error(
        status, err, "argument --set:", "height=40 disagrees with the movie", "32 x 32"
    )
    for name, values in (
        ("str", np.full((32, 32), "a")),
        ("bool", np.ones((32, 32), bool)),
        ("complex", np.ones((32, 32)) + 1j),
    ):
        path = tmp_path / f"{name}.npy"
        np.save(path, values)
        for command in (
            ["localize", movie],
            [
                "simulate",
                "--task",
                "widefield",
                "--set",
                "height=32",
                "--set",
                "width=32",
                "--frames",
                "1",
                "--seed",
                "0",
            ],
        ):
            status, _, err = run_cli(
                capsys,
                *command,
                "--set",
                f"camera.gain={path}",
                "--out",
                str(tmp_path / ("a.csv" if command[0] == "localize" else "a.npz")),
            )
            assert_one_line_error(status, err, "camera.gain", "must hold real numbers")


@pytest.mark.parametrize(
    "address",
    [
        "nonsense",
        "tcp://",
        "tcp://host",
        "tcp://host:0",
        "host:99999",
        "local:0",
        "local:100000",
        "a b:1",
    ],
)
def test_scheduler_addresses_are_checked_before_any_work(tmp_path, capsys, small_movie, address):
    status, _, err = run_cli(
        capsys,
        "localize",
        str(small_movie / "movie.tif"),
        "--scheduler",
        address,
        "--out",
        str(tmp_path / "a.csv"),
    )
    assert_one_line_error(status, err, "argument --scheduler:")
