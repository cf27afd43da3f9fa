"""NumPyro likelihoods and the BlackJAX-ready log density."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from numpyro.distributions.transforms import biject_to
from numpyro.infer import Predictive
from scipy import stats

from bayes_smlm.forward import physics
from bayes_smlm.forward.distributions import PoissonApproxADU, PoissonGaussianADU, UniformDisc
from bayes_smlm.forward.model import (
    exact_sum_length,
    image_model,
    make_log_density,
    position_log_density,
)
from bayes_smlm.forward.simulate import simulate_fixed
from bayes_smlm.forward.tasks import get_task


def _loglik_ratio(task, adu, theta_a, theta_b, likelihood):
    logp = position_log_density(task, adu, likelihood=likelihood)
    return float(logp(jnp.asarray(theta_a)) - logp(jnp.asarray(theta_b)))


def test_exact_convolution_matches_an_independent_scipy_sum():
    cam = physics.CameraArrays(jnp.float32(100.0), jnp.float32(1.7), jnp.float32(6.0))
    omega = jnp.array([0.0, 0.4, 3.0, 25.0])
    adu = jnp.array([99.0, 101.2, 104.9, 150.0])
    got = np.asarray(PoissonGaussianADU(omega, cam, n_max=120).log_prob(adu))
    n = np.arange(400)
    for k in range(4):
        ref = np.log(
            np.sum(
                stats.poisson.pmf(n, float(omega[k]))
                * stats.norm.pdf(float(adu[k]), 1.7 * n + 100.0, np.sqrt(6.0))
            )
        )
        assert got[k] == pytest.approx(ref, abs=2e-4)


def test_exact_convolution_is_a_normalised_density_in_adu():
    cam = physics.CameraArrays(jnp.float32(100.0), jnp.float32(2.0), jnp.float32(4.0))
    grid = jnp.linspace(80.0, 200.0, 24001)
    dens = jnp.exp(PoissonGaussianADU(jnp.full(grid.shape, 12.0), cam, n_max=80).log_prob(grid))
    assert float(jnp.trapezoid(dens, grid)) == pytest.approx(1.0, abs=1e-4)


@pytest.mark.slow
def test_poisson_approximation_and_exact_convolution_agree_when_readout_noise_vanishes():
    theta_true = np.array([[9.2, 10.1]], np.float32)
    others = [
        theta_true + np.asarray(s, np.float32) for s in ([[0.15, 0.0]], [[0.0, -0.3]], [[0.4, 0.4]])
    ]
    worst = {}
    for w2 in (1e-2, 1e-4, 1e-6):
        task = get_task("isolated", {"readout_var": w2, "background": 0.5})
        gaps = []
        for frame in simulate_fixed(task, theta_true, 3, seed=1):
            for other in others:
                approx = _loglik_ratio(task, frame, theta_true, other, "poisson")
                exact = _loglik_ratio(task, frame, theta_true, other, "poisson_gaussian")
                gaps.append(abs(exact - approx) / abs(exact))
        worst[w2] = max(gaps)
    # The gap comes from the readout noise in n = (ADU − o)/g and shrinks like w.
    assert worst[1e-6] < 5e-3
    assert worst[1e-6] < worst[1e-4] / 3 < worst[1e-2] / 9


@pytest.mark.slow
def test_poisson_approximation_and_exact_convolution_differ_for_dim_pixels_with_readout_noise():
    # Per pixel, the shifted Poisson(ω + w²/g²) matches the exact law's mean and variance but not
    # its tails: with w² = 30 ADU² and a dim pixel the log densities 3σ out differ by O(1), while
    # a bright pixel (Gaussian limit for both) brings them together.
    cam = physics.CameraArrays(jnp.float32(100.0), jnp.float32(1.0), jnp.float32(30.0))
    sd = np.sqrt(30.0)
    for omega in (0.5, 50.0):
        om = jnp.full(2, omega)
        adu = jnp.array([100.0 + omega - 3 * sd, 100.0 + omega + 3 * sd])
        gap = np.abs(
            np.asarray(
                PoissonApproxADU(om, cam).log_prob(adu)
                - PoissonGaussianADU(om, cam, n_max=250).log_prob(adu)
            )
        )
        if omega < 1:
            dim_gap = gap.max()
        else:
            bright_gap = gap.max()
    assert dim_gap > 0.5
    assert bright_gap < dim_gap / 5
    # On whole frames of a dim emitter the log-likelihood ratios between positions differ too.
    task = get_task("isolated", {"readout_var": 30.0, "i0": 60.0, "background": 0.2})
    theta_true = np.array([[9.2, 10.1]], np.float32)
    rel = []
    for frame in simulate_fixed(task, theta_true, 20, seed=2):
        approx = _loglik_ratio(task, frame, theta_true, theta_true + 0.5, "poisson")
        exact = _loglik_ratio(task, frame, theta_true, theta_true + 0.5, "poisson_gaussian")
        rel.append(abs(exact - approx) / abs(exact))
    assert np.median(rel) > 0.02


@pytest.mark.slow
def test_log_density_gradient_matches_central_finite_differences():
    task = get_task("paper", {"n_emitters": 3, "background": 1.0})
    theta = np.array([[6.3, 9.1], [12.2, 8.4], [9.6, 13.0]])
    adu = simulate_fixed(task, theta.astype(np.float32), 1, seed=4)[0]
    with jax.enable_x64(True):
        for likelihood in ("poisson", "poisson_gaussian"):
            logp = position_log_density(task, adu, likelihood=likelihood)
            at = jnp.asarray(theta + 0.07, jnp.float64)
            grad = np.asarray(jax.grad(logp)(at))
            h = 1e-5
            fd = np.zeros_like(grad)
            for idx in np.ndindex(*theta.shape):
                e = np.zeros_like(theta)
                e[idx] = h
                fd[idx] = (float(logp(at + e)) - float(logp(at - e))) / (2 * h)
            np.testing.assert_allclose(grad, fd, rtol=1e-5, atol=1e-4)


def test_log_density_is_minus_infinity_outside_the_prior_disc(isolated):
    adu = simulate_fixed(isolated, np.array([[9.5, 9.5]], np.float32), 1, seed=0)[0]
    logp = position_log_density(isolated, adu)
    assert np.isfinite(float(logp(jnp.array([[9.5, 9.5]]))))
    assert float(logp(jnp.array([[9.5 + 7.01, 9.5]]))) == -np.inf
    assert float(logp(jnp.array([[2.0, 2.0]]))) == -np.inf  # inside the frame, outside the disc
    grad = jax.grad(logp)(jnp.array([[9.6, 9.4]]))
    assert np.all(np.isfinite(np.asarray(grad)))


def test_log_density_peaks_near_the_truth_and_vmaps_over_frames(isolated):
    theta = np.array([[7.3, 11.8]], np.float32)
    frames = simulate_fixed(isolated, theta, 8, seed=5)
    logdensity = make_log_density(isolated)
    batched = jax.jit(jax.vmap(lambda t, a: logdensity({"theta": t}, a)))
    at_truth = batched(jnp.broadcast_to(theta, (8, 1, 2)), jnp.asarray(frames))
    off = batched(jnp.broadcast_to(theta + 1.0, (8, 1, 2)), jnp.asarray(frames))
    assert np.all(np.asarray(at_truth) > np.asarray(off) + 10)


def test_model_with_latent_intensity_and_background_samples_and_scores(isolated):
    draws = Predictive(image_model, num_samples=50)(
        jax.random.PRNGKey(0), isolated, infer_intensity=True, infer_background=True
    )
    assert draws["theta"].shape == (50, 1, 2) and draws["i0"].shape == (50, 1)
    assert draws["adu"].shape == (50, 20, 20)
    lo, hi = isolated.prior.i0_range
    assert float(draws["i0"].min()) >= lo and float(draws["i0"].max()) <= hi
    logdensity = make_log_density(isolated, infer_intensity=True, infer_background=True)
    params = {
        "theta": draws["theta"][0],
        "i0": draws["i0"][0],
        "background": draws["background"][0],
    }
    assert np.isfinite(float(logdensity(params, draws["adu"][0])))
    params["background"] = jnp.float32(-1.0)
    # under jit, as samplers call it (outside jit NumPyro also warns about the support)
    assert float(jax.jit(logdensity)(params, draws["adu"][0])) == -np.inf


def test_uniform_disc_bijection_round_trips_and_its_jacobian_matches_autodiff():
    prior = UniformDisc(jnp.array([9.5, 9.5]), 7.0)
    transform = biject_to(prior.support)
    u = jnp.array([[0.0, 0.0], [0.3, -1.2], [2.5, 0.7], [1e-6, 2e-6]])
    v = transform(u)
    assert bool(jnp.all(prior.support(v)))
    np.testing.assert_allclose(np.asarray(transform.inv(v)), np.asarray(u), atol=2e-4)
    for row in u:
        jac = jax.jacfwd(transform)(row)
        ref = np.log(abs(np.linalg.det(np.asarray(jac))))
        assert float(transform.log_abs_det_jacobian(row, transform(row))) == pytest.approx(
            ref, abs=1e-4
        )


def test_exact_sum_length_covers_the_poisson_tail_and_the_data(isolated):
    n_max = exact_sum_length(isolated)
    peak = float(physics.pixel_integrated_gaussian(0.0, 0.0, 0.92)) ** 2
    assert stats.poisson.sf(n_max, 200 * peak) < 1e-10
    bright = np.full((20, 20), 100.0, np.float32)
    bright[3, 3] = 100.0 + 900.0
    assert exact_sum_length(isolated, bright) >= 900
