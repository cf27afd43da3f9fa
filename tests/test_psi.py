"""Ψ: schedules, the model-space map, training with EMA, seeded sampling, the ddpm method."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from test_cli import run_cli

from bayes_smlm.errors import ConfigError
from bayes_smlm.forward.simulate import simulate
from bayes_smlm.methods import get_method
from bayes_smlm.surrogates.psi.pipeline import PsiPipeline, load_psi
from bayes_smlm.surrogates.psi.sampling import sample_kdes
from bayes_smlm.surrogates.psi.schedule import (
    alpha_bar_final,
    from_model_space,
    make_scheduler,
    noise_loss,
    to_model_space,
)
from bayes_smlm.surrogates.psi.training import train_psi
from bayes_smlm.surrogates.settings import PsiTraining


def test_paper_schedule_leaves_sixty_percent_signal_and_full_none():
    betas = np.linspace(1e-4, 1e-2, 100)  # the published schedule, independently
    assert alpha_bar_final(make_scheduler("paper")) == pytest.approx(np.prod(1 - betas), rel=1e-5)
    assert 0.59 < alpha_bar_final(make_scheduler("paper")) < 0.61
    assert alpha_bar_final(make_scheduler("full")) < 1e-3
    # ... without the cosine schedule's last β ≈ 1, which makes the first ε-prediction step blow up
    assert float(make_scheduler("full").betas.max()) <= 0.15 + 1e-6  # float32
    assert not make_scheduler("full").config.clip_sample
    # full predicts v (well conditioned where ᾱ → 0); paper keeps the published ε
    assert make_scheduler("full").config.prediction_type == "v_prediction"
    assert make_scheduler("paper").config.prediction_type == "epsilon"


def test_v_target_is_the_reweighted_noise():
    """ε̂ − ε = √ᾱ (v̂ − v): the v-loss is an ε-loss reweighted over t (same minimiser)."""
    from bayes_smlm.surrogates.psi.schedule import training_target

    scheduler = make_scheduler("full")
    gen = torch.Generator().manual_seed(0)
    y0, noise = torch.rand(4, 1, 8, 8, generator=gen), torch.randn(4, 1, 8, 8, generator=gen)
    t = torch.tensor([0, 30, 60, 99])
    ab = scheduler.alphas_cumprod[t].view(-1, 1, 1, 1)
    v = training_target(scheduler, y0, noise, t)
    torch.testing.assert_close(v, ab.sqrt() * noise - (1 - ab).sqrt() * y0)
    y_t = scheduler.add_noise(y0, noise, t)
    torch.testing.assert_close(ab.sqrt() * y_t - (1 - ab).sqrt() * v, y0, atol=1e-5, rtol=0)
    assert training_target(make_scheduler("paper"), y0, noise, t) is noise


def test_model_space_map_is_fixed_and_invertible():
    y = torch.tensor([0.0, 0.5, 1.0, 3.0])
    assert torch.equal(to_model_space(y), torch.tensor([-1.0, 0.0, 1.0, 5.0]))
    assert torch.allclose(from_model_space(to_model_space(y)), y)


def test_losses_on_the_noise():
    a, b = torch.tensor([1.0, -1.0]), torch.tensor([0.0, 1.0])
    assert noise_loss(a, b, "l1") == pytest.approx(1.5)
    assert noise_loss(a, b, "l2") == pytest.approx(2.5)
    with pytest.raises(ConfigError, match="argument loss"):
        noise_loss(a, b, "huber")


@pytest.fixture(scope="module")
def tiny_psi(tmp_path_factory, isolated):
    from bayes_smlm.surrogates.phi.training import train_phi
    from bayes_smlm.surrogates.settings import PhiTraining

    root = tmp_path_factory.mktemp("psi")
    train_phi(
        isolated,
        root / "phi",
        PhiTraining(steps=2, batch_size=4, validation_frames=8),
        widths={
            "context_channels": 8,
            "dilations": (1, 2),
            "up_channels": (8, 4),
            "refine_blocks": 1,
        },
        progress=False,
    )
    settings = PsiTraining(
        steps=30,
        batch_size=8,
        crop=16,
        validation_frames=8,
        validate_every=10,
        checkpoint_every=10,
        lr=2e-3,
    )
    state = train_psi(isolated, root / "psi", settings, phi_checkpoint=root / "phi", progress=False)
    return root / "psi", state


def test_training_lowers_the_validation_loss_and_exports_the_unet(tiny_psi, isolated):
    out, state = tiny_psi
    val = [h["val_loss"] for h in state.history]
    assert len(val) == 3 and val[-1] < 0.9 * val[0]
    config = json.loads((out / "config.json").read_text())
    assert config["kind"] == "ddpm-psi" and config["schedule"] == "full"
    assert len(config["phi"]["sha256"]) == 64
    assert (out / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    scheduler_config = json.loads((out / "scheduler" / "scheduler_config.json").read_text())
    assert scheduler_config["_class_name"] == "DDPMScheduler"
    assert scheduler_config["prediction_type"] == config["prediction_type"] == "v_prediction"
    unet, scheduler, _ = load_psi(out, isolated)
    assert unet.config.in_channels == 2 and unet.config.out_channels == 1
    assert scheduler.config.beta_end == pytest.approx(0.15) and not scheduler.config.clip_sample


def test_psi_checkpoint_for_another_task_is_refused(tiny_psi, paper):
    with pytest.raises(ConfigError, match="argument checkpoint"):
        load_psi(tiny_psi[0], paper)


def test_samples_do_not_depend_on_batching(tiny_psi, isolated):
    unet, scheduler, _ = load_psi(tiny_psi[0], isolated)
    cond = torch.rand(3, 1, 80, 80)
    kw = dict(samples=2, start="noise", steps=4, seed=5)
    a = sample_kdes(unet, scheduler, cond, batch_size=2, **kw)
    b = sample_kdes(unet, scheduler, cond, batch_size=6, **kw)
    np.testing.assert_allclose(a, b, atol=2e-5 * np.abs(a).max())  # rounding of batched convs
    c = sample_kdes(unet, scheduler, cond, batch_size=6, **{**kw, "seed": 6})
    assert np.abs(a - c).max() > 1e-2


def test_guess_start_coincides_with_noise_under_the_full_schedule(tiny_psi, isolated):
    # ᾱ_T ≈ 4e-4: the noised guess differs from pure noise by ~0.02·m(ŷ).
    unet, scheduler, _ = load_psi(tiny_psi[0], isolated)
    cond = torch.rand(2, 1, 80, 80)
    kw = dict(samples=2, steps=3, seed=1)
    a = sample_kdes(unet, scheduler, cond, start="noise", **kw)
    b = sample_kdes(unet, scheduler, cond, start="guess", **kw)
    assert np.abs(a - b).max() < 0.1 * np.abs(a).max()


def test_ddpm_method_and_cli_write_the_kde_group(tiny_psi, isolated, tmp_path, capsys):
    frames = simulate(isolated, 2, seed=3)
    result = get_method("ddpm")(
        isolated, frames.adu, samples=3, steps=2, checkpoint=tiny_psi[0], keep_samples=True
    )
    assert result.kde_var.shape == (2, 80, 80) and result.extra["kde_samples"].shape == (
        2,
        3,
        80,
        80,
    )
    np.testing.assert_allclose(
        result.kde_var, result.extra["kde_samples"].var(axis=1, ddof=1), rtol=1e-5
    )
    npz, nc = tmp_path / "f.npz", tmp_path / "d.nc"
    run_cli(
        capsys, "simulate", "--task", "isolated", "--frames", "2", "--seed", "3", "--out", str(npz)
    )
    status, out, _ = run_cli(
        capsys,
        "posterior",
        str(npz),
        "--method",
        "ddpm",
        "--samples",
        "3",
        "--steps",
        "2",
        "--start",
        "noise",
        "--checkpoint",
        str(tiny_psi[0]),
        "--quiet",
        "--out",
        str(nc),
    )
    assert status == 0 and nc.is_file()
    from bayes_smlm.io.posteriors import load_posterior

    tree = load_posterior(nc)
    assert tree["kde"]["var"].shape == (2, 80, 80)


@pytest.mark.parametrize(
    "argv, argument",
    [
        (["--method", "nuts", "--samples", "3"], "argument --method: nuts takes no option"),
        (["--method", "ddpm", "--steps", "500"], "--steps"),
    ],
)
def test_posterior_options_fail_in_one_line(tiny_psi, tmp_path, capsys, argv, argument):
    npz = tmp_path / "f.npz"
    run_cli(
        capsys, "simulate", "--task", "isolated", "--frames", "1", "--seed", "3", "--out", str(npz)
    )
    status, _, err = run_cli(
        capsys,
        "posterior",
        str(npz),
        *argv,
        "--checkpoint",
        str(tiny_psi[0]),
        "--out",
        str(tmp_path / "x.nc"),
    )
    assert status == 2 and argument in err and len(err.strip().splitlines()) == 1


def test_posterior_full_chain_and_ddim_steps_exclude_each_other(tiny_psi, tmp_path, capsys):
    npz = tmp_path / "f.npz"
    run_cli(
        capsys, "simulate", "--task", "isolated", "--frames", "1", "--seed", "3", "--out", str(npz)
    )
    status, _, err = run_cli(
        capsys,
        "posterior",
        str(npz),
        "--method",
        "ddpm",
        "--full-chain",
        "--steps",
        "5",
        "--out",
        str(tmp_path / "x.nc"),
    )
    assert status == 2 and "--full-chain" in err and len(err.strip().splitlines()) == 1


def test_frame_conditioning_repeats_the_normalised_frame_onto_the_kde_grid(isolated):
    from bayes_smlm.surrogates.phi.estimator import architecture_for
    from bayes_smlm.surrogates.psi.conditioning import frame_channel
    from bayes_smlm.surrogates.settings import condition_channels

    arch = architecture_for(isolated)
    photons = torch.arange(400, dtype=torch.float32).reshape(1, 1, 20, 20)
    up = frame_channel(photons, isolated)
    assert up.shape == (1, 1, 80, 80)
    expected = (photons[0, 0, 3, 7] - arch.input_shift) / arch.input_scale
    assert torch.allclose(up[0, 0, 12:16, 28:32], expected.expand(4, 4))
    assert condition_channels("phi") == 1 and condition_channels("phi+frame") == 2
    with pytest.raises(ConfigError, match="argument condition"):
        condition_channels("frame")


def test_frame_conditioned_psi_trains_with_x0_prediction_and_samples(isolated, tmp_path):
    phi_dir = tmp_path / "phi"
    from bayes_smlm.surrogates.phi.training import train_phi
    from bayes_smlm.surrogates.settings import PhiTraining

    train_phi(
        isolated,
        phi_dir,
        PhiTraining(steps=1, batch_size=2, validation_frames=4),
        widths={
            "context_channels": 8,
            "dilations": (1,),
            "up_channels": (8, 4),
            "refine_blocks": 1,
        },
        progress=False,
    )
    settings = PsiTraining(
        steps=4,
        batch_size=2,
        validation_frames=2,
        validate_every=2,
        checkpoint_every=2,
        condition="phi+frame",
        prediction="sample",
    )
    train_psi(isolated, tmp_path / "psi", settings, phi_checkpoint=phi_dir, progress=False)
    state = train_psi(
        isolated, tmp_path / "psi", PsiTraining(steps=6), resume=True, progress=False
    )  # φ found again through the relative path
    assert state.step == 6
    psi = PsiPipeline.from_pretrained(tmp_path / "psi", isolated)
    assert psi.config["phi"]["checkpoint"] == "../phi"  # no path of this machine recorded
    assert psi.unet.config.in_channels == 3
    assert psi.settings == {"schedule": "full", "prediction": "sample", "condition": "phi+frame"}
    frames = simulate(isolated, 2, seed=4)
    assert psi.conditioning(frames.adu).shape == (2, 2, 80, 80)
    samples = psi.sample(frames.adu, 2, steps=2, precision="fp32")
    assert samples.shape == (2, 2, 80, 80) and np.isfinite(samples).all()
    assert psi.recalibration is None
    with pytest.raises(ConfigError, match="argument recalibrate"):
        get_method("ddpm")(
            isolated, frames.adu, samples=2, steps=2, checkpoint=tmp_path / "psi", recalibrate=True
        )


@pytest.mark.parametrize("device", ["cuda:99", "tpu", "gpu0"])
def test_an_unusable_device_is_refused_in_one_line(capsys, device):
    status, _, err = run_cli(
        capsys, "train-psi", "--task", "isolated", "--device", device, "--out", "never-written"
    )
    assert status == 2 and "--device" in err and len(err.strip().splitlines()) == 1


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="gpu: needs a CUDA device")
def test_psi_trains_and_samples_on_a_gpu(tiny_psi, isolated, tmp_path):
    psi = PsiPipeline.from_pretrained(tiny_psi[0], isolated, device="cuda")
    samples = psi.sample(simulate(isolated, 2, seed=4).adu, 4, steps=3)
    assert samples.shape == (2, 4, 80, 80) and np.isfinite(samples).all()


def test_dpm_solver_samples_do_not_depend_on_batching_and_refuse_eta(tiny_psi, isolated):
    """The multistep solver keeps state between steps: each batch starts from a fresh copy, so
    a frame's samples are the same whatever batch it is in."""
    psi = PsiPipeline.from_pretrained(tiny_psi[0], isolated)
    adu = simulate(isolated, 3, seed=5).adu
    one_batch = psi.sample(adu, 2, steps=3, solver="dpmpp", batch_size=64, precision="fp32")
    per_frame = psi.sample(adu, 2, steps=3, solver="dpmpp", batch_size=2, precision="fp32")
    np.testing.assert_allclose(one_batch, per_frame, atol=1e-5)
    ddim = psi.sample(adu, 2, steps=3, solver="ddim", batch_size=64, precision="fp32")
    assert np.isfinite(ddim).all() and not np.allclose(ddim, one_batch)
    with pytest.raises(ConfigError, match="argument eta"):
        psi.sample(adu, 2, steps=3, solver="dpmpp", eta=1.0)
    with pytest.raises(ConfigError, match="argument solver"):
        psi.sample(adu, 2, steps=3, solver="heun")


