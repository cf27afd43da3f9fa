"""Class 5 of the hostile-input review: inputs that contradict each other or the machine are
refused in one line before the work (true positions of another shape, camera maps that are not
real numbers, more frames than memory, a learning rate that makes training diverge)."""

from __future__ import annotations

import numpy as np
import pytest
from test_cli import run_cli

from bayes_smlm.errors import ConfigError
from bayes_smlm.forward.simulate import simulate
from bayes_smlm.forward.tasks import get_task
from bayes_smlm.io.atomic import write_npz

GOOD = simulate(get_task("isolated"), 2, 5)


def _frames_file(path, task, adu, theta=None):
    arrays = {"adu": adu, "config": task.to_json()}
    if theta is not None:
        arrays["theta"] = theta
    return write_npz(path, **arrays)


def test_true_positions_must_match_the_frames(tmp_path, capsys):
    task = get_task("isolated")
    path = _frames_file(tmp_path / "f.npz", task, GOOD.adu, theta=GOOD.theta[:1])
    status, _, err = run_cli(
        capsys, "posterior", str(path), "--method", "grid", "--out", str(tmp_path / "p.nc")
    )
    assert status == 2 and "'theta' must be real (F, N, 2) = (2, 1, 2)" in err


def test_a_complex_or_text_camera_map_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="argument camera.gain: map must hold real numbers"):
        get_task("isolated", {"gain": np.ones((20, 20), np.complex128)})
    with pytest.raises(ConfigError, match="argument camera.offset: map must hold real numbers"):
        get_task("isolated", {"offset": np.full((20, 20), "100")})


def test_more_frames_than_memory_is_refused_before_allocating(capsys, tmp_path):
    status, _, err = run_cli(
        capsys,
        "simulate",
        "--task",
        "isolated",
        "--frames",
        str(10**12),
        "--seed",
        "0",
        "--out",
        str(tmp_path / "f.npz"),
    )
    assert status == 2 and "argument --frames:" in err and "GB" in err


def test_a_diverging_training_names_the_learning_rate(tmp_path, capsys):
    status, _, err = run_cli(
        capsys,
        "train-phi",
        "--task",
        "isolated",
        "--steps",
        "3",
        "--batch-size",
        "2",
        "--validation-frames",
        "4",
        "--lr",
        "1e30",
        "--quiet",
        "--out",
        str(tmp_path / "phi"),
    )
    assert status == 2 and "argument --lr: training diverged" in err
    line = err.strip()
    assert "\n" not in line and line.isprintable()  # one printable line, no traceback


def test_a_method_refuses_true_positions_of_another_shape(isolated):
    from bayes_smlm.methods import get_method

    with pytest.raises(ConfigError, match=r"argument theta_true: must have shape \(F, N, 2\)"):
        get_method("grid")(isolated, GOOD.adu, theta_true=GOOD.theta[:, :, :1])
