"""``ddpm``: Ψ's surrogate posterior of the KDE — K samples per frame, their mean and variance."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from ..config import Task
from .batching import check_frames
from .registry import register_method, reject_unknown_options
from .result import PosteriorResult


@register_method("ddpm")
def ddpm_posterior(task: Task, adu: np.ndarray, *, seed: int = 0, chains: int = 4,
                   draws: int = 1000, samples: int = 64,
                   start: str = "guess", steps: int | None = 20, eta: float = 0.0,
                   checkpoint: str | Path | None = None, batch_size: int = 64,
                   precision: str = "bf16", keep_samples: bool = False, progress: bool = False,
                   theta_true: np.ndarray | None = None, **unknown: Any) -> PosteriorResult:
    """Per-pixel KDE mean and variance from K samples of Ψ conditioned on φ(x).

    Parameters
    ----------
    chains, draws : int
        Part of the registry's calling convention, unused: Ψ has no chains; ``samples`` sets K.
    samples : int
        K, samples per frame.
    start : {"noise", "guess"}
        Start of the reverse process (:mod:`bayes_smlm.sampling`).
    steps : int or None
        That many DDIM steps (``eta`` as in DDIM; default 20), or None: the full DDPM chain.
    precision : {"bf16", "fp32"}
        UNet arithmetic; bf16 autocast (default) is ≈ 3× faster on a CPU.
    checkpoint : path or None
        Ψ checkpoint directory (default: the shipped one for the task).
    keep_samples : bool
        Return the K samples in ``extra["kde_samples"]`` (F, K, u·H, u·W).
    """
    reject_unknown_options("ddpm", unknown)
    from ..phi import frames_to_photons
    from ..psi import load_psi, phi_of
    from ..sampling import sample_kdes

    adu = check_frames(task, adu)
    started = time.perf_counter()
    unet, config = load_psi(checkpoint, task)
    phi = phi_of(config, checkpoint, task)
    cond = phi.photons(frames_to_photons(adu, task))
    draws = sample_kdes(unet, cond, schedule=config["schedule"], samples=samples, start=start,
                        steps=steps, eta=eta, seed=seed, batch_size=batch_size,
                        precision=precision, progress=progress)
    seconds = time.perf_counter() - started
    extra = {"phi_kde": cond[:, 0].numpy()}
    if keep_samples:
        extra["kde_samples"] = draws
    settings = {"samples": samples, "start": start, "steps": steps, "eta": eta,
                "schedule": config["schedule"], "loss": config["loss"], "precision": precision,
                "checkpoint": str(checkpoint or "shipped"), "seed": seed}
    return PosteriorResult(method="ddpm", task=task, adu=adu, kde_mean=draws.mean(axis=1),
                           kde_var=draws.var(axis=1, ddof=1), settings=settings, seconds=seconds,
                           theta_true=theta_true, extra=extra)
