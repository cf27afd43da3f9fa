"""Simulator: camera moments within sampling bounds, reproducibility, prior geometry, streaming."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from bayes_smlm.forward import physics
from bayes_smlm.forward.simulate import simulate, simulate_fixed, stream
from bayes_smlm.forward.tasks import get_task


@pytest.mark.slow
def test_adu_mean_and_variance_per_pixel_match_the_camera_model_with_scmos_maps():
    rng = np.random.default_rng(7)
    shape = (20, 20)
    offset = rng.uniform(90, 110, shape)
    gain = rng.uniform(0.5, 3.0, shape)
    readout_var = rng.uniform(0.5, 40.0, shape)
    task = get_task(
        "isolated",
        {
            "offset": offset,
            "gain": gain,
            "readout_var": readout_var,
            "background": 3.0,
            "i0": 500.0,
        },
    )
    theta = np.array([[8.7, 10.4]], np.float32)
    m = 20000
    adu = simulate_fixed(task, theta, m, seed=11).astype(np.float64)
    omega = np.asarray(
        physics.expected_photons(theta, 500.0, 3.0, task.optics.sigma_psf, shape), np.float64
    )
    k2 = gain**2 * omega + readout_var  # variance: shot + readout
    k4 = gain**4 * omega  # 4th cumulant (Gaussian part has none)
    z_mean = (adu.mean(0) - (gain * omega + offset)) / np.sqrt(k2 / m)
    z_var = (adu.var(0, ddof=1) - k2) / np.sqrt((k4 + 2 * k2**2) / m)
    # 400 pixels, two-sided 4.5σ each: family-wise false-alarm probability ≈ 400 · 7e-6 ≈ 0.003.
    assert np.abs(z_mean).max() < 4.5
    assert np.abs(z_var).max() < 4.5
    # and the test has power: a 2 % gain error is detected
    z_wrong = (adu.mean(0) - (1.02 * gain * omega + offset)) / np.sqrt(k2 / m)
    assert np.abs(z_wrong).max() > 4.5


def test_same_seed_same_frames_and_chunking_does_not_matter(isolated):
    a = simulate(isolated, 10, seed=3)
    b = simulate(isolated, 10, seed=3, chunk=3)
    c = simulate(isolated, 4, seed=3, first_frame=6)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(a.adu[6:], c.adu)
    d = simulate(isolated, 10, seed=4)
    assert not np.allclose(a.theta, d.theta)


def test_shapes_dtypes_and_kde_consistent_with_theta(paper):
    batch = simulate(paper, 5, seed=0)
    assert batch.adu.shape == (5, 20, 20) and batch.adu.dtype == np.float32
    assert batch.theta.shape == (5, 10, 2) and batch.kde.shape == (5, 80, 80)
    ref = np.asarray(physics.kde(batch.theta[2], paper.optics.sigma_kde, 4, paper.shape))
    np.testing.assert_allclose(batch.kde[2], ref, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_positions_are_uniform_on_the_disc(paper):
    theta = simulate(paper, 2000, seed=5).theta.reshape(-1, 2).astype(np.float64)
    cx, cy = paper.centre
    r2 = ((theta[:, 0] - cx) ** 2 + (theta[:, 1] - cy) ** 2) / paper.prior.radius**2
    assert r2.max() <= 1.0 + 1e-6
    # Uniform on a disc <=> (r/R)² ~ U(0, 1) and the angle ~ U(-π, π).
    assert stats.kstest(r2, "uniform").pvalue > 0.001
    angle = np.arctan2(theta[:, 1] - cy, theta[:, 0] - cx)
    assert stats.kstest(angle, stats.uniform(-np.pi, 2 * np.pi).cdf).pvalue > 0.001


def test_stream_is_fresh_per_batch_and_resumable(isolated):
    first = stream(isolated, batch_size=4, seed=9)
    batches = [next(first) for _ in range(3)]
    assert not np.allclose(batches[0].adu, batches[1].adu)
    resumed = next(stream(isolated, batch_size=4, seed=9, start_batch=2))
    np.testing.assert_array_equal(resumed.adu, batches[2].adu)
    # the training stream does not replay the frames that `simulate` gives for the same seed
    assert not np.allclose(simulate(isolated, 4, seed=9).adu, batches[0].adu)


@pytest.mark.parametrize(
    "kwargs, argument", [({"n_frames": 0}, "argument n_frames"), ({"seed": -1}, "argument seed")]
)
def test_bad_counts_and_seeds_are_rejected(isolated, kwargs, argument):
    from bayes_smlm.errors import ConfigError

    args = {"n_frames": 2, "seed": 0, **kwargs}
    with pytest.raises(ConfigError, match=argument):
        simulate(isolated, **args)


def test_drawn_brightness_follows_the_priors_and_the_frames_carry_it():
    """``brightness = "drawn"`` (the widefield task): i0 per emitter ~ U(i0_range), b per frame
    ~ U(background_range) (Kolmogorov–Smirnov, p > 0.001), and each frame's photons are those
    draws: the offset-subtracted ADU sum equals Σ i0 · (PSF mass inside the frame) + b·H·W
    within 5 SD of its Poisson + read noise."""
    from scipy.special import erf

    task = get_task("widefield")
    batch = simulate(task, 400, seed=2)
    lo, hi = task.prior.i0_range
    assert stats.kstest(batch.i0.ravel(), "uniform", args=(lo, hi - lo)).pvalue > 1e-3
    blo, bhi = task.prior.background_range
    assert stats.kstest(batch.background, "uniform", args=(blo, bhi - blo)).pvalue > 1e-3
    assert np.ptp(batch.i0, axis=1).min() > 0  # emitters of a frame differ

    def inside(c, n):  # PSF mass between pixel edges −½ and n − ½
        s = np.sqrt(2) * task.optics.sigma_psf
        return 0.5 * (erf((n - 0.5 - c) / s) - erf((-0.5 - c) / s))

    mass = inside(batch.theta[..., 0], task.width) * inside(batch.theta[..., 1], task.height)
    expected = (batch.i0 * mass).sum(1) + batch.background * task.height * task.width
    camera = task.camera
    photons = (batch.adu - camera.offset).sum((1, 2)) / camera.gain
    noise_sd = np.sqrt(expected + task.height * task.width * camera.readout_var / camera.gain**2)
    assert np.abs((photons - expected) / noise_sd).max() < 5


def test_fixed_brightness_reports_the_fixed_values(paper):
    batch = simulate(paper, 3, seed=0)
    assert np.all(batch.i0 == paper.prior.i0) and np.all(batch.background == 0.0)


def test_brightness_must_be_fixed_or_drawn(capsys, tmp_path):
    from test_cli import assert_one_line_error, run_cli

    status, _, err = run_cli(
        capsys,
        "simulate",
        "--task",
        "isolated",
        "--frames",
        "2",
        "--seed",
        "0",
        "--set",
        "brightness=often",
        "--out",
        str(tmp_path / "f.npz"),
    )
    assert_one_line_error(status, err, "prior.brightness", "fixed, drawn", "often")
