"""Ψ as one object: its UNet, its scheduler, the φ it was trained with, and how to sample it.

A Ψ checkpoint is a directory in diffusers' layout: ``unet/`` (``UNet2DModel.save_pretrained``,
safetensors), ``scheduler/scheduler_config.json`` (``DDPMScheduler.save_pretrained``: β's and
prediction type) and our ``config.json`` (task, conditioning, loss, training record, and φ by a
path relative to this directory plus its SHA-256). ``PsiPipeline.from_pretrained(checkpoint)``
loads one (the shipped one of ``task`` when ``checkpoint`` is None) with its φ checked by
SHA-256; ``pipeline.sample(adu, K)`` returns K KDE samples per frame. The ``ddpm`` method, the
benchmarks and the studies all go through it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import DDPMScheduler, UNet2DModel

from bayes_smlm.errors import ConfigError
from bayes_smlm.forward.config import Task, task_from_dict
from bayes_smlm.surrogates.checkpoint import (
    build_network,
    load_weights,
    open_checkpoint,
    read_checkpoint_config,
    read_safetensors,
    weights_sha256,
)
from bayes_smlm.surrogates.checkpoint import shipped_checkpoint as shipped_network_checkpoint
from bayes_smlm.surrogates.phi.estimator import PhiPredictor, load_phi
from bayes_smlm.surrogates.psi.conditioning import conditioning
from bayes_smlm.surrogates.psi.recalibration import recalibration_of
from bayes_smlm.surrogates.psi.sampling import sample_kdes
from bayes_smlm.surrogates.psi.schedule import make_scheduler
from bayes_smlm.surrogates.settings import DEFAULT_SOLVER, DEFAULT_STEPS
from bayes_smlm.surrogates.training import WEIGHTS_FILE

CHECKPOINT_KIND = "ddpm-psi"
UNET_DIR = "unet"
UNET_WEIGHTS = "diffusion_pytorch_model.safetensors"  # what save_pretrained writes in unet/
SCHEDULER_DIR = "scheduler"  # diffusers' layout: scheduler/scheduler_config.json


def psi_shipped_checkpoint(task_name: str) -> Path:
    """Directory of the shipped Ψ checkpoint for a named task (may not exist)."""
    return shipped_network_checkpoint("psi", task_name)


def read_config(checkpoint: str | Path, argument: str = "checkpoint") -> dict[str, Any]:
    """The JSON config of a Ψ checkpoint directory."""
    return read_checkpoint_config(checkpoint, CHECKPOINT_KIND, argument)


def load_psi(
    checkpoint: str | Path | None, task: Task
) -> tuple[UNet2DModel, DDPMScheduler, dict[str, Any]]:
    """Load Ψ's EMA UNet and its scheduler for ``task`` (the shipped checkpoint of its name when
    None).

    Raises
    ------
    ConfigError
        If there is no such checkpoint, it was trained for another task, or the φ it was trained
        with is missing or has changed (its SHA-256 differs).
    """
    checkpoint, config = open_checkpoint(
        checkpoint,
        task,
        kind=CHECKPOINT_KIND,
        shipped=psi_shipped_checkpoint(task.name),
        payload=f"{UNET_DIR}/",
        label="Ψ",
        train_command="train-psi",
    )
    # the weights are read (and checked) once, by the one safetensors reader, then loaded into
    # the architecture its config.json describes: what from_pretrained does, without a second read
    weights, _ = read_safetensors(checkpoint / UNET_DIR / UNET_WEIGHTS)
    try:
        unet_config = UNet2DModel.load_config(checkpoint / UNET_DIR)
    except (OSError, ValueError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ConfigError(
            "checkpoint", f"{checkpoint / UNET_DIR} is not a loadable diffusers UNet ({reason})"
        ) from None
    unet = build_network(lambda: UNet2DModel.from_config(unet_config), checkpoint / UNET_DIR)
    load_weights(unet, weights, checkpoint / UNET_DIR)
    if (checkpoint / SCHEDULER_DIR).is_dir():
        try:
            scheduler = DDPMScheduler.from_pretrained(checkpoint, subfolder=SCHEDULER_DIR)
        except (OSError, ValueError, TypeError, KeyError, NotImplementedError) as err:
            reason = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise ConfigError(
                "checkpoint",
                f"{checkpoint / SCHEDULER_DIR} is not a loadable "
                f"diffusers DDPMScheduler ({reason})",
            ) from None
    else:  # trained before the scheduler was saved beside the UNet: config.json names it
        scheduler = make_scheduler(config["schedule"], config.get("prediction_type"))
    return unet.eval(), scheduler, config


def sampling_settings(config: dict[str, Any]) -> dict[str, str | None]:
    """What sampling needs to know of a Ψ checkpoint's training: schedule, prediction type and
    conditioning (checkpoints from before the ``condition`` option are conditioned on φ only)."""
    return {
        "schedule": config["schedule"],
        "prediction": config.get("prediction_type"),
        "condition": config.get("condition", "phi"),
    }


def phi_of(
    config: dict[str, Any], checkpoint: str | Path | None, task: Task, device: str = "cpu"
) -> PhiPredictor:
    """The φ a Ψ checkpoint (None: the shipped one) was trained with, checked by SHA-256
    (relative paths are resolved against the Ψ checkpoint, so shipped pairs travel together)."""
    checkpoint = psi_shipped_checkpoint(task.name) if checkpoint is None else checkpoint
    phi_dir = Path(config["phi"]["checkpoint"])
    if not phi_dir.is_absolute():
        phi_dir = (Path(checkpoint) / phi_dir).resolve()
    weights = phi_dir / WEIGHTS_FILE
    if not weights.is_file() or weights_sha256(weights) != config["phi"]["sha256"]:
        raise ConfigError(
            "checkpoint",
            f"{checkpoint} was trained with the φ at {phi_dir}, "
            "which is missing or has changed since",
        )
    model, _ = load_phi(phi_dir, task)
    # one frame per φ call: with oneDNN on AVX-512/AMX a convolution's rounding depends on the
    # batch (≈ 1e-7), and Ψ's samples must not depend on how a movie is cut into chunks; φ's
    # cost is < 1 % of Ψ's either way
    return PhiPredictor(model, task, device=device, batch_size=1)


@dataclass
class PsiPipeline:
    """A loaded Ψ: UNet, scheduler, φ and the settings it was trained with.

    Attributes
    ----------
    unet : UNet2DModel
        EMA denoiser, on ``phi.device``.
    scheduler : DDPMScheduler
        The training scheduler (β's, prediction type); sampling derives its DDIM from it.
    phi : PhiPredictor
        The frozen φ of the checkpoint.
    task : Task
    config : dict
        The checkpoint's ``config.json``.
    """

    unet: UNet2DModel
    scheduler: DDPMScheduler
    phi: PhiPredictor
    task: Task
    config: dict[str, Any]

    @classmethod
    def from_pretrained(
        cls, checkpoint: str | Path | None = None, task: Task | None = None, device: str = "cpu"
    ) -> PsiPipeline:
        """Load a Ψ checkpoint directory onto ``device``.

        Parameters
        ----------
        checkpoint : path or None
            The directory; None: the shipped checkpoint of ``task``.
        task : Task, optional
            The frames' task; a checkpoint trained for another configuration is refused. None:
            the task recorded in the checkpoint.
        device : str
            torch device ("cpu", "cuda", ...).
        """
        if task is None:
            if checkpoint is None:
                raise ConfigError("checkpoint", "give a Ψ checkpoint directory or a task")
            task = task_from_dict(read_config(checkpoint)["task"])
        unet, scheduler, config = load_psi(checkpoint, task)
        phi = phi_of(config, checkpoint, task, device=device)
        # channels-last convolutions: ≈ 12 % faster on a CPU (measured), same numbers to rounding
        unet = unet.to(phi.device, memory_format=torch.channels_last)
        return cls(unet=unet, scheduler=scheduler, phi=phi, task=task, config=config)

    @property
    def recalibration(self):
        """The checkpoint's fitted
        :class:`~bayes_smlm.surrogates.psi.recalibration.SpreadRecalibration`, or None."""
        return recalibration_of(self.config)

    @property
    def settings(self) -> dict[str, str | None]:
        """Schedule, prediction type and conditioning of the checkpoint."""
        return sampling_settings(self.config)

    def conditioning(self, adu: np.ndarray) -> torch.Tensor:
        """Model-space conditioning (F, C, u·H, u·W) of ADU frames (F, H, W)."""
        return conditioning(self.phi, adu, self.task, str(self.settings["condition"]))

    def sample(
        self,
        adu: np.ndarray,
        samples: int,
        *,
        start: str = "guess",
        steps: int | None = DEFAULT_STEPS,
        solver: str = DEFAULT_SOLVER,
        eta: float = 0.0,
        seed: int = 0,
        batch_size: int = 64,
        precision: str = "auto",
        progress: bool = False,
        first_frame: int = 0,
    ) -> np.ndarray:
        """(F, K, u·H, u·W) KDE samples of ADU frames (F, H, W); options as in
        :func:`bayes_smlm.surrogates.psi.sampling.sample_kdes`, by default the ``ddpm`` method's
        sampler (8 DPM-Solver++ steps)."""
        return sample_kdes(
            self.unet,
            self.scheduler,
            self.conditioning(adu),
            samples=samples,
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
