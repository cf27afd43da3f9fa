"""``ddpm``: Ψ's surrogate posterior of the KDE — K samples per frame, their mean and variance."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from bayes_smlm.errors import ConfigError
from bayes_smlm.forward.config import Task
from bayes_smlm.forward.frames import validate_frames
from bayes_smlm.methods.registry import register_method, reject_unknown_options
from bayes_smlm.methods.result import PosteriorResult
from bayes_smlm.surrogates.settings import DEFAULT_SOLVER, DEFAULT_STEPS


@register_method(
    "ddpm",
    returns="kde",
    emitter_count="trained",
    brightness="trained",
    flags=("never: K samples of a network carry no check of their own"),
)
def ddpm_posterior(
    task: Task,
    adu: np.ndarray,
    *,
    seed: int = 0,
    chains: int = 4,
    draws: int = 1000,
    samples: int = 64,
    start: str = "guess",
    solver: str = DEFAULT_SOLVER,
    steps: int | None = DEFAULT_STEPS,
    eta: float = 0.0,
    checkpoint: str | Path | None = None,
    batch_size: int = 64,
    precision: str = "auto",
    keep_samples: bool = False,
    progress: bool = False,
    device: str = "cpu",
    recalibrate: bool | None = None,
    first_frame: int = 0,
    theta_true: np.ndarray | None = None,
    **unknown: Any,
) -> PosteriorResult:
    """Per-pixel KDE mean and variance from K samples of Ψ conditioned on φ(x).

    Parameters
    ----------
    chains, draws : int
        Part of the registry's calling convention, unused: Ψ has no chains; ``samples`` sets K.
    samples : int
        K, samples per frame.
    start : {"noise", "guess"}
        Start of the reverse process (:mod:`bayes_smlm.surrogates.psi.sampling`).
    solver : {"dpmpp", "ddim", "unipc"}
        Few-step sampler of the same model
        (:func:`~bayes_smlm.surrogates.psi.schedule.fast_scheduler_of`): DPM-Solver++ 2M
        (default), DDIM (``eta`` as in DDIM) or UniPC. On the selection frames
        (``scripts/psi_sweep.py``, never the acceptance frames) 8 DPM-Solver++ steps were as
        calibrated as 20 DDIM steps (paper task, 12 frames, against NUTS: KDE cover 50/90/95 %
        0.455 / 0.890 / 0.960 vs 0.445 / 0.880 / 0.953, z SD 1.18 vs 1.23), 5 were not
        (0.400 / 0.842 / 0.936, z SD 1.34); nor were 6 DPM-Solver++ or 4–6 UniPC steps
        (``reports/psi-sweep/samplers.md``: each step fewer narrows Ψ's spread).
    steps : int or None
        That many solver steps (default 8), or None: the full DDPM chain.
    precision : {"auto", "bf16", "fp32"}
        UNet arithmetic; ``auto`` (default) takes bf16 where the hardware has it natively
        (≈ 2× faster) and fp32 elsewhere (emulated bf16 is 14× slower).
    checkpoint : path or None
        Ψ checkpoint directory (default: the shipped one for the task).
    keep_samples : bool
        Return the K samples in ``extra["kde_samples"]`` (F, K, u·H, u·W).
    device : str
        torch device of φ and Ψ ("cpu", "cuda").
    recalibrate : bool or None
        The checkpoint's post-hoc spread recalibration
        (:mod:`bayes_smlm.surrogates.psi.recalibration`, fitted on separate frames) applied to
        the samples. None (default): applied where the checkpoint has one fitted on this sampler
        — the calibrated configuration (raw, the shipped isolated Ψ's signal variance is 0.6 of
        the exact one); otherwise raw, and ``settings["recalibration"]`` says why. True: applied,
        an error where it cannot be. False: the raw samples.
    first_frame : int
        Index of ``adu[0]`` in the whole movie, for the per-(frame, sample) seeds: a shard
        reproduces the whole run bitwise where its UNet calls are the whole run's (chunks a
        multiple of ``batch_size // samples`` frames: always with the default K = 64 per call;
        otherwise torch's convolutions round differently for another batch, ≈ 1e-7).
    """
    reject_unknown_options("ddpm", unknown)
    # torch + diffusers take seconds to import: only a ddpm run pays for them, not every user
    # of the method registry
    from bayes_smlm.surrogates.psi.pipeline import PsiPipeline

    adu = validate_frames(task, adu)
    started = time.perf_counter()
    psi = PsiPipeline.from_pretrained(checkpoint, task, device=device)
    recalibration = psi.recalibration
    if recalibrate and recalibration is None:
        raise ConfigError(
            "recalibrate",
            f"the Ψ checkpoint {checkpoint or 'shipped'} has no "
            "fitted recalibration (scripts/psi_sweep.py fit)",
        )
    if recalibrate:
        check_recalibration_sampler(recalibration, solver, steps)
    why = "applied" if recalibrate else "not asked for (raw samples)"
    if recalibrate is None:
        if recalibration is None:
            why = "none in the checkpoint (raw samples)"
        elif recalibration.sampler != (solver, steps):
            why = (
                f"fitted on {recalibration.sampler[1]} {recalibration.sampler[0]} steps, not "
                f"this sampler (raw samples)"
            )
        else:
            why = "applied"
    recalibrate = why == "applied"
    kde_draws = psi.sample(
        adu,
        samples,
        start=start,
        steps=steps,
        solver=solver,
        eta=eta,
        seed=seed,
        batch_size=batch_size,
        precision=precision,
        progress=progress,
        first_frame=first_frame,
    )
    if recalibrate:
        kde_draws = recalibration.apply(kde_draws)
    seconds = time.perf_counter() - started
    extra = {"phi_kde": psi.phi(adu)}
    if keep_samples:
        extra["kde_samples"] = kde_draws
    settings = {
        "samples": samples,
        "start": start,
        "solver": solver,
        "steps": steps,
        "eta": eta,
        **psi.settings,
        "loss": psi.config["loss"],
        "precision": precision,
        "checkpoint": str(checkpoint or "shipped"),
        "seed": seed,
        "recalibrated": recalibrate,
        "recalibration": why,
    }
    return PosteriorResult(
        method="ddpm",
        task=task,
        adu=adu,
        kde_mean=kde_draws.mean(axis=1),
        kde_var=kde_draws.var(axis=1, ddof=1),
        settings=settings,
        seconds=seconds,
        theta_true=theta_true,
        extra=extra,
    )


def check_recalibration_sampler(recalibration, solver: str, steps: int | None) -> None:
    """A spread recalibration holds only for samples of the sampler it was fitted on: one-line
    error naming that sampler otherwise."""
    if (solver, steps) != recalibration.sampler:
        fitted_solver, fitted_steps = recalibration.sampler
        raise ConfigError(
            "recalibrate",
            "the spread recalibration was fitted on samples of "
            f"{fitted_steps} {fitted_solver} steps; sample with "
            f"--solver {fitted_solver} --steps {fitted_steps} "
            f"(got {solver}, {steps})",
        )


def recalibrated_result(result: PosteriorResult, recalibration) -> PosteriorResult:
    """A ``ddpm`` result (run with ``keep_samples``) with the spread recalibration applied to
    its samples — no new sampling; named ``ddpm-recal`` so reports show it beside the raw one."""
    samples = result.extra.get("kde_samples")
    if samples is None:
        raise ConfigError("keep_samples", "recalibrating a ddpm result needs its samples")
    check_recalibration_sampler(recalibration, result.settings["solver"], result.settings["steps"])
    draws = recalibration.apply(samples)
    return PosteriorResult(
        method="ddpm-recal",
        task=result.task,
        adu=result.adu,
        kde_mean=draws.mean(axis=1),
        kde_var=draws.var(axis=1, ddof=1),
        settings={**result.settings, "recalibrated": True},
        seconds=result.seconds,
        theta_true=result.theta_true,
        extra={**result.extra, "kde_samples": draws},
    )
