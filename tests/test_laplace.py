"""``laplace``: the Gaussian at the posterior mode against the exact grid posterior, its analytic
image derivatives against automatic differentiation, dense frames, flags, the CLI."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_cli import run_cli

from bayes_smlm.forward.parameters import ParameterLayout
from bayes_smlm.forward.simulate import simulate
from bayes_smlm.forward.tasks import get_task
from bayes_smlm.io.posteriors import load_posterior
from bayes_smlm.methods import get_method
from bayes_smlm.methods.laplace import laplace_fit

CHAINS, DRAWS = 4, 1000


@pytest.fixture(scope="module")
def isolated_pair():
    task = get_task("isolated")
    frames = simulate(task, 24, 123)
    laplace = get_method("laplace")(
        task, frames.adu, chains=CHAINS, draws=DRAWS, seed=1, theta_true=frames.theta
    )
    grid = get_method("grid")(task, frames.adu)
    return laplace, grid


def test_laplace_agrees_with_the_grid_within_monte_carlo_error(isolated_pair):
    laplace, grid = isolated_pair
    assert not laplace.flagged.any()
    draws = laplace.theta_flat()[:, :, 0]  # (F, S, 2)
    s = draws.shape[1]
    grid_sd = np.sqrt(np.diagonal(grid.extra["theta_cov"], axis1=-2, axis2=-1))
    # SD of S i.i.d. draws: relative standard error 1/√(2S) = 1.1 %; the bar is 5 % (≈ 4.5 SE)
    ratio = draws.std(axis=1) / grid_sd
    assert np.all(np.abs(ratio - 1) < 0.05), ratio
    assert abs(np.median(ratio) - 1) < 3 / np.sqrt(2 * s)
    # means: 4 Monte Carlo SEs plus 0.05 SD for the mode-to-mean offset of a Poisson posterior
    z = np.abs(draws.mean(axis=1) - grid.extra["theta_mean"]) / grid_sd
    assert np.all(z < 4 / np.sqrt(s) + 0.05), z.max()


def test_laplace_kde_moments_match_the_grid(isolated_pair):
    laplace, grid = isolated_pair
    ratio = laplace.kde_var.sum((1, 2)) / grid.kde_var.sum((1, 2))
    assert np.all(np.abs(ratio - 1) < 0.1) and abs(np.median(ratio) - 1) < 0.03, ratio


def test_analytic_image_derivatives_equal_automatic_differentiation():
    task = get_task("paper", {"n_emitters": 3, "background": 4.0})
    layout = ParameterLayout.of(task, infer_intensity=True, infer_background=True)
    params = layout.pack(
        jnp.array([[9.3, 8.1], [5.2, 11.7], [12.0, 10.0]]), jnp.array([150.0, 220.0, 300.0]), 7.0
    )
    analytic = layout.image_derivatives(task)(params)
    omega = layout.expected_photons(task)
    jacobian = np.moveaxis(np.asarray(jax.jit(jax.jacfwd(omega))(params)), -1, 0)
    np.testing.assert_allclose(analytic.omega, omega(params), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(analytic.jacobian, jacobian, atol=1e-4 * np.abs(jacobian).max())
    weights = jnp.asarray(np.random.default_rng(0).normal(size=task.shape), jnp.float32)
    hessian = np.asarray(jax.jit(jax.hessian(lambda p: jnp.sum(weights * omega(p))))(params))
    np.testing.assert_allclose(
        layout.curvature(analytic, weights), hessian, atol=1e-4 * np.abs(hessian).max()
    )


@pytest.mark.slow
def test_laplace_fits_ten_emitters_jointly():
    task = get_task("paper")
    frames = simulate(task, 8, 5)
    result = get_method("laplace")(task, frames.adu, chains=2, draws=200, theta_true=frames.theta)
    assert result.theta.shape == (2, 200, 8, 10, 2)
    assert result.extra["converged"].all() and result.extra["positive_definite"].all()
    # every true emitter has a fitted one nearby (greedy matching, LR px)
    for fitted, truth in zip(result.extra["theta_mean"], frames.theta):
        distances = np.linalg.norm(fitted[:, None] - truth[None], axis=-1)
        assert np.median(distances.min(axis=0)) < 0.5


def test_a_frame_without_an_emitter_is_flagged_not_dropped(tmp_path, capsys):
    task = get_task("isolated")
    adu = np.full((1, 20, 20), task.camera.offset, np.float32)  # no photon anywhere
    fit = laplace_fit(task, adu)
    assert fit.flagged.tolist() == [True] and np.isfinite(fit.covariance).all()


def test_laplace_through_the_cli_writes_its_flags_and_mode(tmp_path, capsys, frames_file):
    out = tmp_path / "l.nc"
    status, stdout, _ = run_cli(
        capsys,
        "posterior",
        str(frames_file),
        "--method",
        "laplace",
        "--draws",
        "100",
        "--out",
        str(out),
    )
    assert status == 0 and "method laplace, 2 frames" in stdout
    tree = load_posterior(out)
    assert tree["posterior"]["theta"].shape == (4, 100, 2, 1, 2)
    assert not np.asarray(tree["extra"]["flagged"]).any()
    assert np.asarray(tree["extra"]["mode"]).shape == (2, 2)


def test_laplace_refuses_bad_options_in_one_line():
    task = get_task("isolated")
    adu = simulate(task, 1, 0).adu
    with pytest.raises(Exception, match="max_iter"):
        laplace_fit(task, adu, max_iter=0)
    with pytest.raises(Exception, match="tol"):
        laplace_fit(task, adu, tol=-1.0)
    with pytest.raises(Exception, match="laplace takes no option"):
        get_method("laplace")(task, adu, steps=3)
