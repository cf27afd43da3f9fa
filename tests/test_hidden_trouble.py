"""Class 6 of the hostile-input review: diagnostics never hide trouble. Divergences count, a
grid too coarse for its posterior is flagged, a single chain says why it has no R-hat, flagged
frames are announced on screen — and extreme but valid frames give finite posteriors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_cli import run_cli

from bayes_smlm.forward.simulate import simulate, simulate_fixed
from bayes_smlm.forward.tasks import get_task
from bayes_smlm.io.atomic import write_npz
from bayes_smlm.io.posteriors import load_posterior
from bayes_smlm.methods import get_method
from bayes_smlm.methods.diagnostics import draw_diagnostics


def test_a_divergence_flags_its_frame_even_when_r_hat_and_ess_are_fine():
    draws = np.random.default_rng(0).normal(size=(4, 500, 3, 1, 2))  # i.i.d.: R-hat ≈ 1
    diverging = np.zeros((4, 500, 3), bool)
    diverging[2, 17, 1] = True
    diag = draw_diagnostics(draws, diverging)
    assert diag.worst_rhat.max() < 1.01 and diag.smallest_ess_bulk.min() > 400
    assert diag.flagged.tolist() == [False, True, False]
    assert diag.divergences.tolist() == [0, 1, 0]


def _frames_file(path, task, adu, theta):
    return write_npz(path, adu=adu, theta=theta, config=task.to_json())


def test_a_grid_too_coarse_for_a_bright_emitter_is_flagged_and_announced(tmp_path, capsys):
    task = get_task("isolated", {"i0": 1e7})
    frames = simulate(task, 2, 4)
    result = get_method("grid")(task, frames.adu)
    assert np.isfinite(result.kde_var).all() and np.isfinite(result.extra["theta_mean"]).all()
    assert result.flagged.all()  # SD ≈ 0.0007 px: below two cells of the fine grid
    path = _frames_file(tmp_path / "bright.npz", task, frames.adu, frames.theta)
    status, out, _ = run_cli(
        capsys, "posterior", str(path), "--method", "grid", "--out", str(tmp_path / "g.nc")
    )
    assert status == 0 and "warning: 2 of 2 frames are flagged" in out
    tree = load_posterior(tmp_path / "g.nc")
    assert np.asarray(tree["extra"]["under_resolved"]).all()  # and the file records it


def test_a_single_chain_says_why_it_has_no_diagnostics(tmp_path, capsys, frames_file):
    status, out, _ = run_cli(
        capsys,
        "posterior",
        str(frames_file),
        "--method",
        "rwmh",
        "--chains",
        "1",
        "--draws",
        "200",
        "--out",
        str(tmp_path / "r.nc"),
    )
    assert status == 0 and "R-hat needs at least 2 chains" in out
    tree = load_posterior(tmp_path / "r.nc")
    assert "diagnostics" not in tree.children
    assert "R-hat needs at least 2 chains" in tree.attrs["diagnostics"]


@pytest.mark.slow
@pytest.mark.parametrize("overrides", [{"i0": 10.0}, {"i0": 1e7}, {"background": 100.0}])
def test_extreme_but_valid_frames_give_finite_exact_posteriors(overrides):
    task = get_task("isolated", overrides)
    frames = simulate(task, 3, 8)
    result = get_method("grid")(task, frames.adu)
    assert np.isfinite(result.kde_mean).all() and np.isfinite(result.kde_var).all()
    assert np.isfinite(result.theta).all()


@pytest.mark.slow
@pytest.mark.parametrize("overrides", [{"i0": 10.0}, {"i0": 1e7}, {"background": 100.0}])
def test_extreme_frames_give_finite_nuts_posteriors_or_flags(overrides):
    task = get_task("isolated", overrides)
    frames = simulate(task, 2, 8)
    result = get_method("nuts")(task, frames.adu, draws=300, warmup=200)
    assert np.isfinite(result.kde_var).all() and np.isfinite(result.theta).all()
    diag = result.diagnostics
    trusted = ~result.flagged  # what is not flagged meets the bars
    assert np.all(diag.worst_rhat[trusted] <= 1.01) and np.all(diag.divergences[trusted] == 0)


@pytest.mark.slow
def test_an_emitter_at_the_edge_of_the_frame_gives_a_finite_posterior():
    task = get_task("isolated", {"radius": 9.5})  # the prior disc reaches the frame's edge
    theta = np.array([[0.2, 9.5]], np.float32)
    adu = simulate_fixed(task, theta, 2, seed=3)
    result = get_method("grid")(task, adu)
    assert np.isfinite(result.kde_var).all()
    assert abs(float(result.extra["theta_mean"][0, 0]) - 0.2) < 0.5
    assert json.loads(json.dumps(result.settings)) == result.settings  # plain JSON values
