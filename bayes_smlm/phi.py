"""φ: train, save, load and run the DeepSTORM estimator of the KDE (paper §3.1, L_φ = MSE).

A checkpoint is a directory with ``model.safetensors`` (the best weights by validation loss) and
``config.json`` (architecture, task, training settings, metrics, detection settings). Loading
checks that the checkpoint was trained for the task at hand and never unpickles anything.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from safetensors.torch import load_file
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from .checkpoint import (CONFIG_FILE, check_task, kept_sections, open_checkpoint,
                         read_checkpoint_config)
from .config import Task, check_choice, check_int, task_from_dict
from .errors import ConfigError
from .io import write_json
from .nets import DeepSTORM, DeepSTORMConfig
from .training import WEIGHTS_FILE, LoopSettings, LoopState, train

CHECKPOINT_KIND = "deepstorm-phi"
SHIPPED_DIR = Path(__file__).parent / "checkpoints"
PRECISIONS = ("fp32", "bf16")


def shipped_checkpoint(task_name: str) -> Path:
    """Directory of the shipped φ checkpoint for a named task (may not exist)."""
    return SHIPPED_DIR / f"phi-{task_name}"


def architecture_for(task: Task, **widths: Any) -> DeepSTORMConfig:
    """DeepSTORM config for ``task``: the input normalisation is fixed by the task's physics.

    The frame is shifted by the mean background plus the readout pedestal w²/g² and divided by the
    expected photons in the brightest pixel of a pixel-centred emitter, i0·ΔE(0; 0, σx)².
    """
    from scipy.special import erf

    sx = task.optics.sigma_psf
    peak = float(erf(0.5 / (np.sqrt(2.0) * sx))) ** 2
    camera = task.camera
    pedestal = float(np.mean(np.asarray(camera.readout_var) / np.asarray(camera.gain) ** 2))
    return DeepSTORMConfig(
        upsampling=task.optics.upsampling,
        input_shift=float(np.mean(task.prior.background)) + pedestal,
        input_scale=float(task.prior.i0) * peak,
        output_max=float(task.prior.n_emitters) + 1.0,
        **widths,
    )


def frames_to_photons(adu: np.ndarray, task: Task) -> torch.Tensor:
    """(F, H, W) ADU → (F, 1, H, W) offset-subtracted, gain-corrected float32 tensor."""
    from .physics import adu_to_photons, camera_arrays

    adu = np.asarray(adu, dtype=np.float32)
    if adu.ndim != 3 or adu.shape[1:] != task.shape:
        raise ConfigError("FILE", f"frames must have shape (F, {task.shape[0]}, {task.shape[1]}) "
                                  f"for task {task.name!r} (got {adu.shape})")
    photons = np.asarray(adu_to_photons(adu, camera_arrays(task)), dtype=np.float32)
    return torch.from_numpy(np.array(photons, dtype=np.float32))[:, None]


# -- training -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PhiTraining:
    """Settings of a φ training run (recorded in the checkpoint)."""

    steps: int = 3000
    batch_size: int = 32
    lr: float = 2e-3
    seed: int = 0
    validation_frames: int = 256
    validate_every: int = 100
    checkpoint_every: int = 100
    patience: int = 0

    def loop_settings(self) -> LoopSettings:
        return LoopSettings(steps=self.steps, lr=self.lr, validate_every=self.validate_every,
                            checkpoint_every=self.checkpoint_every, patience=self.patience)


def _batches(task: Task, settings: PhiTraining):
    from .simulate import stream

    def make(start: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for batch in stream(task, settings.batch_size, settings.seed, start_batch=start):
            yield frames_to_photons(batch.adu, task), torch.from_numpy(batch.kde)[:, None]
    return make


def train_phi(task: Task, out_dir: str | Path, settings: PhiTraining, *, resume: bool = False,
              widths: dict[str, Any] | None = None, progress: bool = True,
              command: str = "") -> LoopState:
    """Train φ on batches simulated on the fly; write the checkpoint to ``out_dir``.

    Batch k is frames of ``stream(task, batch_size, seed, start_batch=k)``; the validation set is
    ``simulate(task, validation_frames, seed)`` (fixed). The loss is the MSE to the true KDE.
    """
    from .simulate import simulate

    check_int("--batch-size", settings.batch_size)
    out_dir = Path(out_dir)
    if resume:
        stored = read_config(out_dir)
        check_task(stored, task, out_dir)
        arch = DeepSTORMConfig.from_dict(stored["architecture"])
        settings = PhiTraining(**{**stored["training"], "steps": settings.steps})
    else:
        arch = architecture_for(task, **(widths or {}))
    torch.manual_seed(settings.seed)
    model = DeepSTORM(arch)
    val = simulate(task, settings.validation_frames, settings.seed)
    val_x, val_y = frames_to_photons(val.adu, task), torch.from_numpy(val.kde)[:, None]
    loss_fn = nn.MSELoss()

    def step_loss(batch: tuple[torch.Tensor, torch.Tensor], step: int) -> torch.Tensor:
        x, y = batch
        return loss_fn(model(x), y)

    def validate() -> float:
        return float(sum(loss_fn(model(val_x[i:i + 128]), val_y[i:i + 128]) * len(val_x[i:i + 128])
                         for i in range(0, len(val_x), 128)) / len(val_x))

    def write_config(loop: LoopState) -> None:
        write_json(out_dir / CONFIG_FILE, {
            "kind": CHECKPOINT_KIND, "architecture": arch.to_dict(), "task": task.to_dict(),
            "training": asdict(settings), "command": command,
            "progress": loop.progress_record("val_mse"),
            **kept_sections(out_dir, CHECKPOINT_KIND),
        })

    outcome = train(model, batches=_batches(task, settings), step_loss=step_loss,
                    validate=validate, settings=settings.loop_settings(), out_dir=out_dir,
                    resume=resume, on_checkpoint=write_config, progress=progress,
                    description=f"train-phi {task.name}")
    tune_checkpoint_detection(out_dir, task, val.adu, val.theta)
    return outcome.state


def tune_checkpoint_detection(out_dir: str | Path, task: Task, adu: np.ndarray,
                              theta: np.ndarray) -> dict[str, Any]:
    """Tune each detector's threshold on the validation frames with the best weights; store it.

    The default detector is local maxima (``peaks``): on the true KDE of the 10-emitter task it
    recovers more close pairs than LoG (DESIGN.md section 2).
    """
    from .phi_eval import tune_detection

    model, config = load_phi(out_dir, task)
    tuned = tune_detection(PhiPredictor(model, task)(adu), theta, task)
    config["detection"] = {"default": "peaks", **tuned}
    write_json(Path(out_dir) / CONFIG_FILE, config)
    return config["detection"]


# -- checkpoints ----------------------------------------------------------------------------------

def read_config(checkpoint: str | Path) -> dict[str, Any]:
    """The JSON config of a φ checkpoint directory."""
    return read_checkpoint_config(checkpoint, CHECKPOINT_KIND)


def load_phi(checkpoint: str | Path | None, task: Task) -> tuple[DeepSTORM, dict[str, Any]]:
    """Load φ for ``task`` (the shipped checkpoint of its name when ``checkpoint`` is None).

    Raises
    ------
    ConfigError
        If there is no such checkpoint or it was trained for a different task configuration.
    """
    checkpoint, config = open_checkpoint(checkpoint, task, kind=CHECKPOINT_KIND,
                                         shipped=shipped_checkpoint(task.name),
                                         payload=WEIGHTS_FILE, label="φ", train_command="train-phi")
    model = DeepSTORM(DeepSTORMConfig.from_dict(config["architecture"]))
    model.load_state_dict(load_file(str(checkpoint / WEIGHTS_FILE)))
    return model.eval(), config


def task_of_checkpoint(checkpoint: str | Path) -> Task:
    """The task a checkpoint was trained for."""
    return task_from_dict(read_config(checkpoint)["task"])


# -- inference ------------------------------------------------------------------------------------

def fuse_for_inference(model: DeepSTORM) -> nn.Module:
    """A copy of ``model`` with BatchNorm folded into the preceding convolutions, channels-last.

    Same outputs to float rounding (≈1e-7), ≈1.3× faster on CPU.
    """
    fused = copy.deepcopy(model).eval()
    for block in fused.modules():
        if (isinstance(block, nn.Sequential) and len(block) == 3
                and isinstance(block[0], nn.Conv2d) and isinstance(block[1], nn.BatchNorm2d)):
            block[0] = fuse_conv_bn_eval(block[0], block[1])
            block[1] = nn.Identity()
    return fused.to(memory_format=torch.channels_last)


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
    """

    def __init__(self, model: DeepSTORM, task: Task, *, batch_size: int = 256,
                 precision: str = "fp32", device: str | torch.device = "cpu"):
        check_choice("--precision", precision, PRECISIONS)
        self.device = torch.device(device)
        self.model = fuse_for_inference(model).to(self.device)
        self.task = task
        self.batch_size = check_int("--batch-size", batch_size)
        self.precision = precision

    def photons(self, photons: torch.Tensor) -> torch.Tensor:
        """KDE estimates (F, 1, u·H, u·W) from photon frames (F, 1, H, W), float32, on
        :attr:`device`."""
        outs = []
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=torch.bfloat16,
                                                    enabled=self.precision == "bf16"):
            for i in range(0, len(photons), self.batch_size):
                chunk = photons[i:i + self.batch_size].to(self.device).contiguous(
                    memory_format=torch.channels_last)
                outs.append(self.model(chunk).float())
        return torch.cat(outs).contiguous()

    def __call__(self, adu: np.ndarray) -> np.ndarray:
        """KDE estimates (F, u·H, u·W) from ADU frames (F, H, W)."""
        return self.photons(frames_to_photons(adu, self.task))[:, 0].cpu().numpy()
