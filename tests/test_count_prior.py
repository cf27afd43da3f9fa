"""A prior over the emitter count (``prior.count``): the simulator draws it, the posteriors over
counts weigh their evidence by it, fixed-count methods refuse it in one line."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from scipy import stats
from scipy.special import softmax

from bayes_smlm.cli.main import main
from bayes_smlm.errors import ConfigError
from bayes_smlm.forward import physics
from bayes_smlm.forward.count_prior import (
    count_log_prior,
    count_maximum,
    count_support,
    emitter_counts,
)
from bayes_smlm.forward.simulate import simulate
from bayes_smlm.forward.tasks import get_task
from bayes_smlm.methods import get_method
from bayes_smlm.methods.evidence import parse_counts

DIM = {"height": 12, "width": 12, "prior.radius": 2.0, "prior.i0": 40.0, "prior.background": 3.0}


def chi_square_p(counts: np.ndarray, probabilities: np.ndarray) -> float:
    """p-value of observed counts per category against the probabilities (bins with expected
    count < 5 pooled into the last)."""
    expected = probabilities * counts.sum()
    keep = np.cumsum(expected[::-1])[::-1] >= 5
    last = np.flatnonzero(keep)[-1]
    obs = np.append(counts[:last], counts[last:].sum())
    exp = np.append(expected[:last], expected[last:].sum())
    return float(stats.chisquare(obs, exp * obs.sum() / exp.sum()).pvalue)


@pytest.mark.parametrize(
    "count, probability",
    [
        ("poisson", lambda n: stats.poisson.pmf(n, 3)),
        ("1-4", lambda n: np.where((n >= 1) & (n <= 4), 0.25, 0.0)),
    ],
)
def test_simulated_counts_follow_the_count_prior(count, probability):
    task = get_task("paper", {"prior.count": count, "prior.n_emitters": 3})
    batch = simulate(task, 3000, seed=4)
    n = emitter_counts(batch.theta)
    support = np.arange(count_maximum(task.prior) + 1)
    assert batch.theta.shape[1] == support[-1]
    observed = np.bincount(n, minlength=len(support))
    expected = probability(support)
    assert chi_square_p(observed[expected > 0], expected[expected > 0]) > 1e-3
    assert observed[expected == 0].sum() == 0
    # absent rows are NaN and contribute nothing: the KDE holds one kernel's mass per emitter
    present = ~np.isnan(batch.theta[..., 0])
    assert np.array_equal(present, ~np.isnan(batch.i0))
    np.testing.assert_array_equal(batch.i0[present], task.prior.i0)
    peak = float(physics.pixel_integrated_gaussian(0.0, 0.0, task.optics.sigma_kde)) ** 2
    np.testing.assert_allclose(batch.kde.sum(axis=(1, 2)) * peak, n, rtol=1e-4, atol=1e-6)


def test_a_fixed_count_keeps_the_task_json_and_the_frames_of_before():
    paper = get_task("paper")
    assert "count" not in paper.to_json()
    assert get_task("paper", {"prior.count": "fixed"}) == paper
    batch = simulate(paper, 3, seed=0)
    assert not np.isnan(batch.theta).any() and batch.theta.shape == (3, 10, 2)


def test_count_prior_of_listed_counts_is_renormalised_and_refuses_impossible_counts():
    poisson = get_task("paper", {"prior.count": "poisson", "prior.n_emitters": 2}).prior
    log_p = count_log_prior(poisson, [0, 1, 2])
    np.testing.assert_allclose(
        np.exp(log_p),
        stats.poisson.pmf([0, 1, 2], 2) / stats.poisson.pmf([0, 1, 2], 2).sum(),
        rtol=1e-12,
    )
    uniform = get_task("paper", {"prior.count": "1-4"}).prior
    assert count_support(uniform) == (1, 2, 3, 4)
    np.testing.assert_allclose(np.exp(count_log_prior(uniform, [0, 1, 2])), [0, 0.5, 0.5])
    with pytest.raises(ConfigError, match="n_emitters.*none of the counts"):
        count_log_prior(uniform, [0, 5])
    for bad in ("3-1", "poison", "0-2000", 4):
        with pytest.raises(ConfigError, match="prior.count") as err:
            get_task("paper", {"prior.count": bad})
        assert "\n" not in str(err.value)


def test_posterior_over_counts_weighs_each_count_by_the_task_prior():
    fixed = get_task("isolated", {**DIM, "prior.n_emitters": 1})
    poisson = get_task("isolated", {**DIM, "prior.n_emitters": 1, "prior.count": "poisson"})
    adu = simulate(poisson, 4, seed=5).adu
    uniform = get_method("laplace")(fixed, adu, n_emitters="0-2").evidence
    weighted = get_method("laplace")(poisson, adu, n_emitters="0-2").evidence
    np.testing.assert_allclose(weighted.log_evidence, uniform.log_evidence, rtol=1e-6)
    expected = softmax(np.log(uniform.p_n) + np.log(stats.poisson.pmf([0, 1, 2], 1)), axis=1)
    np.testing.assert_allclose(weighted.p_n, expected, rtol=1e-6)
    assert parse_counts(None, poisson) == count_support(poisson.prior)


@pytest.mark.slow
def test_p_n_of_frames_drawn_from_the_count_prior_is_calibrated():
    """Where the frames' counts come from the prior the posterior assumes, the mean probability
    given to the true count equals the mean of Σ_n P(n | x)² (both are E[P(n_true | x)] for a
    calibrated posterior over counts); the test allows 3.5 standard errors of the difference."""
    task = get_task("isolated", {**DIM, "prior.n_emitters": 2, "prior.count": "0-2"})
    batch = simulate(task, 120, seed=21)
    result = get_method("smc")(task, batch.adu, n_emitters="0-2", seed=21)
    p_n = result.evidence.p_n
    truth = emitter_counts(batch.theta)
    p_true = p_n[np.arange(len(truth)), truth]
    difference = p_true - np.sum(p_n**2, axis=1)
    assert abs(difference.mean()) <= 3.5 * difference.std(ddof=1) / np.sqrt(len(truth))
    assert np.mean(result.evidence.most_probable == truth) > 0.6  # the counts are informative


def test_cli_simulates_a_drawn_count_and_counts_it_by_its_prior(tmp_path, capsys):
    frames = tmp_path / "f.npz"
    sets = [
        a
        for key, value in {**DIM, "prior.n_emitters": 2, "prior.count": "0-2"}.items()
        for a in ("--set", f"{key}={value}")
    ]
    assert (
        main(
            [
                "simulate",
                "--task",
                "isolated",
                *sets,
                "--frames",
                "3",
                "--seed",
                "2",
                "--out",
                str(frames),
            ]
        )
        == 0
    )
    out = tmp_path / "p.nc"
    assert (
        main(["posterior", str(frames), "--method", "laplace", "--quiet", "--out", str(out)]) == 0
    )
    assert "most probable count" in capsys.readouterr().out
    ds = xr.open_datatree(out, engine="h5netcdf")["evidence"].to_dataset()
    assert ds["n_emitters"].values.tolist() == [0, 1, 2]
    np.testing.assert_allclose(ds["log_prior_n"].values, np.log(1 / 3))
    with pytest.raises(SystemExit) as err:
        main(["posterior", str(frames), "--method", "nuts", "--out", str(tmp_path / "q.nc")])
    assert err.value.code == 2
    line = capsys.readouterr().err.strip()
    assert line.count("\n") == 0 and "nuts needs a fixed emitter count" in line


# --- brightness drawn (prior.brightness = drawn): i0 and b latent, integrated out -------------

DRAWN = {
    **DIM,
    "prior.brightness": "drawn",
    "prior.i0_range": "30,50",
    "prior.background_range": "2.5,3.5",
}


def drawn_task(n: int):
    from bayes_smlm.forward.config import parse_override

    return get_task(
        "isolated",
        dict(parse_override(f"{k}={v}") for k, v in {**DRAWN, "prior.n_emitters": n}.items()),
    )


def quadrature_over_brightness(task, adu: np.ndarray, n: int, points: int, spacing: float):
    """log p(adu | n) with i0 ~ U(i0_range), b ~ U(background_range) by a midpoint rule over
    (i0, b) around tests/evidence_quadrature.py's positions quadrature at fixed i0 and b."""
    from evidence_quadrature import log_evidence
    from scipy.special import logsumexp

    c, p = task.camera, task.prior
    i0s = p.i0_range[0] + (np.arange(points) + 0.5) * np.diff(p.i0_range)[0] / points
    bs = p.background_range[0] + (np.arange(points) + 0.5) * np.diff(p.background_range)[0] / points
    kw = dict(
        sigma=task.optics.sigma_psf,
        offset=c.offset,
        gain=c.gain,
        readout_var=c.readout_var,
        centre=task.centre,
        radius=p.radius,
        spacing=spacing,
    )
    values = [
        log_evidence(adu, n=n, i0=i0, background=b, **kw)
        for i0 in (i0s if n else i0s[:1])
        for b in bs
    ]
    return logsumexp(values) - np.log(len(values))


