"""The forward model against independent formulas (math.erf, scipy.stats.norm)."""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from bayes_smlm.forward import physics


def delta_e_reference(c: float, t: float, s: float) -> float:
    """Eq. 2 written out with math.erf, as in the paper."""
    return 0.5 * (
        math.erf((c + 0.5 - t) / (math.sqrt(2) * s)) - math.erf((c - 0.5 - t) / (math.sqrt(2) * s))
    )


@pytest.mark.parametrize("sigma", [0.3, 0.92, 2.5])
@pytest.mark.parametrize("mean", [0.0, 0.37, -3.5])
def test_pixel_integrated_psf_sums_to_one_over_a_wide_frame(sigma, mean):
    centres = jnp.arange(-200, 201)
    total = float(jnp.sum(physics.pixel_integrated_gaussian(centres, mean, sigma)))
    assert abs(total - 1.0) < 1e-5


def test_pixel_integrated_gaussian_matches_normal_cdf_differences():
    centres = np.arange(-6, 7, dtype=np.float64)
    for t, s in [(0.2, 0.92), (-1.3, 1.5), (2.75, 0.5)]:
        ref = stats.norm.cdf(centres + 0.5, t, s) - stats.norm.cdf(centres - 0.5, t, s)
        got = np.asarray(physics.pixel_integrated_gaussian(jnp.asarray(centres), t, s))
        np.testing.assert_allclose(got, ref, rtol=2e-5, atol=1e-7)


def test_far_tail_keeps_relative_precision():
    # erf(a) - erf(b) would give exactly 0 here in float32; erfc of |d| does not.
    got = float(physics.pixel_integrated_gaussian(jnp.float32(8.0), 0.0, 0.92))
    ref = stats.norm.sf(7.5, 0, 0.92) - stats.norm.sf(8.5, 0, 0.92)
    assert ref > 0 and abs(got / ref - 1) < 1e-3


def test_expected_photons_is_i0_times_separable_psf_plus_background():
    theta = jnp.array([[4.3, 6.8], [10.0, 2.2]])
    omega = np.asarray(
        physics.expected_photons(theta, jnp.array([200.0, 50.0]), 3.0, 0.92, (12, 14))
    )
    assert omega.shape == (12, 14)
    r, c = 7, 4
    ref = 3.0 + sum(
        i0 * delta_e_reference(c, x, 0.92) * delta_e_reference(r, y, 0.92)
        for (x, y), i0 in zip(np.asarray(theta), (200.0, 50.0))
    )
    assert omega[r, c] == pytest.approx(ref, rel=1e-5)


def test_kde_matches_eq4_at_hand_worked_points():
    sigma, u = 1.5, 4
    peak = delta_e_reference(0, 0, sigma) ** 2
    # θ = 9.625 LR px -> θ_hr = 4 (9.625 + 0.5) - 0.5 = 40 exactly: the kernel is centred on an
    # HR pixel, so y[40, 40] = 1 and y[40, 41] = ΔE(1; 0, σ) ΔE(0; 0, σ) / ΔE(0; 0, σ)².
    y = np.asarray(physics.kde(jnp.array([[9.625, 9.625]]), sigma, u, (20, 20)))
    assert y.shape == (80, 80)
    assert y[40, 40] == pytest.approx(1.0, abs=1e-6)
    assert y[40, 41] == pytest.approx(
        delta_e_reference(1, 0, sigma) / delta_e_reference(0, 0, sigma), rel=1e-5
    )
    assert y[42, 37] == pytest.approx(
        delta_e_reference(-3, 0, sigma) * delta_e_reference(2, 0, sigma) / peak, rel=1e-5
    )
    # θ = (2.0, 5.0) LR px -> θ_hr = (9.5, 21.5): between HR pixels; value at row 21, col 9.
    y = np.asarray(physics.kde(jnp.array([[2.0, 5.0]]), sigma, u, (20, 20)))
    expected = delta_e_reference(9, 9.5, sigma) * delta_e_reference(21, 21.5, sigma) / peak
    assert y[21, 9] == pytest.approx(expected, rel=1e-5)
    # The KDE integrates to u² per emitter divided by the peak scale, summed over emitters.
    two = np.asarray(physics.kde(jnp.array([[5.0, 5.0], [14.0, 12.0]]), sigma, u, (20, 20)))
    assert two.sum() == pytest.approx(2.0 / peak, rel=1e-4)


def test_lr_hr_coordinate_maps_are_inverse_and_align_pixel_edges():
    theta = jnp.array([[-0.5, 0.0], [19.5, 9.5]])
    hr = physics.lr_to_hr(theta, 4)
    np.testing.assert_allclose(np.asarray(hr), [[-0.5, 1.5], [79.5, 39.5]])
    np.testing.assert_allclose(np.asarray(physics.hr_to_lr(hr, 4)), np.asarray(theta))


def test_adu_to_photons_inverts_the_camera_mean():
    cam = physics.CameraArrays(jnp.float32(100.0), jnp.float32(2.0), jnp.float32(8.0))
    omega = jnp.array([0.0, 3.0, 50.0])
    n = physics.adu_to_photons(physics.expected_adu(omega, cam), cam)
    np.testing.assert_allclose(np.asarray(n), np.asarray(omega) + 8.0 / 4.0, rtol=1e-6)


@pytest.mark.parametrize("mean", [-3.2, 0.0, 0.5, 17.25, 39.5, 80.7])
def test_grid_pixel_masses_match_normal_cdf_differences_to_rounding(mean):
    """The shared-edge KDE factors against SciPy's normal CDF, pixel by pixel, tails included."""
    sigma, n = 1.5, 80
    got = np.asarray(physics.grid_pixel_masses(n, jnp.asarray([mean], jnp.float32), sigma))
    lo, hi = np.arange(n) - 0.5, np.arange(n) + 0.5
    want = np.where(
        lo >= mean,
        stats.norm.sf(lo, mean, sigma) - stats.norm.sf(hi, mean, sigma),
        stats.norm.cdf(hi, mean, sigma) - stats.norm.cdf(lo, mean, sigma),
    )
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-7)  # float32, as the per-pixel form
    big = want > 1e-30  # float32 tails: relative precision where the mass is representable
    np.testing.assert_allclose(got[big], want[big], rtol=2e-3)
    same = np.asarray(physics.pixel_integrated_gaussian(jnp.arange(n), mean, sigma))
    np.testing.assert_allclose(got, same, rtol=2e-5, atol=1e-7)
