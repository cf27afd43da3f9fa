"""A gain map's calibration error in ``localize``: the sandwich covariance of
:func:`window_fit.gain_error_widened` makes the stated uncertainties of windows whose photons
carry a per-pixel gain error honest again, and ``--gain-se`` is refused where it cannot act."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import erf
from scipy.stats import chi2

from bayes_smlm.acquisition.settings import LocalizeSettings
from bayes_smlm.acquisition.window_fit import fit_windows, gain_error_widened
from bayes_smlm.errors import ConfigError
from bayes_smlm.forward.tasks import get_task

SIDE, PEDESTAL, SIGMA, BACKGROUND, GAIN_SE = 11, 2.0, 0.92, 10.0, 0.06


def _psf(x, y):
    """(B, SIDE, SIDE) pixel-integrated unit PSFs, written from eq. 2 alone."""
    c = np.arange(SIDE)
    s = np.sqrt(2.0) * SIGMA
    ex = 0.5 * (erf((c + 0.5 - x[:, None]) / s) - erf((c - 0.5 - x[:, None]) / s))
    ey = 0.5 * (erf((c + 0.5 - y[:, None]) / s) - erf((c - 0.5 - y[:, None]) / s))
    return ey[:, :, None] * ex[:, None, :]


def _z_scores(gain_se: float, windows: int = 800, seed: int = 5):
    """z = (fit − truth)/SD of x and y for windows of one bright emitter whose photons are
    ``Poisson(ω)/(1 + ε)`` (a gain map off by ε ~ N(0, GAIN_SE²) per pixel), the SDs widened for
    ``gain_se`` (0: the plain Laplace SDs)."""
    task = get_task(
        "widefield", {"prior.i0_range": [100.0, 5000.0], "prior.background_range": [0.0, 50.0]}
    )
    rng = np.random.default_rng(seed)
    x, y = rng.uniform(4.5, 5.5, (2, windows))
    i0 = rng.uniform(1000.0, 3000.0, windows)
    omega = BACKGROUND + i0[:, None, None] * _psf(x, y)
    error = rng.normal(0.0, GAIN_SE, omega.shape)
    counts = rng.poisson(omega) / (1.0 + error) + rng.poisson(PEDESTAL, omega.shape)
    pedestal = np.full(counts.shape, PEDESTAL)
    fitted = np.ones(counts.shape, bool)
    active = np.ones((windows, 1), bool)
    start = np.stack(
        [
            np.full(windows, 5.0),
            np.full(windows, 5.0),
            np.full(windows, 1500.0),
            np.full(windows, 5.0),
        ],
        1,
    )
    fit = fit_windows(task, counts, pedestal, start, active, fitted)
    assert fit.converged.all()
    if gain_se:
        fit = gain_error_widened(task, fit, counts, pedestal, fitted, active, gain_se)
    sd = np.sqrt(np.stack([fit.covariance[:, 0, 0], fit.covariance[:, 1, 1]], 1))
    return (fit.mode[:, :2] - np.stack([x, y], 1)) / sd, fit


def _sd_interval(n: int, level: float = 0.999) -> tuple[float, float]:
    """Where the SD of n standard normal values falls with probability ``level``."""
    tail = (1.0 - level) / 2.0
    return float(np.sqrt(chi2.ppf(tail, n) / n)), float(np.sqrt(chi2.ppf(1.0 - tail, n) / n))


def test_widened_covariance_gives_unit_z_under_a_gain_error():
    """With a 6 % per-pixel gain error the plain Laplace SDs are too small (z SD above the 99.9 %
    interval of 800 standard normal values); widened by the sandwich, the z SD of x and of y
    lies inside it."""
    lo, hi = _sd_interval(800)
    plain, _ = _z_scores(0.0)
    widened, _ = _z_scores(GAIN_SE)
    assert (plain.std(0) > hi).all(), plain.std(0)
    assert ((widened.std(0) > lo) & (widened.std(0) < hi)).all(), widened.std(0)


def test_widened_chi2_is_pearsons_with_the_total_variance():
    """χ² of the widened fit, recomputed from the mode in numpy with eq. 2's PSF: Σ (n − λ)² /
    (λ + gain_se² ω²)."""
    _, fit = _z_scores(GAIN_SE, windows=16)
    rng = np.random.default_rng(5)
    x, y = rng.uniform(4.5, 5.5, (2, 16))
    i0 = rng.uniform(1000.0, 3000.0, 16)
    omega_true = BACKGROUND + i0[:, None, None] * _psf(x, y)
    error = rng.normal(0.0, GAIN_SE, omega_true.shape)
    counts = rng.poisson(omega_true) / (1.0 + error) + rng.poisson(PEDESTAL, omega_true.shape)
    omega = fit.mode[:, 3, None, None] + fit.mode[:, 2, None, None] * _psf(
        fit.mode[:, 0], fit.mode[:, 1]
    )
    rate = omega + PEDESTAL
    expected = np.sum((counts - rate) ** 2 / (rate + GAIN_SE**2 * omega**2), axis=(1, 2))
    np.testing.assert_allclose(fit.chi2, expected, rtol=2e-3)


@pytest.mark.parametrize("value", [-0.01, 0.5, float("nan")])
def test_a_bad_gain_se_is_refused_by_name(value):
    with pytest.raises(ConfigError, match="gain_se"):
        LocalizeSettings(gain_se=value)


def test_gain_se_with_nuts_is_refused():
    """NUTS samples the likelihood, which has no term for the gain error: refused, not
    ignored."""
    with pytest.raises(ConfigError, match="gain_se.*Laplace"):
        LocalizeSettings(gain_se=0.05, method="nuts")
