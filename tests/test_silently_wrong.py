"""Methods that could be wrong without saying so: frames the model cannot explain, a surrogate's
uncalibrated spread by default, and a variance of one sample."""

from __future__ import annotations

import json

import numpy as np
from test_cli import assert_one_line_error, run_cli

from bayes_smlm.forward.simulate import simulate
from bayes_smlm.io.posteriors import load_posterior
from bayes_smlm.methods import get_method


def test_grid_flags_frames_its_model_cannot_explain(isolated):
    """A saturated frame got an SD of 0.036 px and no flag; correct frames stay unflagged."""
    batch = simulate(isolated, 64, 77)
    result = get_method("grid")(isolated, batch.adu)
    assert not result.flagged.any()
    saturated = np.full((3,) + isolated.shape, 60000.0, np.float32)
    saturated[1, 8:12, 8:12] = 3000.0
    spoilt = get_method("grid")(isolated, saturated)
    assert spoilt.extra["misfit"].all() and spoilt.flagged.all()


def test_ddpm_is_recalibrated_by_default_and_says_so(tmp_path, capsys, frames_file):
    """The shipped isolated Psi's raw spread is 0.6 of the exact variance on the signal: its
    calibrated configuration is the default, --raw the option, and the file says which."""
    runs = {}
    for label, extra in (
        ("default", []),
        ("raw", ["--raw"]),
        ("other-sampler", ["--solver", "ddim", "--steps", "4"]),
    ):
        out = tmp_path / f"{label}.nc"
        status, _, err = run_cli(
            capsys,
            "posterior",
            str(frames_file),
            "--method",
            "ddpm",
            "--samples",
            "4",
            "--quiet",
            *extra,
            "--out",
            str(out),
        )
        assert status == 0, err
        runs[label] = json.loads(load_posterior(out).attrs["settings"])
    assert runs["default"]["recalibrated"] and runs["default"]["recalibration"] == "applied"
    assert not runs["raw"]["recalibrated"]
    assert not runs["other-sampler"]["recalibrated"]
    assert "not this sampler" in runs["other-sampler"]["recalibration"]
    status, _, err = run_cli(
        capsys,
        "posterior",
        str(frames_file),
        "--method",
        "ddpm",
        "--samples",
        "4",
        "--recalibrate",
        "--solver",
        "ddim",
        "--steps",
        "4",
        "--out",
        str(tmp_path / "x.nc"),
    )
    assert_one_line_error(status, err, "argument --recalibrate:", "fitted on samples of")


def test_a_variance_of_one_sample_is_refused(tmp_path, capsys, frames_file):
    """--samples 1 gave NaN variance on every frame, exit 0."""
    status, _, err = run_cli(
        capsys,
        "posterior",
        str(frames_file),
        "--method",
        "ddpm",
        "--samples",
        "1",
        "--out",
        str(tmp_path / "p.nc"),
    )
    assert_one_line_error(status, err, "argument --samples:", ">= 2")
