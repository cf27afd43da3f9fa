"""Ψ as one object: its UNet, the φ it was trained with, and how to sample it (diffusers style).

``PsiPipeline.from_pretrained(checkpoint, task)`` loads a Ψ checkpoint directory (the shipped one
for the task when ``checkpoint`` is None) with its φ checked by SHA-256; ``pipeline.sample(adu, K)``
returns K KDE samples per frame. The ``ddpm`` method, the benchmarks and the studies all go
through it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import UNet2DModel

from .conditioning import conditioning
from .config import Task
from .phi import PhiPredictor
from .psi import load_psi, phi_of, sampling_settings
from .sampling import sample_kdes


@dataclass
class PsiPipeline:
    """A loaded Ψ: UNet, φ and the settings it was trained with.

    Attributes
    ----------
    unet : UNet2DModel
        EMA denoiser, on ``phi.device``.
    phi : PhiPredictor
        The frozen φ of the checkpoint.
    task : Task
    config : dict
        The checkpoint's ``config.json``.
    """

    unet: UNet2DModel
    phi: PhiPredictor
    task: Task
    config: dict[str, Any]

    @classmethod
    def from_pretrained(cls, checkpoint: str | Path | None, task: Task,
                        device: str = "cpu") -> "PsiPipeline":
        """Load a Ψ checkpoint (None: the shipped one for ``task``) onto ``device``."""
        unet, config = load_psi(checkpoint, task)
        phi = phi_of(config, checkpoint, task, device=device)
        # channels-last convolutions: ≈ 12 % faster on a CPU (measured), same numbers to rounding
        unet = unet.to(phi.device, memory_format=torch.channels_last)
        return cls(unet=unet, phi=phi, task=task, config=config)

    @property
    def recalibration(self):
        """The checkpoint's fitted :class:`~bayes_smlm.recalibration.SpreadRecalibration`, or
        None."""
        from .recalibration import recalibration_of
        return recalibration_of(self.config)

    @property
    def settings(self) -> dict[str, str]:
        """Schedule, prediction type and conditioning of the checkpoint."""
        return sampling_settings(self.config)

    def conditioning(self, adu: np.ndarray) -> torch.Tensor:
        """Model-space conditioning (F, C, u·H, u·W) of ADU frames (F, H, W)."""
        return conditioning(self.phi, adu, self.task, self.settings["condition"])

    def sample(self, adu: np.ndarray, samples: int, *, start: str = "guess",
               steps: int | None = 20, eta: float = 0.0, seed: int = 0, batch_size: int = 64,
               precision: str = "auto", progress: bool = False) -> np.ndarray:
        """(F, K, u·H, u·W) KDE samples of ADU frames (F, H, W); options as in
        :func:`bayes_smlm.sampling.sample_kdes`."""
        settings = self.settings
        return sample_kdes(self.unet, self.conditioning(adu), schedule=settings["schedule"],
                           prediction=settings["prediction"], samples=samples, start=start,
                           steps=steps, eta=eta, seed=seed, batch_size=batch_size,
                           precision=precision, progress=progress)
