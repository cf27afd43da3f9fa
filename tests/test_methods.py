"""Exact posteriors: NUTS and RWMH against the grid ground truth, CRLB, tempering, KDE maps."""

from __future__ import annotations

import numpy as np
import pytest

from bayes_smlm.compare.exactness import grid_agreement
from bayes_smlm.errors import ConfigError
from bayes_smlm.forward.fisher import fisher_information
from bayes_smlm.forward.simulate import simulate, simulate_fixed
from bayes_smlm.forward.tasks import get_task
from bayes_smlm.methods import (
    PosteriorResult,
    get_method,
    list_methods,
    register_method,
    unregister_method,
)


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


def test_builtin_methods_are_registered_and_unknown_names_fail():
    assert {"grid", "rwmh", "rwmh_paper", "nuts", "chees"} <= set(list_methods())
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


def _check_agrees_with_grid(result, grid_result):
    agreement = grid_agreement(result, grid_result)
    assert np.all(agreement.rhat <= 1.01)
    # means within 4 MCSE; SDs within the larger of 5 % and 4 SE of the sample SD
    assert agreement.frame_agrees.all(), (agreement.z, agreement.sd_ratio)
    assert abs(agreement.sd_ratio.mean() - 1) < 0.02


@pytest.mark.slow
def test_nuts_agrees_with_the_grid_within_mcse_and_five_percent_in_sd(nuts_result, grid_result):
    _check_agrees_with_grid(nuts_result, grid_result)


@pytest.mark.slow
@pytest.mark.parametrize("method, options", [("chees", {}), ("nuts", {"init": "laplace"})])
def test_laplace_started_samplers_agree_with_the_grid(frames, grid_result, method, options):
    """The new exact samplers meet the bar `nuts` meets: means within 4 MCSE, SDs within 5 %.
    No divergence away from the prior disc's hard edge; within 1 px of it an occasional one is
    the boundary's (on the AMD EPYC CPU: 1 of 64 000 NUTS transitions, frame 8, emitter 0.47 px
    from the edge), and the diagnostics flag that frame."""
    task, batch = frames
    result = get_method(method)(task, batch.adu, theta_true=batch.theta, seed=4, **options)
    assert result.settings["init"] == "laplace"
    diverging = result.sample_stats["diverging"].sum(axis=(0, 1))
    radius = np.linalg.norm(batch.theta[:, 0] - np.asarray(task.centre), axis=-1)
    assert not diverging[radius < task.prior.radius - 1.0].any(), diverging
    assert result.flagged[diverging > 0].all()
    _check_agrees_with_grid(result, grid_result)


@pytest.mark.slow
def test_chees_on_dense_frames_passes_most_and_flags_the_rest():
    """`paper` density (10 emitters). Measured: 85–88 % of frames pass R-hat ≤ 1.01, bulk ESS
    ≥ 400 and no divergence (NUTS 90–95 %, by CPU; the misses are close pairs). A regression
    guard at 70 % of 24 frames (at a true 85 % a run falls below it with probability ≈ 2 %), and
    every miss is flagged with its reason recorded."""
    task = get_task("paper")
    batch = simulate(task, 24, seed=13)
    result = get_method("chees")(task, batch.adu, seed=5)
    diag = result.diagnostics
    assert (~diag.flagged).sum() >= 17, diag.flagged
    worst_rhat = np.nanmax(diag.rhat, axis=(1, 2))
    smallest_ess = np.nanmin(diag.ess_bulk, axis=(1, 2))
    reason = (worst_rhat > 1.01) | (smallest_ess < 400) | (diag.divergences > 0)
    np.testing.assert_array_equal(reason, diag.flagged)


def test_chees_needs_two_chains_and_a_valid_acceptance_target(frames):
    task, batch = frames
    with pytest.raises(ConfigError, match="argument chains: .*2"):
        get_method("chees")(task, batch.adu[:1], chains=1)
    with pytest.raises(ConfigError, match="argument target_accept"):
        get_method("chees")(task, batch.adu[:1], target_accept=1.5)
    with pytest.raises(ConfigError, match="argument init"):
        get_method("nuts")(task, batch.adu[:1], init="anywhere")


@pytest.mark.slow
def test_rwmh_agrees_with_the_grid(frames, grid_result):
    task, batch = frames
    result = get_method("rwmh")(task, batch.adu, seed=2)
    agreement = grid_agreement(result, grid_result)
    assert np.all(agreement.rhat <= 1.01)
    assert agreement.frame_agrees.all(), (agreement.z, agreement.sd_ratio)
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
