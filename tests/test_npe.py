"""``npe``: the window it conditions on against an independent crop, a training run through the
CLI that resumes bit-identically and reloads from safetensors, draws inside the prior disc, and
one-line errors for what it cannot serve."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from test_cli import assert_one_line_error, run_cli

from bayes_smlm.errors import ConfigError
from bayes_smlm.forward.physics import adu_to_photons, camera_arrays
from bayes_smlm.forward.simulate import simulate
from bayes_smlm.forward.tasks import get_task
from bayes_smlm.io.posteriors import load_posterior
from bayes_smlm.methods import get_method
from bayes_smlm.methods.initialization import detect_initial_positions
from bayes_smlm.methods.truncation import draws_in_disc
from bayes_smlm.surrogates.checkpoint import read_safetensors, shipped_checkpoint
from bayes_smlm.surrogates.npe.estimator import load_npe
from bayes_smlm.surrogates.npe.features import frame_features
from bayes_smlm.surrogates.npe.training import simulated_pairs
from bayes_smlm.surrogates.settings import NpeArchitecture

TINY = ("--simulations", "512", "--batch-size", "64", "--validation-frames", "64", "--quiet")


@pytest.fixture(scope="module")
def task():
    return get_task("isolated")


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    """An NPE checkpoint trained for 6 steps through the command line."""
    out = tmp_path_factory.mktemp("npe") / "tiny"
    assert (
        run_cli_plain("train-npe", "--task", "isolated", "--steps", "6", *TINY, "--out", str(out))
        == 0
    )
    return out


def run_cli_plain(*argv):
    from bayes_smlm.cli.main import main

    return main(list(argv))


def test_the_window_is_the_photon_image_around_the_anchor_pixel(task):
    frames = simulate(task, 5, 3)
    features, anchors = frame_features(task, frames.adu, crop=7)
    photons = np.asarray(adu_to_photons(frames.adu, camera_arrays(task)))
    for f in range(5):
        start = np.asarray(detect_initial_positions(task, frames.adu[f]))[0]
        np.testing.assert_allclose(anchors[f], start, rtol=1e-6)
        x, y = np.round(start).astype(int)
        padded = np.pad(photons[f], 3)  # pixel (r, c) of the frame is (r+3, c+3)
        window = padded[y : y + 7, x : x + 7]
        np.testing.assert_allclose(
            features[f, :49], 2 * np.sqrt(np.maximum(window, 0) + 0.375).ravel(), rtol=1e-6
        )
        np.testing.assert_allclose(
            features[f, 49:51], ([x, y] - np.asarray(task.centre)) / 7.0, rtol=1e-6
        )
        np.testing.assert_allclose(features[f, 51:], start - [x, y], atol=1e-6)
        # on these bright frames the true emitter lies within half a pixel of its anchor
        assert np.all(np.abs(frames.theta[f, 0] - anchors[f]) < 0.5)


def test_training_resumes_bit_identically_and_the_checkpoint_reloads(
    tmp_path, task, tiny_checkpoint
):
    part = tmp_path / "part"
    assert (
        run_cli_plain("train-npe", "--task", "isolated", "--steps", "3", *TINY, "--out", str(part))
        == 0
    )
    assert (
        run_cli_plain(
            "train-npe", "--task", "isolated", "--steps", "6", *TINY, "--out", str(part), "--resume"
        )
        == 0
    )
    whole = read_safetensors(tiny_checkpoint / "training_state.safetensors")[0]
    resumed = read_safetensors(part / "training_state.safetensors")[0]
    model_keys = [k for k in whole if k.startswith("model.")]
    assert model_keys and all(torch.equal(whole[k], resumed[k]) for k in model_keys)
    config = json.loads((tiny_checkpoint / "config.json").read_text())
    assert config["kind"] == "npe-flow" and config["progress"]["steps_done"] == 6
    # the offset unit is the position √CRLB at the disc centre (≈ 0.095 px for `isolated`)
    architecture = NpeArchitecture.from_dict(config["architecture"])
    assert architecture == replace(NpeArchitecture(), offset_scale=architecture.offset_scale)
    assert 0.08 < architecture.offset_scale < 0.11 and config["sbi_version"]
    # reloaded weights give the recorded validation loss
    estimator, _ = load_npe(tiny_checkpoint, task)
    val_x, val_u = simulated_pairs(task, 64, 0, 512, architecture)
    with torch.no_grad():
        nll = float(estimator.loss(val_u, condition=val_x).mean())
    np.testing.assert_allclose(nll, config["progress"]["best_val_nll"], rtol=1e-5)


def test_npe_draws_through_the_registry_and_the_cli(
    tmp_path, capsys, task, tiny_checkpoint, frames_file
):
    frames = simulate(task, 3, 11)
    result = get_method("npe")(
        task, frames.adu, chains=2, draws=50, seed=4, checkpoint=tiny_checkpoint
    )
    assert result.theta.shape == (2, 50, 3, 1, 2) and result.kde_var.shape == (3, 80, 80)
    radius = np.linalg.norm(result.theta - np.asarray(task.centre), axis=-1)
    assert radius.max() <= 7.0 + 1e-5
    assert result.extra["flagged"].shape == (3,) and result.flagged.dtype == bool
    again = get_method("npe")(
        task, frames.adu, chains=2, draws=50, seed=4, checkpoint=tiny_checkpoint
    )
    np.testing.assert_array_equal(result.theta, again.theta)
    # the command line
    status, out, _ = run_cli(
        capsys,
        "posterior",
        str(frames_file),
        "--method",
        "npe",
        "--checkpoint",
        str(tiny_checkpoint),
        "--chains",
        "2",
        "--draws",
        "20",
        "--out",
        str(tmp_path / "npe.nc"),
    )
    assert status == 0 and "method npe, 2 frames" in out
    tree = load_posterior(tmp_path / "npe.nc")
    assert tree["posterior"]["theta"].shape == (2, 20, 2, 1, 2)
    assert np.asarray(tree["extra"]["mass_inside"]).shape == (2,)


def test_npe_refuses_what_it_cannot_serve_in_one_line(tmp_path, capsys, task, tiny_checkpoint):
    paper = get_task("paper")
    with pytest.raises(ConfigError, match="one emitter per frame"):
        get_method("npe")(paper, simulate(paper, 1, 0).adu)
    status, _, err = run_cli(
        capsys, "train-npe", "--task", "paper", "--steps", "2", *TINY, "--out", str(tmp_path / "x")
    )
    assert_one_line_error(status, err, "task", "one emitter")
    status, _, err = run_cli(
        capsys,
        "train-npe",
        "--task",
        "isolated",
        "--crop",
        "6",
        *TINY,
        "--out",
        str(tmp_path / "y"),
    )
    assert_one_line_error(status, err, "crop", "odd")
    status, _, err = run_cli(
        capsys,
        "train-npe",
        "--task",
        "isolated",
        "--batch-size",
        "600",
        "--simulations",
        "512",
        "--quiet",
        "--out",
        str(tmp_path / "z"),
    )
    assert_one_line_error(status, err, "--batch-size", "512")
    for bad, word in (
        ({"offset_scale": -0.1}, "offset_scale"),
        ({"tail_bound": 0.0}, "tail_bound"),
        ({"flow": "mdn"}, "flow"),
    ):
        with pytest.raises(ConfigError, match=word):
            NpeArchitecture(**bad)
    brighter = get_task("isolated", {"i0": 500.0})
    with pytest.raises(ConfigError, match="differs from"):
        load_npe(tiny_checkpoint, brighter)


def test_rejection_keeps_the_draws_in_the_disc_and_measures_the_mass_inside(task):
    """A Gaussian centred on the disc's edge has half its mass inside (to O(σ/R))."""
    rng = np.random.default_rng(0)
    edge = np.asarray(task.centre) + [7.0, 0.0]

    def draw(frames, size):
        return edge + 0.1 * rng.standard_normal((len(frames), size, 1, 2))

    points, inside = draws_in_disc(draw, 3, 4000, task)
    assert points.shape == (3, 4000, 1, 2)
    assert np.linalg.norm(points - task.centre, axis=-1).max() <= 7.0 + 1e-6
    # the kept draws are the Gaussian's restricted to the disc, a half-normal along x: their mean
    # lies σ·√(2/π) = 0.080 px inside the edge (SE 0.001; the edge's curvature moves it < 0.002)
    depth = 7.0 - (points[..., 0] - task.centre[0]).mean(axis=(1, 2))
    assert np.all(np.abs(depth - 0.1 * np.sqrt(2 / np.pi)) < 0.006), depth
    # binomial SE of a fraction of 4000 is 0.008; the disc's curvature moves it by ≈ 0.002
    assert np.all(np.abs(inside - 0.5) < 4 * 0.008 + 0.002), inside


