"""Counts of emitters per window by their evidence (``acquisition.window_counts``): the Laplace
evidence against brute-force quadrature, duplicates dropped, real close pairs kept, and the
movie-level repeats and probabilities a user sees in the table."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import erf, logsumexp

from bayes_smlm.acquisition.window_counts import count_emitters, window_log_evidence
from bayes_smlm.acquisition.window_fit import fit_windows
from bayes_smlm.forward.tasks import get_task

SIDE, PEDESTAL, SIGMA = 11, 2.0, 0.92


def _task(i0_range=(20.0, 2000.0), background_range=(0.0, 50.0)):
    return get_task(
        "widefield",
        {"prior.i0_range": list(i0_range), "prior.background_range": list(background_range)},
    )


def _psf(x, y, side=SIDE, sigma=SIGMA):
    """(…, side, side) pixel-integrated unit PSF at (x, y), written from eq. 2 alone."""
    c = np.arange(side)
    s = np.sqrt(2.0) * sigma
    ex = 0.5 * (
        erf((c + 0.5 - np.asarray(x)[..., None]) / s)
        - erf((c - 0.5 - np.asarray(x)[..., None]) / s)
    )
    ey = 0.5 * (
        erf((c + 0.5 - np.asarray(y)[..., None]) / s)
        - erf((c - 0.5 - np.asarray(y)[..., None]) / s)
    )
    return ey[..., :, None] * ex[..., None, :]


def _window(rng, emitters, background):
    rate = background + PEDESTAL + sum(i0 * _psf(x, y) for x, y, i0 in emitters)
    return rng.poisson(rate).astype(np.float64)


def _fits(task, counts, starts):
    """Window fits with every start's emitters active: counts (B, S, S), starts (B, K, 3)."""
    b, k = len(counts), starts.shape[1]
    start = np.concatenate(
        [starts[..., :2].reshape(b, -1), starts[..., 2], np.full((b, 1), 5.0)], 1
    )
    active = np.ones((b, k), bool)
    pedestal = np.full(counts.shape, PEDESTAL)
    fitted = np.ones(counts.shape, bool)
    return fit_windows(task, counts, pedestal, start, active, fitted), pedestal, fitted, active


def _quadrature_log_ratio(counts, task, log_density):
    """log Z₁ − log Z₀ of one window by a 4-D sum over x, y (0.1 px), i0 and b, with the
    point-process prior of window_counts (ρ per px², i0 and b uniform in their ranges)."""
    (i0_lo, i0_hi), (b_lo, b_hi) = task.prior.i0_range, task.prior.background_range
    n = counts

    def loglik(rate):
        return np.sum(n * np.log(rate) - rate, axis=(-2, -1))

    bs = np.linspace(b_lo + 1e-3, 12.0, 400)
    log_z0 = (
        logsumexp(loglik(bs[:, None, None] + PEDESTAL))
        + np.log(bs[1] - bs[0])
        - np.log(b_hi - b_lo)
    )
    # the emitter's mass lies within a few px of the brightest pixel
    r, c = np.unravel_index(np.argmax(n), n.shape)
    xs = np.arange(c - 2.5, c + 2.5, 0.1)
    ys = np.arange(r - 2.5, r + 2.5, 0.1)
    gx, gy = np.meshgrid(xs, ys)
    psf = _psf(gx.ravel(), gy.ravel())  # (P, S, S)
    i0s = np.linspace(i0_lo, 600.0, 100)
    bs = np.linspace(b_lo + 1e-3, 12.0, 40)
    total = []
    for i0 in i0s:
        rate = i0 * psf[:, None] + bs[None, :, None, None] + PEDESTAL  # (P, B, S, S)
        total.append(logsumexp(loglik(rate)))
    cell = 0.1**2 * (i0s[1] - i0s[0]) * (bs[1] - bs[0])
    log_z1 = (
        logsumexp(total) + np.log(cell) - np.log(i0_hi - i0_lo) - np.log(b_hi - b_lo) + log_density
    )
    return log_z1 - log_z0


