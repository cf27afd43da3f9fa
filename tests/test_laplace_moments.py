"""Closed-form KDE moments of a Gaussian over θ against the draw-based push-forward."""

from __future__ import annotations

import numpy as np
import pytest

from bayes_smlm.forward.simulate import simulate
from bayes_smlm.forward.tasks import get_task
from bayes_smlm.methods import get_method
from bayes_smlm.methods.laplace import laplace_fit
from bayes_smlm.methods.laplace_gaussian import gaussian_theta_draws
from bayes_smlm.methods.laplace_moments import gaussian_kde_moments
from bayes_smlm.methods.pushforward import kde_moments


@pytest.mark.slow  # ≈ 1 min of draws
def test_closed_form_matches_many_draws_on_dense_frames_away_from_the_edge():
    task = get_task("paper")
    batch = simulate(task, 10, seed=50)
    fit = laplace_fit(task, batch.adu)
    whole = fit.edge_mass < 1e-4  # the prior disc does not cut the Gaussian
    assert whole.sum() >= 3
    draws = gaussian_theta_draws(fit, task, 4, 10000, 0)  # (C, D, F, N, 2)
    flat = np.moveaxis(draws, 2, 0).reshape(10, -1, 10, 2)[whole]
    mean_d, var_d = kde_moments(flat, task)
    mean_c, var_c, _ = gaussian_kde_moments(fit.mode[whole], fit.covariance[whole], task)
    # Monte Carlo error of 40 000 draws: SE(mean) = sqrt(var / S), SE(var) ≈ var·sqrt(2 / S)
    s = flat.shape[1]
    assert np.all(np.abs(mean_c - mean_d) <= 5 * np.sqrt(var_d / s) + 1e-3)
    ratio = var_c.sum((1, 2)) / var_d.sum((1, 2))
    assert np.all(np.abs(ratio - 1) < 0.02), ratio
    signal = var_d > 0.1 * var_d.max()
    assert np.all(np.abs(var_c - var_d)[signal] <= 6 * var_d[signal] * np.sqrt(2 / s) + 1e-4)


def test_closed_form_of_one_emitter_is_exact_for_a_point_mass_limit():
    """A tiny covariance: the mean is the KDE of the mode itself (up to the Gaussian kernel's
    2·10⁻⁴ of the peak), the variance ≈ 0."""
    task = get_task("isolated")
    mode = np.array([[9.3, 10.1]], np.float32)
    mean, var, _ = gaussian_kde_moments(mode, np.eye(2, dtype=np.float32)[None] * 1e-8, task)
    from bayes_smlm.methods.pushforward import kde_images

    exact = kde_images(mode.reshape(1, 1, 2), task)[0]
    np.testing.assert_allclose(mean[0], exact, atol=5e-4)
    assert var.max() < 1e-5


@pytest.mark.slow  # ≈ 2 min: 40 000 draws on each of 40 frames
def test_closed_form_takes_the_disc_edge_into_account():
    """Frames whose Gaussian the disc cuts (edge mass 0.01–0.9): where the closed form says it
    holds, it matches 40 000 draws from the restricted Gaussian within their Monte Carlo error
    (fresh frames: not those its thresholds were chosen on), where the uncut one does not."""
    task = get_task("paper")
    batch = simulate(task, 40, seed=78)
    fit = laplace_fit(task, batch.adu)
    cut = (fit.edge_mass > 0.01) & (fit.edge_mass < 0.9)
    _, _, holds = gaussian_kde_moments(fit.mode, fit.covariance, task)
    assert holds[cut].mean() > 0.6  # most frames the disc cuts keep the closed form
    cut &= holds
    assert cut.sum() >= 8
    draws = gaussian_theta_draws(fit, task, 4, 10000, 0)
    flat = np.moveaxis(draws, 2, 0).reshape(40, -1, 10, 2)[cut]
    mean_d, var_d = kde_moments(flat, task)
    mean_c, var_c, _ = gaussian_kde_moments(fit.mode[cut], fit.covariance[cut], task)
    s = flat.shape[1]
    ratio = var_c.sum((1, 2)) / var_d.sum((1, 2))
    assert np.all(np.abs(ratio - 1) < 0.015), ratio
    z_mean = np.abs(mean_c - mean_d) / (np.sqrt(var_d / s) + 1e-4)
    assert np.median(z_mean.max(axis=(1, 2))) < 4, z_mean.max(axis=(1, 2))
    # without the cuts (a disc so wide that nothing is cut) the same frames are off
    wide = get_task("paper", {"prior.radius": 10.0})
    mean_w, _, _ = gaussian_kde_moments(fit.mode[cut], fit.covariance[cut], wide)
    z_wide = np.abs(mean_w - mean_d) / (np.sqrt(var_d / s) + 1e-4)
    assert np.median(z_wide.max(axis=(1, 2))) > 10


@pytest.mark.slow  # ≈ 1 min of draws
def test_laplace_method_takes_its_moments_in_closed_form_and_matches_its_draws():
    task = get_task("paper")
    batch = simulate(task, 6, seed=51)
    result = get_method("laplace")(task, batch.adu, seed=0, draws=2000)
    draw_mean, draw_var = kde_moments(result.theta_flat(), task)
    closed = result.extra["closed_form"]
    assert closed.sum() >= 4
    for f in range(6):  # closed form vs 8000 draws: SE of a summed variance ≲ 1.6 %
        ratio = result.kde_var[f].sum() / draw_var[f].sum()
        assert abs(ratio - 1) < 0.05, (f, ratio)
