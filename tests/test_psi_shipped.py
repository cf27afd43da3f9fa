"""The shipped Ψ checkpoints: diffusers directories that travel with their φ, their
recalibrations tied to the sampler they were fitted on, and their variance maps against the
exact posteriors on fresh frames."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from bayes_smlm.errors import ConfigError
from bayes_smlm.forward.simulate import simulate
from bayes_smlm.methods import get_method
from bayes_smlm.surrogates.psi.pipeline import PsiPipeline
from bayes_smlm.surrogates.psi.schedule import make_scheduler
from bayes_smlm.surrogates.settings import DEFAULT_SOLVER, DEFAULT_STEPS


@pytest.mark.slow
def test_shipped_psi_loads_with_its_phi_and_follows_the_exact_variance_map(isolated):
    """The shipped checkpoint travels with its φ (relative path, SHA-256 checked); on fresh
    frames its variance maps track the exact ones (the full 50-frame bar: `study ddpm-check`)."""
    from bayes_smlm.compare import variance_agreement
    from bayes_smlm.surrogates.psi.pipeline import phi_of, psi_shipped_checkpoint, read_config

    config = read_config(psi_shipped_checkpoint("isolated"))
    assert config["phi"]["checkpoint"] == "../phi-isolated"
    phi_of(config, None, isolated)
    frames = simulate(isolated, 4, 2100)
    grid = get_method("grid")(isolated, frames.adu)
    ddpm = get_method("ddpm")(isolated, frames.adu, samples=32, steps=10, seed=1)
    assert np.isfinite(ddpm.kde_var).all()
    agreement = variance_agreement(ddpm.kde_var, grid.kde_var)
    assert agreement.median_pearson > 0.7 and 0.5 < agreement.median_summed_ratio < 2.0


@pytest.mark.slow
def test_shipped_psi_paper_loads_with_its_phi_and_tracks_the_nuts_variance_map(paper):
    """Ψ for the 10-emitter task: φ travels with it (SHA-256 checked) and on fresh frames its
    variance maps follow NUTS's (the 32-frame bars: `study calibration --task paper`)."""
    from bayes_smlm.compare import variance_agreement
    from bayes_smlm.compare.regions import region_variance_scores

    psi = PsiPipeline.from_pretrained(None, paper)
    assert psi.config["phi"]["checkpoint"] == "../phi-paper"
    assert psi.recalibration is not None
    frames = simulate(paper, 3, 2150)
    nuts = get_method("nuts")(paper, frames.adu, seed=0)
    keep = ~nuts.flagged
    ddpm = get_method("ddpm")(paper, frames.adu[keep], samples=32, steps=10, seed=1)
    agreement = variance_agreement(ddpm.kde_var, nuts.kde_var[keep])
    signal = region_variance_scores(ddpm.kde_var, nuts.kde_var[keep], nuts.kde_mean[keep])
    # 32 samples: a variance estimate has relative SD √(2/31) ≈ 0.25 per pixel, far less summed
    assert agreement.median_pearson > 0.8
    assert 0.6 < np.median(signal["signal_ratio"]) < 1.6


@pytest.mark.slow
@pytest.mark.parametrize("task_name, frames", [("isolated", 12), ("paper", 6)])
def test_shipped_recalibration_reaches_its_recorded_metrics_on_fresh_frames(task_name, frames):
    """The refitted recalibrations (8 DPM-Solver++ steps; model cards: isolated signal Σvar
    ratio 0.70 raw → 0.99, floor 7.8e-3 → 1.2e-4; paper floor 6.8e-3 → 7.9e-4) on frames no fit
    or acceptance run used (seed 2300 + task): the emitters' summed variance within the
    acceptance bar [0.8, 1.25] of the exact one, and the background floor cut several-fold."""
    from bayes_smlm.compare.regions import region_variance_scores
    from bayes_smlm.forward.tasks import get_task
    from bayes_smlm.methods.ddpm import recalibrated_result
    from bayes_smlm.methods.reference import reference_method

    task = get_task(task_name)
    batch = simulate(task, frames, 2300 + (task_name == "paper"))
    exact = get_method(reference_method(task))(task, batch.adu, seed=0)
    keep = ~exact.flagged
    raw = get_method("ddpm")(task, batch.adu[keep], seed=1, keep_samples=True, recalibrate=False)
    recalibrated = recalibrated_result(raw, PsiPipeline.from_pretrained(None, task).recalibration)
    scores = {
        name: region_variance_scores(r.kde_var, exact.kde_var[keep], exact.kde_mean[keep])
        for name, r in (("raw", raw), ("recalibrated", recalibrated))
    }
    assert keep.sum() >= frames // 2
    assert 0.8 <= np.median(scores["recalibrated"]["signal_ratio"]) <= 1.25
    floor = {name: np.median(s["background_floor"]) for name, s in scores.items()}
    assert floor["recalibrated"] < (0.1 if task_name == "isolated" else 0.25) * floor["raw"]


@pytest.mark.parametrize("task_name", ["isolated", "paper"])
def test_shipped_psi_is_a_diffusers_directory_with_its_scheduler(task_name):
    """unet/ and scheduler/ as diffusers saves them; the scheduler is the one config.json names,
    and from_pretrained(dir) alone recovers the task the checkpoint was trained for."""
    from diffusers import DDPMScheduler

    from bayes_smlm.surrogates.psi.pipeline import PsiPipeline, psi_shipped_checkpoint, read_config

    directory = psi_shipped_checkpoint(task_name)
    config = read_config(directory)
    saved = json.loads((directory / "scheduler" / "scheduler_config.json").read_text())
    assert saved["_class_name"] == "DDPMScheduler" and not saved["clip_sample"]
    assert saved["prediction_type"] == config["prediction_type"]
    loaded = DDPMScheduler.from_pretrained(directory, subfolder="scheduler")
    named = make_scheduler(config["schedule"], config["prediction_type"])
    assert torch.equal(loaded.alphas_cumprod, named.alphas_cumprod)
    psi = PsiPipeline.from_pretrained(directory)
    assert (
        psi.task.name == task_name
        and psi.scheduler.config.prediction_type == saved["prediction_type"]
    )


def test_recalibration_asks_for_the_sampler_it_was_fitted_on(isolated):
    adu = simulate(isolated, 1, seed=6).adu
    fitted = PsiPipeline.from_pretrained(None, isolated).recalibration.sampler
    assert fitted == (DEFAULT_SOLVER, DEFAULT_STEPS)  # the shipped ones: the default sampler
    with pytest.raises(
        ConfigError,
        match=f"argument recalibrate: .*--solver {DEFAULT_SOLVER} "
        f"--steps {DEFAULT_STEPS} \\(got ddim, 20\\)",
    ):
        get_method("ddpm")(isolated, adu, samples=2, solver="ddim", steps=20, recalibrate=True)
