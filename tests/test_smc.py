"""`smc`: evidence against brute-force quadrature, P(n | x), draws against the grid and NUTS, the
count option through the CLI and the files it writes."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from evidence_quadrature import log_evidence, log_evidence_extrapolated
from scipy.special import softmax

from bayes_smlm.cli.main import main
from bayes_smlm.errors import ConfigError
from bayes_smlm.forward.simulate import simulate
from bayes_smlm.forward.tasks import get_task
from bayes_smlm.io.posteriors import load_posterior, result_from_datatree, save_posterior
from bayes_smlm.methods import get_method
from bayes_smlm.methods.evidence import parse_counts

DIM = {"height": 12, "width": 12, "prior.radius": 2.0, "prior.i0": 40.0, "prior.background": 3.0}


def dim_task(n: int):
    return get_task("isolated", {**DIM, "prior.n_emitters": n})


def simulate_dim_frames(path, *, n: int, frames: int, seed: int):
    """``bayes-smlm simulate`` of the dim task with n emitters into ``path``."""
    sets = [
        a
        for key, value in {**DIM, "prior.n_emitters": n}.items()
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
                str(frames),
                "--seed",
                str(seed),
                "--out",
                str(path),
            ]
        )
        == 0
    )
    return path


def quadrature(task, adu: np.ndarray) -> np.ndarray:
    """(F, 3) log Z_0, log Z_1, log Z_2 by quadrature (tests/evidence_quadrature.py)."""
    c, p = task.camera, task.prior
    kw = dict(
        i0=p.i0,
        background=float(p.background),
        sigma=task.optics.sigma_psf,
        offset=c.offset,
        gain=c.gain,
        readout_var=c.readout_var,
        centre=task.centre,
        radius=p.radius,
    )
    return np.array(
        [
            [
                log_evidence(a, n=0, **kw),
                log_evidence(a, n=1, spacing=0.05, **kw),
                log_evidence_extrapolated(a, n=2, spacing=0.1, **kw),
            ]
            for a in adu
        ]
    )


def evidence_frames(per_count: int, seed: int):
    """Fresh frames with one and with two dim emitters, and the task (n = 2) they are fitted
    under (the count is what is asked; the task's own only fixes the default)."""
    one = simulate(dim_task(1), per_count, seed=seed).adu
    two = simulate(dim_task(2), per_count, seed=seed + 1).adu
    return dim_task(2), np.concatenate([one, two])


def check_evidence(per_count: int, seed: int, share: float) -> None:
    task, adu = evidence_frames(per_count, seed)
    result = get_method("smc")(task, adu, n_emitters="0-2", seed=seed)
    ev = result.evidence
    assert ev.counts.tolist() == [0, 1, 2]
    exact = quadrature(task, adu)
    np.testing.assert_allclose(ev.log_evidence[:, 0], exact[:, 0], atol=2e-3)  # no sampling
    assert np.all(ev.log_evidence_se[:, 0] == 0) and np.all(ev.log_evidence_se[:, 1:] > 0)
    diff = np.diff(ev.log_evidence, axis=1)  # Z1/Z0, Z2/Z1
    se = np.sqrt(ev.log_evidence_se[:, 1:] ** 2 + ev.log_evidence_se[:, :-1] ** 2)
    within = np.abs(diff - np.diff(exact, axis=1)) <= np.maximum(0.1, 3 * se)
    assert within.all(1).mean() >= share, (diff - np.diff(exact, axis=1), se)
    p_exact = softmax(exact, axis=1)
    assert np.abs(ev.p_n - p_exact).max() <= 0.03, (ev.p_n, p_exact)
    # the mixture's KDE: frames sure of their count carry that count's map
    assert result.theta is None and result.kde_mean.shape == (len(adu),) + task.hr_shape
    return result


def test_smc_evidence_matches_quadrature_on_fresh_dim_frames():
    check_evidence(per_count=3, seed=21, share=1.0)


@pytest.mark.slow
def test_smc_evidence_matches_quadrature_on_95_percent_of_forty_frames():
    """The acceptance bar: log Z_2 − log Z_1 and log Z_1 − log Z_0 within max(0.1, 3 SE) of
    quadrature on ≥ 95 % of frames, P(n | x) within 0.03."""
    check_evidence(per_count=20, seed=40, share=0.95)


def test_smc_mixture_moments_follow_p_n():
    task, adu = evidence_frames(2, seed=7)
    mixed = get_method("smc")(task, adu, n_emitters=[1, 2], seed=3)
    alone = [get_method("smc")(task, adu, n_emitters=[n], seed=3) for n in (1, 2)]
    w = mixed.evidence.p_n
    # each count's run is the same as alone (same seed, per-count keys): the mixture is exact
    mean = w[:, 0, None, None] * alone[0].kde_mean + w[:, 1, None, None] * alone[1].kde_mean
    np.testing.assert_allclose(mixed.kde_mean, mean, atol=1e-5)
    second = sum(
        w[:, k, None, None] * (a.kde_var + a.kde_mean.astype(float) ** 2)
        for k, a in enumerate(alone)
    )
    np.testing.assert_allclose(mixed.kde_var, second - mean**2, atol=1e-5)
    sampled = get_method("smc")(task, adu, n_emitters=[1, 2], seed=3, keep_samples=400)
    samples = sampled.extra["kde_samples"]
    assert samples.shape == (len(adu), 400) + task.hr_shape
    se = np.sqrt(mixed.kde_var / 400)  # draws are resampled: allow 5 SE, on 99 % of pixels
    assert np.mean(np.abs(samples.mean(1) - mixed.kde_mean) <= 5 * se + 2e-3) > 0.99


def test_smc_for_the_task_count_has_draws_diagnostics_and_evidence(tmp_path):
    task = dim_task(1)
    batch = simulate(task, 3, seed=2)
    result = get_method("smc")(task, batch.adu, theta_true=batch.theta, seed=0, draws=256)
    assert result.theta.shape == (4, 256, 3, 1, 2)
    assert result.evidence.counts.tolist() == [1] and np.all(result.evidence.p_n == 1)
    assert not result.flagged.any()
    assert set(result.extra) >= {"log_evidence_runs", "log_z_spread", "var_spread", "final_ess"}
    path = save_posterior(result, tmp_path / "p.nc")
    tree = load_posterior(path)
    ds = tree["evidence"].to_dataset()
    assert ds["log_evidence"].dims == ("frame", "n_emitters")
    back = result_from_datatree(tree)
    np.testing.assert_allclose(back.evidence.log_evidence, result.evidence.log_evidence)
    assert back.evidence.counts.tolist() == [1]


def test_parse_counts_accepts_lists_and_ranges_and_refuses_the_rest():
    task = dim_task(2)
    assert parse_counts(None, task) == (2,)
    assert parse_counts("0-2,5", task) == (0, 1, 2, 5)
    assert parse_counts("3:4", task) == (3, 4)
    assert parse_counts([2, 0], task) == (0, 2)
    for bad in ("a", "3-1", [-1], [], "0-2000", [1.5], [True]):
        with pytest.raises(ConfigError, match="n_emitters"):
            parse_counts(bad, task)


def test_smc_refuses_bad_options_in_one_line():
    task, adu = dim_task(1), np.asarray(simulate(dim_task(1), 1, seed=0).adu)
    for options, name in (
        ({"target_ess": 1.0}, "target_ess"),
        ({"draws": 1}, "draws"),
        ({"mcmc_steps": 0}, "mcmc_steps"),
        ({"jitter": 1}, "jitter"),
    ):
        with pytest.raises(ConfigError) as err:
            get_method("smc")(task, adu, **options)
        assert name in str(err.value) and "\n" not in str(err.value)


def test_cli_posterior_with_counts_writes_the_evidence_group(tmp_path, capsys):
    frames = simulate_dim_frames(tmp_path / "f.npz", n=2, frames=2, seed=9)
    out = tmp_path / "p.nc"
    assert (
        main(
            [
                "posterior",
                str(frames),
                "--method",
                "smc",
                "--n-emitters",
                "0,1,2",
                "--draws",
                "128",
                "--quiet",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "most probable count" in printed
    ds = xr.open_datatree(out, engine="h5netcdf")["evidence"].to_dataset()
    assert ds["n_emitters"].values.tolist() == [0, 1, 2]
    np.testing.assert_allclose(ds["p_n"].values.sum(1), 1.0, rtol=1e-6)
    with pytest.raises(SystemExit) as err:
        main(
            [
                "posterior",
                str(frames),
                "--method",
                "smc",
                "--n-emitters",
                "two",
                "--out",
                str(tmp_path / "q.nc"),
            ]
        )
    assert err.value.code == 2
    line = capsys.readouterr().err.strip()
    assert line.count("\n") == 0 and "--n-emitters" in line


def test_a_chunked_zarr_run_stores_the_same_evidence_as_one_file(tmp_path, capsys):
    frames = simulate_dim_frames(tmp_path / "f.npz", n=1, frames=4, seed=1)
    common = [
        "posterior",
        str(frames),
        "--method",
        "smc",
        "--n-emitters",
        "0-2",
        "--draws",
        "64",
        "--quiet",
    ]
    assert main([*common, "--out", str(tmp_path / "whole.nc")]) == 0
    assert main([*common, "--chunk-frames", "2", "--out", str(tmp_path / "parts.zarr")]) == 0
    whole = load_posterior(tmp_path / "whole.nc")["evidence"]
    parts = load_posterior(tmp_path / "parts.zarr")["evidence"]
    # each frame's runs are seeded by its index in the whole movie: chunks change nothing
    np.testing.assert_allclose(
        parts["log_evidence"].values, whole["log_evidence"].values, rtol=0, atol=1e-9
    )
    np.testing.assert_allclose(parts["p_n"].values, whole["p_n"].values, atol=1e-12)
