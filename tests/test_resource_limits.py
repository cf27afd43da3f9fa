"""Requests larger than the machine are refused before the work, in one line naming the
argument and what fits (train-phi --batch-size 100000000 was killed by the kernel after
minutes, exit 137)."""

from __future__ import annotations

import pytest
from test_cli import assert_one_line_error, run_cli


@pytest.mark.parametrize("command", ["train-phi", "train-psi"])
def test_a_batch_larger_than_memory_is_refused_before_training(tmp_path, capsys, command):
    status, _, err = run_cli(
        capsys,
        command,
        "--task",
        "isolated",
        "--steps",
        "1",
        "--batch-size",
        "100000000",
        "--quiet",
        "--out",
        str(tmp_path / "run"),
    )
    assert_one_line_error(status, err, "argument --batch-size:", "GB", "free")
    assert not (tmp_path / "run" / "model.safetensors").exists()


def test_phi_names_the_largest_batch_that_fits(tmp_path, capsys):
    status, _, err = run_cli(
        capsys,
        "train-phi",
        "--task",
        "isolated",
        "--steps",
        "1",
        "--batch-size",
        "1000000",
        "--out",
        str(tmp_path / "run"),
    )
    assert_one_line_error(status, err, "for its activations", "at most about")
    fits = int(err.split("at most about ")[1].split()[0])
    assert 64 <= fits < 1_000_000  # the shipped trainings' batches fit; the request does not