@pytest.mark.slow
def test_laplace_evidence_of_a_window_matches_quadrature():
    """log Z₁ − log Z₀ of dim single emitters (i0, b unknown) against a 4-D quadrature; dim
    enough that the count is in doubt on one of them, so a wrong Occam factor (a missing 2π,
    the box, the density) would show."""
    task = _task()
    rng = np.random.default_rng(11)
    log_density = np.log(0.003)
    errors, ratios = [], []
    for i0 in (30.0, 45.0, 150.0, 300.0):
        counts = _window(rng, [(5.2, 4.7, i0)], 5.0)[None]
        fit, _, _, active = _fits(task, counts, np.array([[[5.0, 5.0, i0]]]))
        empty = np.zeros_like(active)
        fit0 = fit_windows(
            task,
            counts,
            np.full(counts.shape, PEDESTAL),
            np.asarray(fit.mode),
            empty,
            np.ones(counts.shape, bool),
        )
        laplace = (
            window_log_evidence(task, (SIDE, SIDE), fit, active, log_density)
            - window_log_evidence(task, (SIDE, SIDE), fit0, empty, log_density)
        )[0]
        exact = _quadrature_log_ratio(counts[0], task, log_density)
        errors.append(laplace - exact)
        ratios.append(exact)
    errors, ratios = np.array(errors), np.array(ratios)
    # where an emitter has P > 5 %, the Laplace ratio is within 0.25 nats; where the exact
    # evidence rules it out (its mode then sits on the prior's edge, not Gaussian) it does too
    plausible = ratios > -3.0
    assert np.all(np.abs(errors[plausible]) < 0.25), (errors, ratios)
    assert np.all(ratios[~plausible] + errors[~plausible] < -3.0), (errors, ratios)
    # the emitters span: ruled out, in doubt, sure
    assert ratios.min() < -3.0 and np.any(np.abs(ratios) < 3.0) and ratios.max() > 20.0, ratios


def test_a_duplicate_candidate_is_dropped_and_a_close_pair_kept():
    """One bright emitter given two candidates on it: one row, and the second candidate's
    P(N ≥ 2) small; two emitters 2 px apart: both rows, each P ≈ 1."""
    task = _task()
    rng = np.random.default_rng(5)
    single = _window(rng, [(5.1, 5.3, 1500.0)], 8.0)
    pair = _window(rng, [(4.0, 5.0, 1200.0), (6.0, 5.2, 900.0)], 8.0)
    counts = np.stack([single, pair])
    starts = np.array(
        [[[4.8, 5.0, 700.0], [5.4, 5.5, 700.0]], [[4.0, 5.0, 1000.0], [6.0, 5.0, 1000.0]]]
    )
    fit, pedestal, fitted, active = _fits(task, counts, starts)
    given = np.array(fit.mode)
    counted = count_emitters(
        task,
        counts,
        pedestal,
        fitted,
        fit,
        active,
        log_density=np.log(0.003),
        min_p_exists=0.5,
        max_iter=50,
        tol=1e-4,
    )
    np.testing.assert_array_equal(fit.mode, given)  # the caller's fit is left as it was
    assert counted.active.sum(1).tolist() == [1, 2]
    assert counted.count_probability[0, 2] < 0.05
    assert np.all(counted.p_exists[1] > 0.99)
    # the single emitter's row carries all its photons (i0 of slot k at 2K + k) and its position
    k = int(np.flatnonzero(counted.active[0])[0])
    mode = counted.fit.mode[0]
    assert abs(mode[4 + k] - 1500.0) < 4 * np.sqrt(1500.0 + 300.0)
    assert np.hypot(mode[2 * k] - 5.1, mode[2 * k + 1] - 5.3) < 0.2
    # with every candidate kept the duplicate splits the spot
    everyone = count_emitters(
        task,
        counts,
        pedestal,
        fitted,
        fit,
        active,
        log_density=np.log(0.003),
        min_p_exists=1e-12,
        max_iter=50,
        tol=1e-4,
    )
    assert everyone.active.sum(1).tolist() == [2, 2]


@pytest.mark.parametrize("density", [0.0, -1.0, float("nan")])
def test_a_bad_density_is_refused_by_name(density):
    from bayes_smlm.acquisition.settings import LocalizeSettings
    from bayes_smlm.errors import ConfigError

    with pytest.raises(ConfigError, match="density"):
        LocalizeSettings(density=density)


@pytest.mark.parametrize("p", [-0.1, 1.0, 2.0])
def test_a_bad_min_p_exists_is_refused_by_name(p):
    from bayes_smlm.acquisition.settings import LocalizeSettings
    from bayes_smlm.errors import ConfigError

    with pytest.raises(ConfigError, match="min_p_exists"):
        LocalizeSettings(min_p_exists=p)


def test_misfit_quantile_matches_poisson_windows():
    """Pearson χ² of windows of a fitted emitter with the right PSF exceeds the misfit limit at
    about the nominal 0.1 % (binomial bound on 400 windows), and a spot 1.5× wider than the
    model's PSF is a misfit."""
    from bayes_smlm.acquisition.window_fit import misfit

    task = _task(i0_range=(100.0, 5000.0))
    rng = np.random.default_rng(3)
    true = [
        _window(
            rng,
            [(5.0 + rng.uniform(-0.5, 0.5), 5.0 + rng.uniform(-0.5, 0.5), rng.uniform(300, 3000))],
            5.0,
        )
        for _ in range(400)
    ]
    rate = 5.0 + PEDESTAL + 2000.0 * _psf(5.0, 5.0, sigma=1.5 * SIGMA)
    wide = [rng.poisson(rate).astype(float) for _ in range(20)]
    counts = np.stack(true + wide)
    fit, _, _, active = _fits(task, counts, np.tile([[[5.0, 5.0, 1000.0]]], (len(counts), 1, 1)))
    flag = misfit(fit.chi2, fit.dof, fit.chi2_var, np.full(len(counts), 4))
    # P(≥ 4 of 400 | p = 0.001) < 0.001
    assert flag[:400].sum() <= 3
    assert flag[400:].all()


