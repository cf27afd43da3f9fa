"""φ: load and run the DeepSTORM estimator of the KDE (paper §3.1); training: :mod:`.training`.

A checkpoint is a directory with ``model.safetensors`` (the best weights by validation loss) and
``config.json`` (architecture, task, training settings, metrics, detection settings). Loading
checks that the checkpoint was trained for the task at hand and never unpickles anything.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from scipy.special import erf
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from bayes_smlm.forward.checks import check_choice, check_int
from bayes_smlm.forward.config import Task
from bayes_smlm.forward.frames import validate_frames
from bayes_smlm.forward.physics import adu_to_photons, camera_arrays
from bayes_smlm.surrogates.checkpoint import (
    architecture_from,
    build_network,
    load_weights,
    open_checkpoint,
    read_checkpoint_config,
    read_safetensors,
)
from bayes_smlm.surrogates.checkpoint import shipped_checkpoint as shipped_network_checkpoint
from bayes_smlm.surrogates.compiled import compile_for_inference
from bayes_smlm.surrogates.phi.network import DeepSTORM, DeepSTORMConfig, anscombe
from bayes_smlm.surrogates.settings import PRECISIONS
from bayes_smlm.surrogates.training import WEIGHTS_FILE

CHECKPOINT_KIND = "deepstorm-phi"


def shipped_checkpoint(task_name: str) -> Path:
    """Directory of the shipped φ checkpoint for a named task (may not exist)."""
    return shipped_network_checkpoint("phi", task_name)


def architecture_for(task: Task, **widths: Any) -> DeepSTORMConfig:
    """DeepSTORM config for ``task``: the input normalisation is fixed by the task's physics.

    The frame is shifted by the mean background plus the readout pedestal w²/g² and divided by the
    expected photons in the brightest pixel of a pixel-centred emitter, i0·ΔE(0; 0, σx)². Where
    the simulator draws brightness and background (``prior.brightness = "drawn"``) the frame is
    Anscombe-transformed first, shifted by the transformed mid-range background and divided by
    the transformed peak of a typical (``prior.i0``) emitter above it.
    """
    sx = task.optics.sigma_psf
    peak = float(erf(0.5 / (np.sqrt(2.0) * sx))) ** 2 * float(task.prior.i0)
    camera = task.camera
    pedestal = float(np.mean(np.asarray(camera.readout_var) / np.asarray(camera.gain) ** 2))
    level = float(np.mean(task.prior.background)) + pedestal
    transform = "linear"
    if task.prior.brightness == "drawn":
        transform = "anscombe"
        level = float(np.mean(task.prior.background_range)) + pedestal
        stabilised = anscombe(torch.tensor([level, level + peak], dtype=torch.float64))
        level, peak = float(stabilised[0]), float(stabilised[1] - stabilised[0])
    return DeepSTORMConfig(
        upsampling=task.optics.upsampling,
        input_shift=level,
        input_scale=peak,
        input_transform=transform,
        output_max=float(task.prior.n_emitters) + 1.0,
        **widths,
    )


def frames_to_photons(adu: np.ndarray, task: Task) -> torch.Tensor:
    """(F, H, W) ADU → (F, 1, H, W) offset-subtracted, gain-corrected float32 tensor."""
    adu = validate_frames(task, adu)
    photons = np.asarray(adu_to_photons(adu, camera_arrays(task)), dtype=np.float32)
    return torch.from_numpy(np.array(photons, dtype=np.float32))[:, None]


# -- checkpoints ----------------------------------------------------------------------------------


def read_config(checkpoint: str | Path, argument: str = "checkpoint") -> dict[str, Any]:
    """The JSON config of a φ checkpoint directory."""
    return read_checkpoint_config(checkpoint, CHECKPOINT_KIND, argument)


def load_phi(
    checkpoint: str | Path | None,
    task: Task,
    *,
    shipped_for: str | None = None,
    keys: tuple[str, ...] | None = None,
    argument: str = "checkpoint",
) -> tuple[DeepSTORM, dict[str, Any]]:
    """Load φ for ``task`` (the shipped checkpoint of task ``shipped_for``, default ``task``'s
    name, when ``checkpoint`` is None). ``keys``: compare only these task constants (see
    :func:`~bayes_smlm.surrogates.checkpoint.check_task`); ``argument`` names the option in
    errors.

    Raises
    ------
    ConfigError
        If there is no such checkpoint or it was trained for a different task configuration.
    """
    checkpoint, config = open_checkpoint(
        checkpoint,
        task,
        kind=CHECKPOINT_KIND,
        shipped=shipped_checkpoint(shipped_for or task.name),
        payload=WEIGHTS_FILE,
        label="φ",
        train_command="train-phi",
        keys=keys,
        argument=argument,
    )
    architecture = architecture_from(DeepSTORMConfig, config.get("architecture"), checkpoint)
    model = build_network(lambda: DeepSTORM(architecture), checkpoint)
    load_weights(model, read_safetensors(checkpoint / WEIGHTS_FILE)[0], checkpoint)
    return cast(DeepSTORM, model.eval()), config


# -- inference ------------------------------------------------------------------------------------


def fuse_for_inference(model: DeepSTORM) -> nn.Module:
    """A copy of ``model`` with BatchNorm folded into the preceding convolutions, channels-last.

    Same outputs to float rounding (≈1e-7), ≈1.3× faster on CPU.
    """
    fused = copy.deepcopy(model).eval()
    for block in fused.modules():
        if (
            isinstance(block, nn.Sequential)
            and len(block) == 3
            and isinstance(block[0], nn.Conv2d)
            and isinstance(block[1], nn.BatchNorm2d)
        ):
            block[0] = fuse_conv_bn_eval(block[0], block[1])
            block[1] = nn.Identity()
    return cast(Any, fused).to(memory_format=torch.channels_last)  # torch's stubs lack it


class PhiPredictor:
    """Batched inference of φ: ADU frames in, KDE estimates out.

    Parameters
    ----------
    model : DeepSTORM
    task : Task
    batch_size : int
        Frames per forward pass.
    precision : {"fp32", "bf16"}
        ``bf16`` runs under autocast (≈1.8× faster where the CPU has bf16 instructions).
    device : str
        torch device of the model and of the returned estimates ("cpu", "cuda", ...).
    compiled : bool
        Run :meth:`photons` through ``torch.compile`` (:mod:`bayes_smlm.surrogates.compiled`):
        weights and activations in the precision's dtype instead of autocast, every batch padded
        to ``batch_size``; in bf16 ≈ 1.4× the frames/s of autocast on an Intel CPU with AMX
        (``reports/bench-speed``), after a compilation of seconds on the first call. For movies,
        not for a handful of frames. Needs a C++ compiler on a CPU.
    """

    def __init__(
        self,
        model: DeepSTORM,
        task: Task,
        *,
        batch_size: int = 256,
        precision: str = "fp32",
        device: str | torch.device = "cpu",
        compiled: bool = False,
    ):
        check_choice("precision", precision, PRECISIONS)
        self.device = torch.device(device)
        self.model = fuse_for_inference(model).to(self.device)
        self.task = task
        self.batch_size = check_int("batch_size", batch_size)
        self.precision = precision
        self.compiled = (
            compile_for_inference(
                self.model, precision=precision, batch_size=self.batch_size, device=self.device
            )
            if compiled
            else None
        )

    def photons(self, photons: torch.Tensor) -> torch.Tensor:
        """KDE estimates (F, 1, u·H, u·W) from photon frames (F, 1, H, W), float32, on
        :attr:`device`."""
        if self.compiled is not None:
            return self.map_batches(photons, self.compiled, autocast=False)
        return self.map_batches(photons, self.model)

    def map_batches(
        self,
        photons: torch.Tensor,
        fn: Callable[[torch.Tensor], torch.Tensor],
        *,
        autocast: bool = True,
    ) -> torch.Tensor:
        """``fn`` (e.g. the fused model, or a Monte Carlo dropout summary built on it) applied to
        batches of photon frames (F, 1, H, W) under inference mode and, with ``autocast``, the
        chosen precision; outputs concatenated along the frame axis, float32, on
        :attr:`device`."""
        outs = []
        with (
            torch.inference_mode(),
            torch.autocast(
                self.device.type,
                dtype=torch.bfloat16,
                enabled=autocast and self.precision == "bf16",
            ),
        ):
            for i in range(0, len(photons), self.batch_size):
                chunk = (
                    photons[i : i + self.batch_size]
                    .to(self.device)
                    .contiguous(memory_format=torch.channels_last)
                )
                outs.append(fn(chunk).float())
        return torch.cat(outs).contiguous()

    def __call__(self, adu: np.ndarray) -> np.ndarray:
        """KDE estimates (F, u·H, u·W) from ADU frames (F, H, W)."""
        return self.photons(frames_to_photons(adu, self.task))[:, 0].cpu().numpy()