SHIPPED = shipped_checkpoint("npe", "isolated")


@pytest.mark.slow
def test_the_shipped_npe_reaches_its_recorded_loss_and_the_grid_posterior(task):
    """Validation loss and the loss on fresh frames stated in the model card, recomputed from the
    weights; on 60 fresh frames the median SD ratio to the exact grid posterior is within the
    15 % bar (4 × 1000 draws: SE of an SD ≈ 1.1 %)."""
    from bayes_smlm.surrogates.checkpoint import verify_shipped

    verify_shipped(SHIPPED)
    estimator, config = load_npe(None, task)
    architecture = NpeArchitecture.from_dict(config["architecture"])
    training = config["training"]
    metrics = config["metrics"]
    for frames, seed, first, recorded in (
        (
            training["validation_frames"],
            training["seed"],
            training["simulations"],
            config["progress"]["best_val_nll"],
        ),
        (metrics["fresh_frames"], metrics["fresh_seed"], 0, metrics["fresh_nll"]),
    ):
        x, u = simulated_pairs(task, frames, seed, first, architecture)
        with torch.no_grad():
            nll = float(estimator.loss(u, condition=x).mean())
        np.testing.assert_allclose(nll, recorded, rtol=1e-4)
    frames = simulate(task, 60, 8900)
    npe = get_method("npe")(task, frames.adu, seed=1)
    grid = get_method("grid")(task, frames.adu)
    ratio = npe.theta_flat()[:, :, 0].std(axis=1) / np.sqrt(
        np.diagonal(grid.extra["theta_cov"], axis1=-2, axis2=-1)
    )
    assert np.all(np.abs(np.median(ratio, axis=0) - 1) < 0.15), np.median(ratio, axis=0)
    # flagged: only frames whose mean the flow gets wrong (two emitters within 0.2 px of the
    # disc's edge, 0.98 and 1.42 exact SDs off), and all of those more than 1 SD off
    exact_mean = grid.extra["theta_mean"].reshape(-1, 2)
    exact_sd = np.sqrt(np.diagonal(grid.extra["theta_cov"], axis1=-2, axis2=-1))
    off = (np.abs(npe.theta_flat()[:, :, 0].mean(axis=1) - exact_mean) / exact_sd).max(axis=1)
    assert not npe.flagged[off < 0.5].any() and npe.flagged[off > 1].all()