def test_background_only_evidence_integrates_a_latent_background():
    from bayes_smlm.forward.model import background_log_likelihood

    task = drawn_task(1)
    adu = simulate(drawn_task(1), 3, seed=8).adu
    import jax

    ours = np.asarray(jax.vmap(background_log_likelihood(task, "poisson"))(adu))
    exact = [quadrature_over_brightness(task, a, 0, 400, 0.05) for a in adu]
    np.testing.assert_allclose(ours, exact, atol=0.01)


@pytest.mark.slow
def test_smc_evidence_integrates_latent_brightness_like_quadrature():
    """Dim single emitters of drawn i0 and background: smc's log Z_1 − log Z_0 (positions, i0 and
    b integrated out) within max(0.15, 3 SE) nats of a quadrature over all four (a 0.1 px
    lattice × 16 × 16 points of i0 and b) on 5 of 6 frames."""
    task = drawn_task(1)
    adu = simulate(task, 6, seed=12).adu
    result = get_method("smc")(task, adu, n_emitters="0-1", seed=12)
    ev = result.evidence
    ours = ev.log_evidence[:, 1] - ev.log_evidence[:, 0]
    exact = np.array(
        [
            quadrature_over_brightness(task, a, 1, 16, 0.1)
            - quadrature_over_brightness(task, a, 0, 16, 0.1)
            for a in adu
        ]
    )
    close = np.abs(ours - exact) <= np.maximum(0.15, 3 * ev.log_evidence_se[:, 1])
    assert close.sum() >= 5, np.c_[ours, exact, ev.log_evidence_se[:, 1]]
    assert not result.flagged.any()


def test_fixed_brightness_samplers_refuse_a_task_that_draws_it():
    task = get_task("widefield")
    adu = simulate(task, 1, seed=0).adu
    for name in ("nuts", "auto"):
        with pytest.raises(ConfigError, match=f"{name} holds i0 and the background") as err:
            get_method(name)(task, adu, draws=10)
        assert "\n" not in str(err.value)
