"""Classes 4 and 5 of the hostile-input review: frames no camera can produce and inconsistent
inputs are refused in one line (with the frame index), before any work — one gate for every
entry point — while extreme but valid frames pass it."""

from __future__ import annotations

import numpy as np
import pytest
from test_cli import run_cli

from bayes_smlm.errors import ConfigError
from bayes_smlm.forward.frames import validate_frames
from bayes_smlm.forward.model import position_log_density
from bayes_smlm.forward.simulate import simulate
from bayes_smlm.forward.tasks import get_task
from bayes_smlm.io.atomic import write_npz


def _frames_file(path, task, adu, theta=None):
    arrays = {"adu": adu, "config": task.to_json()}
    if theta is not None:
        arrays["theta"] = theta
    return write_npz(path, **arrays)


GOOD = simulate(get_task("isolated"), 2, 5)


def _with_nan(adu):
    adu = adu.copy()
    adu[1, 4, 7] = np.nan
    return adu


@pytest.mark.parametrize(
    "adu, words",
    [
        (np.full((2, 20, 20), -1e6, np.float32), ["frame 0:", "below the camera offset"]),
        (np.full((2, 20, 20), 3e38, np.float32), ["frame 0 has pixels above"]),
        (_with_nan(GOOD.adu), ["frame 1 has 1 non-finite pixel"]),
        (GOOD.adu.astype(np.complex64), ["real numbers", "complex64"]),
        (np.zeros((0, 20, 20), np.float32), ["no frames"]),
        (GOOD.adu[:, :10], ["shape (F, 20, 20)"]),
    ],
)
@pytest.mark.parametrize("command", ["posterior", "detect-phi"])
def test_frames_no_camera_can_produce_are_refused_before_the_work(
    tmp_path, capsys, adu, words, command
):
    path = _frames_file(tmp_path / "bad.npz", get_task("isolated"), adu)
    out = tmp_path / ("p.nc" if command == "posterior" else "l.csv")
    extra = ["--method", "grid"] if command == "posterior" else []
    status, stdout, err = run_cli(capsys, command, str(path), *extra, "--out", str(out))
    assert status == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "argument FILE.npz:" in err
    for word in words:
        assert word in err, (word, err)
    assert stdout == "" and not out.exists()


def test_the_likelihood_refuses_a_nan_image(isolated):
    with pytest.raises(ConfigError, match="argument adu: frame 0 has 1 non-finite"):
        position_log_density(isolated, _with_nan(GOOD.adu)[1:])


@pytest.mark.parametrize(
    "overrides", [{"i0": 10.0}, {"i0": 1e7}, {"background": 100.0}, {"readout_var": 0.0}]
)
@pytest.mark.slow
def test_extreme_but_valid_frames_pass_the_gate(overrides):
    task = get_task("paper", overrides)
    frames = simulate(task, 8, 3)
    np.testing.assert_array_equal(validate_frames(task, frames.adu), frames.adu)
