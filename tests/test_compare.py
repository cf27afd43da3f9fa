"""compare: variance-map agreement against hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from bayes_smlm.compare import variance_agreement


def test_identical_and_scaled_maps():
    rng = np.random.default_rng(0)
    ref = rng.random((3, 8, 8))
    same = variance_agreement(ref, ref)
    np.testing.assert_allclose(same.pearson, 1.0)
    np.testing.assert_allclose(same.summed_ratio, 1.0)
    double = variance_agreement(2 * ref, ref)
    np.testing.assert_allclose(double.pearson, 1.0)
    assert double.median_summed_ratio == pytest.approx(2.0)


def test_pearson_matches_numpy_corrcoef():
    rng = np.random.default_rng(1)
    a, b = rng.random((4, 5, 6)), rng.random((4, 5, 6))
    expected = [np.corrcoef(x.ravel(), y.ravel())[0, 1] for x, y in zip(a, b)]
    np.testing.assert_allclose(variance_agreement(a, b).pearson, expected, rtol=1e-12)


def test_constant_reference_is_an_error_not_nan():
    with pytest.raises(ValueError, match="constant"):
        variance_agreement(np.ones((1, 4, 4)), np.ones((1, 4, 4)))


# --- entropies -------------------------------------------------------------------------------


def test_gaussian_entropies_match_scipy():
    from scipy import stats

    from bayes_smlm.compare.entropy import gaussian_entropy, gaussian_entropy_map

    cov = np.array([[0.01, 0.003], [0.003, 0.02]])
    assert gaussian_entropy(cov) == pytest.approx(stats.multivariate_normal(cov=cov).entropy())
    np.testing.assert_allclose(
        gaussian_entropy_map(np.array([0.25, 4.0])),
        [stats.norm(scale=0.5).entropy(), stats.norm(scale=2.0).entropy()],
    )


def test_knn_entropy_recovers_a_known_gaussian_and_a_uniform_square():
    from bayes_smlm.compare.entropy import knn_entropy

    rng = np.random.default_rng(3)
    cov = np.array([[0.01, 0.003], [0.003, 0.02]])
    exact = 0.5 * np.log((2 * np.pi * np.e) ** 2 * np.linalg.det(cov))
    est = knn_entropy(rng.multivariate_normal([0, 0], cov, size=(20, 2000)))
    # 20 independent estimates: their mean is within 4 standard errors of the exact value
    # (plus the estimator's small-sample bias, ≪ 0.02 nats at 2000 draws in 2-D)
    assert abs(est.mean() - exact) < 4 * est.std(ddof=1) / np.sqrt(20) + 0.02
    square = knn_entropy(rng.uniform(0, 0.5, size=(20, 2000, 2)))
    assert abs(square.mean() - np.log(0.25)) < 4 * square.std(ddof=1) / np.sqrt(20) + 0.03


# --- KDE interval coverage ---------------------------------------------------------------------


def test_order_statistic_intervals_attain_their_level_on_exchangeable_draws():
    """Truth and S samples from the same distribution: coverage = (j − i)/(S + 1) exactly."""
    from bayes_smlm.compare.kde_calibration import kde_coverage, order_statistic_interval

    assert order_statistic_interval(64, 0.9)[2] == pytest.approx(59 / 65)
    assert order_statistic_interval(16, 0.95)[2] == pytest.approx(15 / 17)
    rng = np.random.default_rng(4)
    frames, s, pixels = 400, 16, 50
    scale = rng.gamma(2.0, size=(frames, 1, pixels))  # a skewed, frame-dependent "posterior"
    draws = rng.exponential(scale, size=(frames, s + 1, pixels))
    truth, samples = draws[:, 0], draws[:, 1:]
    cov = kde_coverage(
        iter(samples[..., None]), truth[..., None], np.ones((frames, pixels, 1), bool)
    )
    for level, attained, got in zip(cov.levels, cov.attained, cov.coverage):
        se = np.sqrt(attained * (1 - attained) / (frames * pixels))
        assert abs(got - attained) < 4 * se, (level, got, attained)


@pytest.mark.slow
def test_exact_grid_posterior_covers_the_true_kde_at_the_attained_level(isolated):
    from bayes_smlm.compare.kde_calibration import kde_coverage, signal_mask, theta_kde_samples
    from bayes_smlm.forward.simulate import simulate
    from bayes_smlm.methods import get_method

    frames = simulate(isolated, 64, 77)
    grid = get_method("grid")(isolated, frames.adu, chains=1, draws=640)
    mask = signal_mask(grid.kde_mean)
    cov = kde_coverage(theta_kde_samples(grid.theta_flat(), isolated, 64), frames.kde, mask)
    # pixels of a frame are correlated: the standard error comes from the 64 independent frames
    assert np.all(np.abs(cov.coverage - cov.attained) < 3.5 * cov.standard_error + 0.01)


def test_signal_mask_does_not_look_at_the_truth():
    from bayes_smlm.compare.kde_calibration import signal_mask

    mean = np.zeros((1, 4, 4))
    mean[0, 1, 1] = 0.5
    np.testing.assert_array_equal(signal_mask(mean), mean >= 0.05)


# --- CRLB gaps ---------------------------------------------------------------------------------


def test_crlb_gaps_of_synthetic_draws_with_known_spread():
    from bayes_smlm.compare.crlb_gaps import posterior_crlb_gaps, truth_order

    rng = np.random.default_rng(5)
    truth = rng.uniform(5, 15, size=(50, 2, 2))
    crlb = np.full((50, 2, 2), 0.1)
    centre = truth + rng.normal(0, 0.1, truth.shape)  # posterior means one √CRLB from the truth
    draws = centre[:, None] + rng.normal(0, 0.2, (50, 4000, 2, 2))  # SD = 2 √CRLB
    draws = draws[:, :, ::-1]  # labels in the other order: matching must undo it
    np.testing.assert_array_equal(truth_order(draws.mean(1), truth), np.tile([1, 0], (50, 1)))
    gaps = posterior_crlb_gaps(draws, truth, crlb)
    np.testing.assert_allclose(gaps["sd_ratio_median"], 2.0, rtol=0.03)
    np.testing.assert_allclose(gaps["rmse_ratio"], 1.0, atol=4 / np.sqrt(2 * 100))


def test_ratio_and_difference_maps():
    from bayes_smlm.compare import variance_difference_map, variance_ratio_map

    a, b = np.array([[1e-2, 0.0]]), np.array([[1e-3, 0.0]])
    np.testing.assert_allclose(variance_ratio_map(a, b), [[1.0, 0.0]])
    np.testing.assert_allclose(variance_difference_map(a, b), [[9e-3, 0.0]])


def test_sd_standard_error_matches_the_closed_form_of_an_antithetic_chain():
    """Gaussian AR(1) draws with ρ = −0.5 (antithetic, as HMC's often are): the ESS of the draws
    is N(1−ρ)/(1+ρ) = 3N but that of their squares N(1−ρ²)/(1+ρ²) = 0.6N, so SE(SD) =
    √((1+ρ²)/(1−ρ²)) / √(2N). The estimate matches that and the spread of SDs over 400
    replicate runs (relative SE of that spread 1/√798 ≈ 3.5 %: tolerance 4 of those)."""
    from bayes_smlm.compare.exactness import sd_standard_error

    rho, replicates, chains, draws = -0.5, 400, 4, 1000
    rng = np.random.default_rng(7)
    noise = rng.standard_normal((replicates, chains, draws)) * np.sqrt(1 - rho**2)
    x = np.empty_like(noise)
    x[..., 0] = rng.standard_normal((replicates, chains))
    for t in range(1, draws):
        x[..., t] = rho * x[..., t - 1] + noise[..., t]
    n = chains * draws
    closed_form = np.sqrt((1 + rho**2) / (1 - rho**2) / (2 * n))
    estimated = sd_standard_error(x)
    assert estimated.shape == (replicates,)
    assert np.median(estimated) == pytest.approx(closed_form, rel=0.05)
    observed = x.reshape(replicates, n).std(axis=1).std(ddof=1)
    assert observed == pytest.approx(closed_form, rel=4 / np.sqrt(2 * (replicates - 1)))
    # an error taken from the ESS of the draws themselves (3N) would be √(5/3 · 3) ≈ 2.2 × too small
    assert observed > 2 * np.sqrt(1 / (2 * 3 * n))
