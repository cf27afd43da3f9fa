"""A window's posterior as ``localize`` computes it, against independent answers: the Laplace
fit's stated SDs against the errors of 2400 localizations, NUTS against quadrature on a grid."""

import numpy as np

from bayes_smlm.acquisition.sample import MovieSettings, simulate_movie
from bayes_smlm.acquisition.scoring import match_movie


def test_window_fit_uncertainty_is_calibrated():
    """400 sparse frames (6 emitters each, i0 and background unknown): z = error / stated SD has
    SD 1 within 3 standard errors of a sample SD (1/√(2·2400) each)."""
    from bayes_smlm.acquisition.pipeline import LocalizeSettings, localize_frames
    from bayes_smlm.forward.tasks import get_task

    sim = simulate_movie(
        MovieSettings(frames=400, height=40, width=40, emitters_per_frame=6), seed=11
    )
    task = get_task(
        "widefield",
        {
            "height": 40,
            "width": 40,
            "prior.radius": 20.0,
            "offset": sim.offset,
            "gain": sim.gain,
            "readout_var": sim.readout_var,
        },
    )
    rows = localize_frames(task, sim.movie.astype(np.float32), LocalizeSettings())
    found, true = match_movie(rows, sim.theta)
    assert len(found) >= 0.99 * sim.theta[..., 0].size
    error = np.stack([rows["x"][found], rows["y"][found]], 1) - sim.theta.reshape(-1, 2)[true]
    z = error / np.stack([rows["sd_x"][found], rows["sd_y"][found]], 1)
    tolerance = 3 / np.sqrt(2 * len(found))
    assert np.all(np.abs(z.std(0) - 1) < tolerance + 0.02), z.std(0)


def _window_grid_moments(counts, pedestal, mode, sd, sigma, points=31, span=6.0):
    """Posterior mean and SD of (x, y, i0, b) of one emitter in a window by quadrature on a
    4-D grid of ± ``span`` Laplace SDs about the mode (flat priors; the grid lies inside them),
    with the PSF integrated over pixels by erf — independent of the package's code."""
    from scipy.special import erf

    axes = [m + s * np.linspace(-span, span, points) for m, s in zip(mode, sd)]
    h, w = counts.shape

    def profile(centre, n):  # (G, n): mass of N(centre, σ²) in unit pixels about 0..n-1
        edges = np.arange(n + 1) - 0.5
        c = erf((edges[None, :] - centre[:, None]) / (np.sqrt(2) * sigma))
        return 0.5 * (c[:, 1:] - c[:, :-1])

    ex, ey = profile(axes[0], w), profile(axes[1], h)
    psf = ey[None, :, :, None] * ex[:, None, None, :]  # (Gx, Gy, h, w)
    loglik = np.empty([points] * 4)
    for k, i0 in enumerate(axes[2]):
        rate = (
            i0 * psf[:, :, None] + axes[3][None, None, :, None, None] + pedestal
        )  # (Gx, Gy, Gb, h, w)
        loglik[:, :, k, :] = np.sum(counts * np.log(rate) - rate, axis=(-2, -1))
    weight = np.exp(loglik - loglik.max())
    weight /= weight.sum()
    grids = np.meshgrid(*axes, indexing="ij")
    mean = np.array([np.sum(weight * g) for g in grids])
    sd = np.sqrt([np.sum(weight * (g - m) ** 2) for g, m in zip(grids, mean)])
    return mean, sd


def test_window_nuts_matches_a_grid_posterior():
    """NUTS of a window (position, i0 and b unknown) against quadrature of the same posterior on
    a 4-D grid: means within 4 MCSE, SDs within 5 % (≈ 4 standard errors of an SD from
    ≥ 2000 effective draws), R-hat ≤ 1.01, no divergence — on dim spots (300 photons on 20
    photons/px, read-noise pedestal 2)."""
    from bayes_smlm.acquisition.window_fit import fit_windows
    from bayes_smlm.acquisition.window_sampling import sample_windows
    from bayes_smlm.forward import physics
    from bayes_smlm.forward.tasks import get_task

    task = get_task("widefield")
    sigma, shape, pedestal = task.optics.sigma_psf, (7, 7), 2.0
    rng = np.random.default_rng(3)
    truth = np.array([[3.3, 2.8]])
    rate = np.asarray(physics.expected_photons(truth, 300.0, 20.0, sigma, shape)) + pedestal
    counts = rng.poisson(rate, (4,) + shape).astype(np.float32)
    ped = np.full_like(counts, pedestal)
    active = np.ones((4, 1), bool)
    start = np.tile(np.array([3.0, 3.0, 250.0, 15.0], np.float32), (4, 1))
    fit = fit_windows(task, counts, ped, start, active)
    draws = sample_windows(task, counts, ped, fit, active, seed=2, draws=1000)
    assert np.all(draws.rhat <= 1.01) and not draws.divergences.any(), draws.rhat
    for w in range(4):
        laplace_sd = np.sqrt(np.diag(fit.covariance[w]))
        mean, sd = _window_grid_moments(
            counts[w].astype(float), pedestal, fit.mode[w], laplace_sd, sigma
        )
        sampled_sd = np.sqrt(np.diag(draws.covariance[w]))
        mcse = sampled_sd / np.sqrt(draws.ess_bulk[w])
        assert np.all(np.abs(draws.mean[w] - mean) < 4 * mcse), (w, draws.mean[w], mean, mcse)
        assert np.all(np.abs(sampled_sd / sd - 1) < 0.05), (w, sampled_sd, sd)
