"""KDE push-forward, relabelling, initialisation, calibration tools, DataTree output and CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bayes_smlm.cli.main import main
from bayes_smlm.compare.sbc import interval_coverage, sbc_ranks
from bayes_smlm.forward import physics
from bayes_smlm.forward.simulate import simulate, simulate_fixed
from bayes_smlm.forward.tasks import get_task
from bayes_smlm.io.posteriors import load_posterior, task_of
from bayes_smlm.methods import get_method
from bayes_smlm.methods.initialization import detect_initial_positions
from bayes_smlm.methods.pushforward import kde_moments
from bayes_smlm.methods.relabel import align_labels


def test_kde_moments_of_a_two_point_posterior_are_exact(isolated):
    a, b = np.array([[8.0, 9.0]]), np.array([[8.6, 9.3]])
    p = 0.3
    draws = np.concatenate([np.repeat(a[None], 300, 0), np.repeat(b[None], 700, 0)])[None]
    mean, var = kde_moments(draws, isolated, chunk=128)  # chunk is shrunk to divide 1000
    ya = np.asarray(physics.kde(a, 1.5, 4, (20, 20)))
    yb = np.asarray(physics.kde(b, 1.5, 4, (20, 20)))
    np.testing.assert_allclose(mean[0], p * ya + (1 - p) * yb, atol=1e-5)
    # float32 one-pass moments: E[y²] − E[y]² over 1000 draws loses ≈ 1e-3 relative where the
    # variance is small against y² (seen on an AVX2 CPU: 1.3e-5 absolute at y ≈ 0.5)
    np.testing.assert_allclose(var[0], p * (1 - p) * (ya - yb) ** 2, rtol=1e-3, atol=1e-5)


def test_kde_moments_of_several_emitters_match_a_direct_computation(paper):
    rng = np.random.default_rng(3)
    task = get_task("paper", {"n_emitters": 2})
    draws = np.array([[5.0, 6.0], [12.0, 13.0]]) + 0.3 * rng.standard_normal((1, 64, 2, 2))
    mean, var = kde_moments(draws, task, chunk=16)
    ys = np.stack([np.asarray(physics.kde(d, 1.5, 4, (20, 20))) for d in draws[0]])
    np.testing.assert_allclose(mean[0], ys.mean(0), atol=1e-5)
    np.testing.assert_allclose(var[0], ys.var(0), atol=1e-5)


def test_align_labels_undoes_label_switching():
    rng = np.random.default_rng(0)
    centres = np.array([[4.0, 4.0], [10.0, 12.0], [15.0, 6.0]])
    draws = centres + 0.1 * rng.standard_normal((2, 50, 1, 3, 2))
    switched = draws.copy()
    for c in range(2):
        for d in range(50):
            switched[c, d, 0] = switched[c, d, 0][rng.permutation(3)]
    aligned = align_labels(switched)
    spread = aligned.reshape(-1, 3, 2).std(0)
    assert np.all(spread < 0.2)


def test_initial_detections_find_separated_emitters():
    task = get_task("paper", {"n_emitters": 4})
    theta = np.array([[5.0, 6.0], [13.0, 5.5], [8.0, 14.0], [14.5, 13.0]], np.float32)
    adu = simulate_fixed(task, theta, 1, seed=0)[0]
    found = np.asarray(detect_initial_positions(task, adu))
    dist = np.sqrt(((found[:, None] - theta[None]) ** 2).sum(-1)).min(0)
    assert np.all(dist < 0.5)


def test_sbc_and_coverage_accept_exact_draws_and_reject_overconfident_ones():
    rng = np.random.default_rng(1)
    m, s = 400, 200
    # normal-normal model: truth ~ N(0,1), obs ~ N(truth, 1), posterior N(obs/2, 1/2)
    truth = rng.standard_normal((m, 1))
    obs = truth + rng.standard_normal((m, 1))
    exact = obs[:, None, :] / 2 + np.sqrt(0.5) * rng.standard_normal((m, s, 1))
    narrow = obs[:, None, :] / 2 + 0.5 * np.sqrt(0.5) * rng.standard_normal((m, s, 1))
    assert sbc_ranks(exact, truth).min_pvalue > 0.001
    assert sbc_ranks(narrow, truth).min_pvalue < 1e-6
    cov = {c.level: c for c in interval_coverage(exact, truth)}
    assert cov[0.9].low <= 0.9 <= cov[0.9].high
    assert interval_coverage(narrow, truth, (0.9,))[0].high < 0.9


@pytest.mark.slow
def test_grid_posterior_is_calibrated_sbc_and_coverage():
    # fast SBC: the exact grid posterior on 200 prior-simulated frames
    task = get_task("isolated")
    batch = simulate(task, 200, seed=31)
    result = get_method("grid")(task, batch.adu, chains=1, draws=400)
    draws = result.theta_flat()[:, :, 0]
    truth = batch.theta[:, 0]
    sbc = sbc_ranks(draws, truth, n_draws=99, bins=10)
    assert sbc.min_pvalue > 0.01 / 2  # 1 % level, Bonferroni over x and y
    cov = {c.level: c for c in interval_coverage(draws, truth)}
    assert abs(cov[0.9].fraction - 0.9) <= 0.03 + 3 * np.sqrt(0.09 / 400)


@pytest.mark.slow
def test_nuts_sbc_on_200_isolated_frames():
    task = get_task("isolated")
    batch = simulate(task, 200, seed=41)
    result = get_method("nuts")(task, batch.adu, seed=5)
    draws = result.theta_flat()[:, :, 0]
    sbc = sbc_ranks(draws, batch.theta[:, 0], n_draws=99, bins=10)
    assert sbc.min_pvalue > 0.01 / 2
    cov = {c.level: c for c in interval_coverage(draws, batch.theta[:, 0])}
    assert abs(cov[0.9].fraction - 0.9) <= 0.03


def test_posterior_cli_writes_a_datatree_with_every_group(tmp_path, capsys):
    npz, nc = tmp_path / "f.npz", tmp_path / "post.nc"
    assert (
        main(["simulate", "--task", "isolated", "--frames", "3", "--seed", "4", "--out", str(npz)])
        == 0
    )
    assert (
        main(
            [
                "posterior",
                str(npz),
                "--method",
                "rwmh",
                "--chains",
                "2",
                "--draws",
                "400",
                "--quiet",
                "--out",
                str(nc),
            ]
        )
        == 0
    )
    assert "s/frame" in capsys.readouterr().out
    tree = load_posterior(nc)
    assert {
        "posterior",
        "sample_stats",
        "observed_data",
        "constant_data",
        "kde",
        "diagnostics",
    } <= set(tree.children)
    theta = tree["posterior"]["theta"]
    assert theta.dims == ("chain", "draw", "frame", "emitter", "axis")
    assert list(theta["axis"].values) == ["x", "y"] and theta.shape == (2, 400, 3, 1, 2)
    assert tree["kde"]["var"].dims == ("frame", "y_hr", "x_hr")
    assert tree["observed_data"]["adu"].shape == (3, 20, 20)
    assert tree["constant_data"]["theta_true"].shape == (3, 1, 2)
    assert task_of(tree).name == "isolated"
    assert json.loads(tree["constant_data"].attrs["settings"])["proposal_var"] == 0.03
    assert tree["diagnostics"]["flagged"].dtype == bool
    assert not list(tmp_path.glob(".*tmp*"))


def test_posterior_cli_errors_are_one_line(tmp_path, capsys):
    npz = tmp_path / "f.npz"
    main(["simulate", "--task", "paper", "--frames", "1", "--seed", "4", "--out", str(npz)])
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main(["posterior", str(npz), "--method", "grid", "--out", str(tmp_path / "x.nc")])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "grid needs a one-emitter task" in err[0]
    with pytest.raises(SystemExit):
        main(["posterior", str(npz), "--method", "nuts", "--out", str(tmp_path / "x.txt")])
    assert "must end in .nc" in capsys.readouterr().err


@pytest.mark.slow
def test_console_script_shards_frames_over_host_devices(tmp_path):
    # The installed command asks XLA for one CPU device per core before JAX starts, and the
    # frame batch is split across them with pmap; the result must look the same.
    import os
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    exe = shutil.which("bayes-smlm") or str(Path(sys.executable).parent / "bayes-smlm")
    npz, nc = tmp_path / "f.npz", tmp_path / "p.nc"
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    for argv in (
        ["simulate", "--task", "isolated", "--frames", "3", "--seed", "8", "--out", str(npz)],
        ["posterior", str(npz), "--method", "nuts", "--draws", "300", "--quiet", "--out", str(nc)],
    ):
        proc = subprocess.run([exe, *argv], capture_output=True, text=True, timeout=300, env=env)
        assert proc.returncode == 0, proc.stderr
    tree = load_posterior(nc)
    assert tree["posterior"]["theta"].shape == (4, 300, 3, 1, 2)
    settings = json.loads(tree.attrs["settings"])
    assert settings["host_devices"] == 2 * (os.cpu_count() or 1)  # two per core, as documented
    theta = np.asarray(tree["posterior"]["theta"])
    truth = np.asarray(tree["constant_data"]["theta_true"])
    assert np.all(np.abs(theta.mean((0, 1)) - truth) < 0.5)


def test_the_reference_cache_returns_the_same_posterior_and_checks_the_frames(
    isolated, tmp_path, monkeypatch
):
    from bayes_smlm.methods.reference import cached_reference

    monkeypatch.setenv("BAYES_SMLM_CACHE", str(tmp_path / "cache"))
    frames = simulate(isolated, 2, seed=22)
    first = cached_reference(isolated, frames.adu, (22, 2), seed=1)
    assert len(list((tmp_path / "cache").glob("grid-*.nc"))) == 1
    again = cached_reference(isolated, frames.adu, (22, 2), seed=1)  # read back from the file
    for name in ("adu", "kde_mean", "kde_var", "theta"):
        np.testing.assert_array_equal(getattr(again, name), getattr(first, name))
    for name, value in first.extra.items():
        np.testing.assert_array_equal(again.extra[name], value)
    assert again.settings == json.loads(json.dumps(first.settings)) and again.method == "grid"
    assert again.seconds == first.seconds  # not recomputed
    other = simulate(isolated, 2, seed=23).adu  # same key, other frames: recomputed, not reused
    assert not np.array_equal(
        cached_reference(isolated, other, (22, 2), seed=1).kde_var, first.kde_var
    )
    monkeypatch.setenv("BAYES_SMLM_CACHE", "off")
    assert cached_reference(isolated, frames.adu, (22, 2), seed=1).seconds != first.seconds