def test_background_only_fit_equals_the_compiled_fit_without_emitters():
    """The closed-loop Newton fit of b alone gives the compiled fit's b, SD, log-likelihood and
    χ² when every slot is empty."""
    from bayes_smlm.acquisition.window_counts import background_only

    task = _task()
    rng = np.random.default_rng(8)
    counts = np.stack([_window(rng, [(5.0, 5.0, 400.0)], b) for b in (1.0, 6.0, 20.0)])
    pedestal = np.full(counts.shape, PEDESTAL)
    fitted = np.ones(counts.shape, bool)
    fitted[:, :2] = False
    start = np.tile([5.0, 5.0, 0.0, 3.0], (3, 1))
    empty = np.zeros((3, 1), bool)
    compiled = fit_windows(task, counts, pedestal, start, empty, fitted)
    closed = background_only(task, counts, pedestal, fitted, start)
    assert np.allclose(closed.mode[:, -1], compiled.mode[:, -1], rtol=1e-3)  # its tol: 1e-4 nats
    assert np.allclose(closed.covariance[:, -1, -1], compiled.covariance[:, -1, -1], rtol=1e-3)
    assert np.allclose(closed.loglik, compiled.loglik, rtol=1e-5)
    assert np.allclose(closed.chi2, compiled.chi2, rtol=1e-3)
    assert np.array_equal(closed.dof, compiled.dof)


@pytest.mark.slow
def test_window_count_evidence_agrees_with_smc_on_close_pairs():
    """The check of the counts by `smc` (tempered SMC, positions, i0 and b integrated): on dim
    pairs 1–2.5 px apart, the window's Laplace log Z₂ − log Z₁ is within half a nat (odds within
    a factor 1.65) of smc's, from pairs the data barely resolve to certain ones. Priors matched:
    smc's positions are labelled and uniform on a disc of area A, so with ρ = 1/A its Z_n is the
    window's times n! (the relabelled copies that the point process's 1/n! cancels)."""
    from math import factorial

    from bayes_smlm.forward.config import parse_override
    from bayes_smlm.methods import get_method

    over = {
        "height": SIDE,
        "width": SIDE,
        "prior.radius": 3.0,
        "prior.brightness": "drawn",
        "prior.i0_range": "100,1500",
        "prior.background_range": "0,20",
        "camera.gain": 1.0,
        "camera.offset": 0.0,
        "camera.readout_var": PEDESTAL,
        "prior.n_emitters": 2,
    }
    task = get_task("isolated", dict(parse_override(f"{k}={v}") for k, v in over.items()))
    cx, cy = task.centre
    rng = np.random.default_rng(4)
    counts = []
    for _ in range(8):
        sep, angle = rng.uniform(1.0, 2.5), rng.uniform(0, np.pi)
        i0 = rng.uniform(200, 500, 2)
        dx, dy = sep / 2 * np.cos(angle), sep / 2 * np.sin(angle)
        counts.append(_window(rng, [(cx - dx, cy - dy, i0[0]), (cx + dx, cy + dy, i0[1])], 5.0))
    counts = np.stack(counts)
    evidence = get_method("smc")(
        task, (counts - PEDESTAL).astype(np.float32), n_emitters="1-2", seed=3
    ).evidence
    smc = evidence.log_evidence[:, 1] - evidence.log_evidence[:, 0]
    window = _task(i0_range=(100.0, 1500.0), background_range=(0.0, 20.0))
    log_density = -np.log(np.pi * 3.0**2)
    log_z = []
    for n in (1, 2):
        start = np.tile([[[cx - 0.7, cy, 300.0], [cx + 0.7, cy, 300.0]]], (len(counts), 1, 1))
        fit, _, _, active = _fits(window, counts, start)
        active[:, n:] = False
        fit = fit_windows(
            window,
            counts,
            np.full(counts.shape, PEDESTAL),
            np.asarray(fit.mode),
            active,
            np.ones(counts.shape, bool),
        )
        log_z.append(
            window_log_evidence(window, (SIDE, SIDE), fit, active, log_density)
            + np.log(factorial(n))
        )
    laplace = log_z[1] - log_z[0]
    assert np.all(np.abs(laplace - smc) < 0.5), np.c_[laplace, smc, evidence.log_evidence_se[:, 1]]
    assert smc.min() < 5.0 and smc.max() > 50.0, smc
