"""render as tables in the wild meet it: positions far away, tiny pixels, ragged or ambiguous
CSVs, and rows it cannot draw — refused in one line before numpy asks for TiB, or named."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from test_cli import assert_one_line_error, run_cli

HEADER = ["id", "frame", "x [nm]", "y [nm]", "uncertainty_x [nm]", "uncertainty_y [nm]", "flagged"]


def table(tmp_path, rows, header=HEADER, name="locs.csv"):
    path = tmp_path / name
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def good_rows(n=20, seed=0):
    rng = np.random.default_rng(seed)
    return [[i + 1, 1, *rng.uniform(100, 900, 2), 10.0, 12.0, 0] for i in range(n)]


@pytest.mark.parametrize(
    "change, extra, message",
    [
        (lambda rows: rows[0].__setitem__(2, 5e12), [], "the image would be"),
        (lambda rows: None, ["--pixel-nm", "0.001"], "at most 1e+08 pixels"),
        (lambda rows: None, ["--size-nm", "1e9", "1e9"], "at most 1e+08 pixels"),
        (lambda rows: rows[3].pop(), [], "row 5 has 6 values for 7 columns"),
    ],
)
def test_extents_and_ragged_tables_are_refused_before_the_work(
    tmp_path, capsys, change, extra, message
):
    rows = good_rows()
    change(rows)
    status, _, err = run_cli(
        capsys, "render", str(table(tmp_path, rows)), *extra, "--out", str(tmp_path / "r")
    )
    assert_one_line_error(status, err, message)
    assert not (tmp_path / "r" / "image.tif").exists()


def test_a_column_named_twice_is_refused(tmp_path, capsys):
    rows = [row + [row[2] + 500] for row in good_rows()]
    path = table(tmp_path, rows, HEADER + ["x [nm]"])
    status, _, err = run_cli(capsys, "render", str(path), "--out", str(tmp_path / "r"))
    assert_one_line_error(status, err, "'x [nm]' appear more than once")


def test_rows_it_cannot_draw_are_counted_on_screen(tmp_path, capsys):
    """Rows with NaN or inf positions and rows outside --size-nm were dropped without a word."""
    rows = good_rows()
    rows[0][2], rows[1][3] = float("nan"), float("inf")
    rows[2][2] = 1e5  # outside a 1000 nm field
    rows[3][6] = 1  # flagged
    status, out, err = run_cli(
        capsys,
        "render",
        str(table(tmp_path, rows)),
        "--size-nm",
        "1000",
        "1000",
        "--out",
        str(tmp_path / "r"),
    )
    assert status == 0, err
    assert "16 localizations" in out
    assert (
        "note: left out 1 flagged (--include-flagged draws them), 2 with a non-finite "
        "position or uncertainty, 1 outside the image"
    ) in out
