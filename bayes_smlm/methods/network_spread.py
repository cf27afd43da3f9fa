"""``ensemble`` and ``mc_dropout``: the spread of φ's KDE estimates as a per-pixel variance.

The two usual uncertainty tools for a network, run as posterior methods so that they are scored
like every other:

* ``ensemble`` — deep ensembles (Lakshminarayanan et al. 2017): M φ networks trained alike from
  different seeds (initialisation and training frames); per pixel, the mean and variance
  (ddof = 1) of their M estimates.
* ``mc_dropout`` — Monte Carlo dropout (Gal & Ghahramani 2016): one φ trained with dropout on
  its last hidden layer, left on at inference; T passes, their per-pixel mean and variance. The
  layers below the dropout are deterministic, so they run once per frame and only the dropout
  and the 1×1 output layer run T times (the same T draws as T whole passes, at ≈ 1/T the cost).

Neither targets p(y | x): they measure how much networks (or thinned copies of one) disagree,
which the calibration study compares with the exact posterior's variance.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from bayes_smlm.errors import ConfigError
from bayes_smlm.forward.checks import check_int
from bayes_smlm.forward.config import Task
from bayes_smlm.forward.frames import validate_frames
from bayes_smlm.methods.registry import register_method, reject_unknown_options
from bayes_smlm.methods.result import PosteriorResult

ENSEMBLE_PREFIX = "member-"  # an ensemble checkpoint is a folder of φ checkpoints member-1, …


def _checkpoint_folder(
    checkpoint: str | Path | None, network: str, task: Task, how_to_train: str
) -> Path:
    """``checkpoint``, or the shipped ``network`` folder of the task (its SHA-256 checked)."""
    from bayes_smlm.surrogates.checkpoint import shipped_checkpoint, verify_shipped

    if checkpoint is not None:
        return Path(checkpoint)
    folder = shipped_checkpoint(network, task.name)
    if not folder.is_dir():
        raise ConfigError(
            "checkpoint",
            f"no shipped {network} for task {task.name!r}; train one with {how_to_train}",
        )
    verify_shipped(folder)
    return folder


def ensemble_members(checkpoint: str | Path | None, task: Task) -> list[Path]:
    """The member φ checkpoint folders of an ensemble (None: the shipped one for the task)."""
    folder = _checkpoint_folder(checkpoint, "phi-ensemble", task, "scripts/train-spread-nets")
    members = sorted(folder.glob(f"{ENSEMBLE_PREFIX}*"), key=lambda p: p.name)
    if len(members) < 2:
        raise ConfigError(
            "checkpoint",
            f"an ensemble needs at least 2 {ENSEMBLE_PREFIX}* φ "
            f"checkpoints ({folder} has {len(members)})",
        )
    return members


@register_method(
    "ensemble",
    returns="kde",
    emitter_count="trained",
    brightness="trained",
    flags=("never: the networks' spread carries no check of its own"),
)
def ensemble_posterior(
    task: Task,
    adu: np.ndarray,
    *,
    seed: int = 0,
    chains: int = 4,
    draws: int = 1000,
    progress: bool = False,
    checkpoint: str | Path | None = None,
    batch_size: int = 256,
    precision: str = "fp32",
    device: str = "cpu",
    keep_samples: bool = False,
    theta_true: np.ndarray | None = None,
    **unknown: Any,
) -> PosteriorResult:
    """Mean and variance of the KDE estimates of M φ networks.

    Parameters
    ----------
    checkpoint : path or None
        A folder of φ checkpoints ``member-1``, ``member-2``, … (default: the shipped ensemble of
        the task, M = 5).
    seed, chains, draws
        Part of the registry's calling convention, unused (the members are deterministic).
    batch_size, precision, device
        As for φ (:class:`~bayes_smlm.surrogates.phi.estimator.PhiPredictor`).
    keep_samples : bool
        Return the M estimates in ``extra["kde_samples"]`` (F, M, u·H, u·W).
    """
    reject_unknown_options("ensemble", unknown)
    from bayes_smlm.surrogates.phi.estimator import PhiPredictor, load_phi

    adu = validate_frames(task, adu)
    started = time.perf_counter()  # checkpoint loading in, as every method's (result.seconds)
    members = ensemble_members(checkpoint, task)
    estimates = np.stack(
        [
            PhiPredictor(
                load_phi(member, task)[0],
                task,
                batch_size=batch_size,
                precision=precision,
                device=device,
            )(adu)
            for member in members
        ],
        axis=1,
    )  # (F, M, uH, uW)
    return PosteriorResult(
        method="ensemble",
        task=task,
        adu=adu,
        kde_mean=estimates.mean(axis=1),
        kde_var=estimates.var(axis=1, ddof=1),
        settings={
            "members": len(members),
            "checkpoint": str(checkpoint or "shipped"),
            "precision": precision,
        },
        seconds=time.perf_counter() - started,
        theta_true=theta_true,
        extra={"kde_samples": estimates} if keep_samples else {},
    )


@register_method(
    "mc_dropout",
    returns="kde",
    emitter_count="trained",
    brightness="trained",
    flags=("never: the passes' spread carries no check of its own"),
)
def mc_dropout_posterior(
    task: Task,
    adu: np.ndarray,
    *,
    seed: int = 0,
    chains: int = 4,
    draws: int = 1000,
    progress: bool = False,
    passes: int = 64,
    checkpoint: str | Path | None = None,
    batch_size: int = 64,
    precision: str = "fp32",
    device: str = "cpu",
    keep_samples: bool = False,
    theta_true: np.ndarray | None = None,
    **unknown: Any,
) -> PosteriorResult:
    """Mean and variance of T Monte Carlo dropout passes of a φ trained with dropout.

    Parameters
    ----------
    passes : int
        T, dropout passes per frame (default 64, as many as the DDPM's samples).
    checkpoint : path or None
        A φ checkpoint built with dropout > 0 (default: the shipped ``phi-dropout`` of the task,
        dropout 0.1).
    seed : int
        Seeds torch's generator for the dropout masks.
    keep_samples : bool
        Return the T passes in ``extra["kde_samples"]`` (F, T, u·H, u·W).
    """
    reject_unknown_options("mc_dropout", unknown)
    import torch

    from bayes_smlm.surrogates.phi.estimator import PhiPredictor, frames_to_photons, load_phi

    adu = validate_frames(task, adu)
    passes = check_int("passes", passes, lo=2)
    started = time.perf_counter()  # checkpoint loading in, as every method's (result.seconds)
    folder = _checkpoint_folder(
        checkpoint, "phi-dropout", task, "`bayes-smlm train-phi --dropout 0.1`"
    )
    model, config = load_phi(folder, task)
    rate = float(config["architecture"].get("dropout", 0.0))
    if rate <= 0:
        raise ConfigError(
            "checkpoint",
            f"{folder} is a φ without dropout; MC dropout needs one trained with --dropout",
        )
    predictor = PhiPredictor(model, task, batch_size=batch_size, precision=precision, device=device)
    network: Any = predictor.model  # a DeepSTORM (torch types its parts as Tensors)
    network.dropout.train()  # dropout on; BatchNorm stays in evaluation mode
    torch.manual_seed(seed)

    def passes_of(photons: torch.Tensor) -> torch.Tensor:
        features = network.features(photons)
        return torch.stack([network.readout(features)[:, 0] for _ in range(passes)], 1)

    def moments(photons: torch.Tensor) -> torch.Tensor:
        draws = passes_of(photons)
        return torch.stack([draws.mean(1), draws.var(1)], 1)  # var: ddof = 1

    photons = frames_to_photons(adu, task)
    if keep_samples:
        samples = predictor.map_batches(photons, passes_of).cpu().numpy()
        mean, var, extra = samples.mean(1), samples.var(1, ddof=1), {"kde_samples": samples}
    else:
        both = predictor.map_batches(photons, moments).cpu().numpy()
        mean, var, extra = both[:, 0], both[:, 1], {}
    return PosteriorResult(
        method="mc_dropout",
        task=task,
        adu=adu,
        kde_mean=mean,
        kde_var=var,
        settings={
            "passes": passes,
            "dropout": rate,
            "seed": seed,
            "checkpoint": str(checkpoint or "shipped"),
            "precision": precision,
        },
        seconds=time.perf_counter() - started,
        theta_true=theta_true,
        extra=extra,
    )
