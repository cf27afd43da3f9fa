"""Exact posteriors: NUTS and RWMH against the grid ground truth, CRLB, tempering, KDE maps."""

from __future__ import annotations

import numpy as np
import pytest

from bayes_smlm.errors import ConfigError
from bayes_smlm.forward.fisher import fisher_information
from bayes_smlm.forward.simulate import simulate, simulate_fixed
from bayes_smlm.forward.tasks import get_task
from bayes_smlm.io.posteriors import to_datatree
from bayes_smlm.methods import (PosteriorResult, get_method, list_methods, register_method,
                                unregister_method)


@pytest.fixture(scope="module")
def frames():
    task = get_task("isolated")
    return task, simulate(task, 16, seed=12)


@pytest.fixture(scope="module")
def grid_result(frames):
    task, batch = frames
    return get_method("grid")(task, batch.adu, theta_true=batch.theta)


@pytest.fixture(scope="module")
def nuts_result(frames):
    task, batch = frames
    return get_method("nuts")(task, batch.adu, theta_true=batch.theta, seed=1)


def _grid_moments(grid):
    mean = grid.extra["theta_mean"]
    sd = np.sqrt(np.stack([grid.extra["theta_cov"][:, 0, 0], grid.extra["theta_cov"][:, 1, 1]], -1))
    return mean, sd


def _compare_to_grid(result, grid):
    """|mean − grid mean| / MCSE and SD ratios per frame and axis, with the ESS behind them."""
    tree = to_datatree(result)
    diag = tree["diagnostics"]
    mcse = np.asarray(diag["mcse_mean"])[:, 0]            # (F, 2)
    ess = np.asarray(diag["ess_bulk"])[:, 0]
    flat = result.theta_flat()[:, :, 0]                   # (F, S, 2)
    g_mean, g_sd = _grid_moments(grid)
    z = np.abs(flat.mean(1) - g_mean) / mcse
    ratio = flat.std(1) / g_sd
    return z, ratio, ess, np.asarray(diag["rhat"])[:, 0]


def test_builtin_methods_are_registered_and_unknown_names_fail():
    assert {"grid", "rwmh", "rwmh_paper", "nuts"} <= set(list_methods())
    with pytest.raises(ConfigError, match="argument method: unknown method 'hmc'"):
        get_method("hmc")


def test_a_user_registered_method_is_found_through_the_registry(frames):
    task, batch = frames

    @register_method("toy_prior")
    def toy(task, adu, *, seed=0, chains=1, draws=10, progress=False, **_):
        shape = (adu.shape[0],) + task.hr_shape
        return PosteriorResult("toy_prior", task, np.asarray(adu), np.zeros(shape), np.ones(shape))

    try:
        assert "toy_prior" in list_methods()
        out = get_method("toy_prior")(task, batch.adu[:2])
        assert out.kde_var.shape == (2, 80, 80)
    finally:
        unregister_method("toy_prior")
    assert "toy_prior" not in list_methods()


@pytest.mark.slow
def test_grid_posterior_sd_is_within_ten_percent_of_sqrt_crlb_for_a_centred_emitter():
    task = get_task("isolated")
    theta = np.array([[9.0, 9.0]], np.float32)
    adu = simulate_fixed(task, theta, 48, seed=3)
    grid = get_method("grid")(task, adu, draws=10, chains=1)
    _, sd = _grid_moments(grid)
    crlb = fisher_information(task, theta).sd_xy[0]
    np.testing.assert_allclose(sd.mean(0) / crlb, 1.0, atol=0.10)
    # and the grid is fine enough: ≥ 8 cells per posterior SD, where the midpoint rule's error on
    # a Gaussian, ~exp(−2π² SD²/h²), is far below float32 resolution
    assert np.all(grid.extra["grid_spacing"] < sd / 8)


@pytest.mark.slow
def test_nuts_agrees_with_the_grid_within_mcse_and_five_percent_in_sd(nuts_result, grid_result):
    z, ratio, ess, rhat = _compare_to_grid(nuts_result, grid_result)
    assert np.all(rhat <= 1.01)
    assert np.all(z < 4.0), z
    # SE of a sample SD ≈ SD / √(2 ESS); allow the larger of 5 % and 4 SE per frame
    tol = np.maximum(0.05, 4 / np.sqrt(2 * ess))
    assert np.all(np.abs(ratio - 1) < tol), ratio
    assert abs(ratio.mean() - 1) < 0.02


@pytest.mark.slow
def test_rwmh_agrees_with_the_grid(frames, grid_result):
    task, batch = frames
    result = get_method("rwmh")(task, batch.adu, seed=2)
    z, ratio, ess, rhat = _compare_to_grid(result, grid_result)
    assert np.all(rhat <= 1.01)
    assert np.all(z < 4.0), z
    tol = np.maximum(0.05, 4 / np.sqrt(2 * ess))
    assert np.all(np.abs(ratio - 1) < tol), ratio
    assert 0.15 < result.sample_stats["acceptance_rate"].mean() < 0.6


@pytest.mark.slow
def test_rwmh_paper_inflates_the_posterior_by_root_five(frames, grid_result):
    task, batch = frames
    result = get_method("rwmh_paper")(task, batch.adu[:8], seed=3)
    _, g_sd = _grid_moments(grid_result)
    ratio = result.theta_flat()[:, :, 0].std(1) / g_sd[:8]
    assert abs(ratio.mean() - np.sqrt(5)) < 0.15, ratio.mean()
    assert result.settings["beta"] == 0.2 and result.settings["steps"] == 10000


@pytest.mark.slow
def test_kde_variance_map_of_nuts_matches_the_grid(nuts_result, grid_result):
    for f in range(nuts_result.n_frames):
        a, b = nuts_result.kde_var[f].ravel(), grid_result.kde_var[f].ravel()
        assert np.corrcoef(a, b)[0, 1] >= 0.95
        assert abs(a.sum() / b.sum() - 1) < 0.10
    np.testing.assert_allclose(nuts_result.kde_mean, grid_result.kde_mean, atol=0.05)


@pytest.mark.slow
def test_nuts_reports_sampler_statistics(nuts_result):
    stats = nuts_result.sample_stats
    assert {"acceptance_rate", "diverging", "tree_depth", "step_size", "n_steps"} <= set(stats)
    assert stats["acceptance_rate"].shape == (4, 1000, 16)
    assert 0.6 < stats["acceptance_rate"].mean() < 0.99


def test_grid_refuses_several_emitters_and_bad_frames(paper):
    with pytest.raises(ConfigError, match="grid needs a one-emitter task"):
        get_method("grid")(paper, np.zeros((1, 20, 20)))
    with pytest.raises(ConfigError, match=r"adu: frames must have shape \(F, 20, 20\)"):
        get_method("nuts")(get_task("isolated"), np.zeros((2, 10, 10)))
    with pytest.raises(ConfigError, match="non-finite"):
        get_method("rwmh")(get_task("isolated"), np.full((1, 20, 20), np.nan))
