"""Fisher information / CRLB against Mortensen's formula and against the score's covariance."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bayes_smlm.errors import ConfigError
from bayes_smlm.forward.fisher import fisher_information, mortensen_mle_sd
from bayes_smlm.forward.model import position_log_density
from bayes_smlm.forward.simulate import simulate_fixed
from bayes_smlm.forward.tasks import get_task


@pytest.mark.parametrize("i0", [100.0, 200.0, 1000.0, 5000.0])
@pytest.mark.parametrize("background", [0.0, 2.0, 20.0])
@pytest.mark.parametrize("readout_var", [0.0, 5.0])
def test_sqrt_crlb_matches_mortensen_within_two_percent_at_a_pixel_centre(
    i0, background, readout_var
):
    task = get_task("isolated", {"i0": i0, "background": background, "readout_var": readout_var})
    bound = fisher_information(task, [[9.0, 10.0]])
    ref = mortensen_mle_sd(0.92, i0, background + readout_var)
    assert bound.sd_of("x0") == pytest.approx(ref, rel=0.02)
    assert bound.sd_of("y0") == pytest.approx(ref, rel=0.02)


def test_default_constants_give_the_design_sanity_numbers(isolated):
    assert fisher_information(isolated, [[9.0, 9.0]]).sd_of("x0") == pytest.approx(0.0955, abs=5e-4)
    no_read = get_task("isolated", {"readout_var": 0.0})
    assert fisher_information(no_read, [[9.0, 9.0]]).sd_of("x0") == pytest.approx(0.0682, abs=5e-4)


def test_mortensen_formula_reduces_to_sigma_a_over_root_n_without_background():
    assert mortensen_mle_sd(1.0, 400.0, 0.0) == pytest.approx(np.sqrt((1 + 1 / 12) / 400))
    assert mortensen_mle_sd(1.0, 400.0, 1e-9) == pytest.approx(
        np.sqrt((1 + 1 / 12) / 400), rel=1e-4
    )


def test_fisher_equals_the_covariance_of_the_score_over_simulated_frames():
    # With w² = 0 and g = 1 the Poisson likelihood is exact, so Cov[∇ℓ(θ_true)] = I(θ_true).
    task = get_task("isolated", {"readout_var": 0.0, "background": 1.0})
    theta = np.array([[9.3, 10.6]], np.float32)
    m = 4000
    frames = simulate_fixed(task, theta, m, seed=21)

    def score(adu):
        return jax.grad(position_log_density(task, adu))(jnp.asarray(theta)).reshape(-1)

    scores = np.asarray(jax.jit(jax.vmap(score))(jnp.asarray(frames)), np.float64)
    fisher = fisher_information(task, theta).fisher
    assert np.all(np.abs(scores.mean(0)) < 4.5 * np.sqrt(np.diag(fisher) / m))
    emp = np.cov(scores.T)
    # Var of a sample variance of a near-Gaussian score ≈ 2 I² / m.
    for i in range(2):
        assert abs(emp[i, i] - fisher[i, i]) < 4.5 * fisher[i, i] * np.sqrt(2 / m)


def test_joint_bound_of_distant_emitters_equals_their_single_bounds(paper):
    theta = [[4.0, 4.0], [15.0, 15.0]]
    joint = fisher_information(paper, theta)
    single = fisher_information(paper, [theta[0]])
    np.testing.assert_allclose(joint.sd_xy[0], single.sd_xy[0], rtol=1e-3)
    close = fisher_information(paper, [[9.0, 9.0], [9.6, 9.0]])
    assert close.sd_xy[0, 0] > 1.5 * single.sd_xy[0, 0]  # overlap costs precision


def test_nuisance_parameters_never_tighten_the_bound():
    task = get_task("isolated", {"background": 10.0})
    plain = fisher_information(task, [[9.3, 9.8]])
    full = fisher_information(task, [[9.3, 9.8]], include_intensity=True, include_background=True)
    assert full.names == ("x0", "y0", "i0_0", "b")
    # One emitter: ∂ω/∂x is odd about the emitter, ∂ω/∂i0 and ∂ω/∂b even, so their cross
    # information vanishes (up to pixelation) and knowing i0 and b buys almost nothing.
    np.testing.assert_allclose(full.sd[:2], plain.sd[:2], rtol=1e-4)
    # A close pair along x: unknown brightnesses trade off against the separation, so the x
    # bound widens several-fold, while y (no coupling by symmetry) stays put.
    pair = [[9.0, 9.0], [9.8, 9.0]]
    dense = get_task("paper", {"background": 10.0})
    known = fisher_information(dense, pair).sd_xy
    unknown = fisher_information(dense, pair, include_intensity=True, include_background=True).sd_xy
    assert np.all(unknown[:, 0] > 3 * known[:, 0])
    np.testing.assert_allclose(unknown[:, 1], known[:, 1], rtol=1e-3)
    # √CRLB of i0 alone for a Poisson count with background is at least √i0
    assert full.sd_of("i0_0") >= np.sqrt(200.0)


def test_emitter_outside_the_frame_is_rejected(isolated):
    with pytest.raises(
        ConfigError, match=r"argument x: emitter 0 at x = 25 lies outside the frame"
    ):
        fisher_information(isolated, [[25.0, 3.0]])
    with pytest.raises(ConfigError, match=r"argument y:"):
        fisher_information(isolated, [[3.0, -0.6]])


def test_batched_crlb_equals_the_per_frame_fisher_information():
    from bayes_smlm.forward.fisher import position_crlb_sd
    from bayes_smlm.forward.simulate import simulate

    task = get_task("paper", {"n_emitters": 3})
    theta = simulate(task, 2, 2).theta
    expected = np.stack([fisher_information(task, frame).sd_xy for frame in theta])
    np.testing.assert_allclose(position_crlb_sd(task, theta), expected, rtol=1e-3)