@pytest.mark.slow
def test_npe_study_smoke_writes_its_report(tmp_path, capsys):
    status, _, _ = run_cli(capsys, "study", "npe", "--preset", "smoke", "--out", str(tmp_path))
    assert status == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["grid"]["frames"] == 8 and metrics["calibration"]["frames"] == 200
    assert metrics["speed"]["frames_per_second"] > 0
    assert len(metrics["calibration"]["sbc_pvalue"]) == 2
    assert "# Neural posterior estimation" in (tmp_path / "report.md").read_text()


@pytest.mark.slow
def test_npe_flags_frames_at_the_disc_edge_where_it_is_wrong(isolated):
    """Issue 27: an emitter at r = 6.93 of 7 px got a mean 2.4 SDs from the exact one and no
    flag. On fresh frames with the emitter within 0.5 px of the edge, every frame whose NPE mean
    is more than 1 exact SD from the grid's is flagged, and the edge check flags none within
    0.4 SD (frames there may still be flagged for the flow's mass outside the disc)."""
    from bayes_smlm.forward.simulate import simulate

    batch = simulate(isolated, 600, 8123)
    radius = np.linalg.norm(batch.theta[:, 0] - np.asarray(isolated.centre), axis=1)
    edge = np.flatnonzero(radius > isolated.prior.radius - 0.5)[:64]
    assert len(edge) >= 48
    adu = batch.adu[edge]
    npe = get_method("npe")(isolated, adu, seed=3)
    grid = get_method("grid")(isolated, adu)
    exact_mean = grid.extra["theta_mean"].reshape(-1, 2)
    exact_sd = np.sqrt(np.diagonal(grid.extra["theta_cov"].reshape(-1, 2, 2), axis1=1, axis2=2))
    off = (np.abs(npe.theta_flat()[:, :, 0].mean(axis=1) - exact_mean) / exact_sd).max(axis=1)
    assert (off > 1).sum() >= 3  # the failure the flag exists for does happen at the edge
    assert npe.flagged[off > 1].all(), off[(off > 1) & ~npe.flagged]
    assert not npe.extra["edge_disagreement"][off < 0.4].any()