def test_ode_solvers_converge_to_one_solution_as_steps_grow(tiny_psi, isolated):
    """DPM-Solver++ and UniPC integrate the same probability-flow ODE from the same start: with
    many steps they agree far more closely than with few; UniPC at few steps, being of second
    order, is closer to the many-step solution than first-order DDIM (η = 0)."""
    psi = PsiPipeline.from_pretrained(tiny_psi[0], isolated)
    adu = simulate(isolated, 1, seed=5).adu

    def run(solver, steps):
        return psi.sample(adu, 2, steps=steps, solver=solver, precision="fp32")

    def gap(a, b):
        return float(np.abs(a - b).max())

    few = {s: run(s, 4) for s in ("ddim", "dpmpp", "unipc")}
    many = {s: run(s, 50) for s in ("dpmpp", "unipc")}
    assert gap(many["unipc"], many["dpmpp"]) < 0.2 * gap(few["unipc"], few["dpmpp"])
    assert gap(few["unipc"], many["dpmpp"]) < gap(few["ddim"], many["dpmpp"])


def test_a_recalibration_refitted_for_another_sampler_serves_that_sampler_only(
    tiny_psi, isolated, tmp_path
):
    """scripts/psi_sweep.py moments + fit, as the shipped recalibrations were refitted."""
    import importlib.util
    import shutil
    from pathlib import Path

    from bayes_smlm.io.atomic import write_npz

    script = Path(__file__).resolve().parents[1] / "scripts" / "psi_sweep.py"
    spec = importlib.util.spec_from_file_location("psi_sweep", script)
    sweep = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sweep)
    root = tmp_path / "copy"
    shutil.copytree(tiny_psi[0].parent, root)  # Ψ and its φ ("../phi"): the fixture stays as is
    checkpoint = root / "psi"
    frames = simulate(isolated, 2, seed=8)
    exact = get_method("grid")(isolated, frames.adu)
    reference, moments = tmp_path / "ref.npz", tmp_path / "moments.npz"
    write_npz(
        reference,
        adu=frames.adu,
        ref_var=exact.kde_var,
        ref_scores=np.asarray(json.dumps({"method": "grid"})),
    )
    sweep.moments(moments, reference, checkpoint, "cpu", "unipc", 2)
    sweep.fit(checkpoint, reference, moments, seed=7)
    recalibration = PsiPipeline.from_pretrained(checkpoint, isolated).recalibration
    assert recalibration.sampler == ("unipc", 2) and recalibration.fitted_on["frames"] == 2
    options = {"samples": 2, "solver": "unipc", "checkpoint": checkpoint, "recalibrate": True}
    assert get_method("ddpm")(isolated, frames.adu[:1], steps=2, **options).settings["recalibrated"]
    with pytest.raises(ConfigError, match="--solver unipc --steps 2 \\(got unipc, 3\\)"):
        get_method("ddpm")(isolated, frames.adu[:1], steps=3, **options)


def test_posterior_cli_takes_the_solver(tiny_psi, tmp_path, capsys):
    npz = tmp_path / "f.npz"
    run_cli(
        capsys, "simulate", "--task", "isolated", "--frames", "1", "--seed", "3", "--out", str(npz)
    )
    status, out, _ = run_cli(
        capsys,
        "posterior",
        str(npz),
        "--method",
        "ddpm",
        "--solver",
        "ddim",
        "--steps",
        "2",
        "--samples",
        "2",
        "--checkpoint",
        str(tiny_psi[0]),
        "--quiet",
        "--out",
        str(tmp_path / "x.nc"),
    )
    assert status == 0 and "method ddpm, 1 frames" in out
    from bayes_smlm.io.posteriors import load_posterior

    assert '"solver": "ddim"' in load_posterior(tmp_path / "x.nc").attrs["settings"]
