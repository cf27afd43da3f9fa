"""Ψ: train and save the conditional DDPM of the KDE given φ's estimate (paper §3.2).

Training pairs (conditioning, y0) are simulated on the fly with φ frozen — the conditioning is ŷ =
φ(x), and the frame x too with ``condition="phi+frame"`` (:mod:`.conditioning`); t is uniform on
{0, …, T−1}; the loss is on the network's target (ε, v or y0; ``l1`` as in eq. 10, or ``l2``);
EMA weights (``diffusers.training_utils.EMAModel``) are validated, kept as the best weights and
exported with ``save_pretrained`` (safetensors) to ``<checkpoint>/unet``, the scheduler to
``<checkpoint>/scheduler``, beside our ``config.json`` (task, schedule, loss, the φ checkpoint it
was trained with and its SHA-256, settings, history); :mod:`.pipeline` loads them. Training uses
whole maps by default (crops are an option, but do not transfer: see
:class:`PsiTraining`); sampling always works on whole frames.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from diffusers import UNet2DModel
from diffusers.training_utils import EMAModel

from bayes_smlm.errors import ConfigError
from bayes_smlm.forward.config import Task
from bayes_smlm.forward.simulate import simulate, stream
from bayes_smlm.io.atomic import check_output_dir, give_usual_modes, write_json
from bayes_smlm.surrogates.checkpoint import CONFIG_FILE, kept_sections, read_safetensors
from bayes_smlm.surrogates.phi.estimator import PhiPredictor, load_phi, shipped_checkpoint
from bayes_smlm.surrogates.psi.conditioning import conditioning
from bayes_smlm.surrogates.psi.pipeline import (
    CHECKPOINT_KIND,
    SCHEDULER_DIR,
    UNET_DIR,
    weights_sha256,
)
from bayes_smlm.surrogates.psi.schedule import (
    make_scheduler,
    noise_loss,
    to_model_space,
    training_target,
)
from bayes_smlm.surrogates.psi.unet import build_unet
from bayes_smlm.surrogates.settings import UNET_PRESETS, PsiTraining, UNetConfig, condition_channels
from bayes_smlm.surrogates.training import (
    WEIGHTS_FILE,
    LoopState,
    resumed_settings,
    step_generator,
    train,
)


def _crop_corners(
    theta_hr: np.ndarray, hr_shape: tuple[int, int], crop: int, gen: torch.Generator
) -> np.ndarray:
    """(B, 2) top-left (row, col) of each crop: half near a random emitter, half uniform."""
    b = theta_hr.shape[0]
    u = torch.rand(b, 4, generator=gen).numpy()
    pick = (u[:, 0] * theta_hr.shape[1]).astype(int)
    centre_rc = theta_hr[np.arange(b), pick][:, ::-1] + (u[:, 1:3] - 0.5) * crop
    near = centre_rc - crop / 2.0
    anywhere = u[:, 1:3] * (np.asarray(hr_shape) - crop)
    corner = np.where(u[:, 3:4] < 0.5, near, anywhere)
    return np.clip(np.round(corner), 0, np.asarray(hr_shape) - crop).astype(int)


class PairSource:
    """Batches of (conditioning, y0) in model space on φ's device, with φ frozen; batch k is a
    function of (seed, k)."""

    def __init__(self, task: Task, phi: PhiPredictor, settings: PsiTraining):
        self.task, self.phi, self.settings = task, phi, settings

    def pairs(self, adu: np.ndarray, kde: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Model-space conditioning (B, C, u·H, u·W) and y0 (B, 1, u·H, u·W)."""
        cond = conditioning(self.phi, adu, self.task, self.settings.condition)
        y0 = to_model_space(torch.from_numpy(np.array(kde))[:, None]).to(cond.device)
        return cond, y0

    def batches(self, start: int) -> Iterator[tuple[torch.Tensor, torch.Tensor, np.ndarray]]:
        s = self.settings
        for batch in stream(self.task, s.batch_size, s.seed, start_batch=start):
            cond, y0 = self.pairs(batch.adu, batch.kde)
            yield cond, y0, batch.theta


def _crop(tensors: list[torch.Tensor], corners: np.ndarray, crop: int) -> list[torch.Tensor]:
    return [
        torch.stack([t[i, :, r : r + crop, c : c + crop] for i, (r, c) in enumerate(corners)])
        for t in tensors
    ]


def diffusion_loss(
    unet: UNet2DModel,
    scheduler,
    cond: torch.Tensor,
    y0: torch.Tensor,
    gen: torch.Generator,
    loss: str,
) -> torch.Tensor:
    """Noise y0 at uniform random t and score the network's noise (ε or v) prediction."""
    b = y0.shape[0]
    t = torch.randint(0, scheduler.config.num_train_timesteps, (b,), generator=gen).to(y0.device)
    noise = torch.randn(y0.shape, generator=gen).to(y0.device)  # CPU generator: same on any device
    noisy = scheduler.add_noise(y0, noise, t)
    predicted = unet(torch.cat([noisy, cond], dim=1), t).sample
    return noise_loss(predicted, training_target(scheduler, y0, noise, t), loss)


def _ema_state(unet: UNet2DModel, ema: EMAModel) -> dict[str, torch.Tensor]:
    state = {
        name: shadow.detach().clone()
        for (name, _), shadow in zip(unet.named_parameters(), ema.shadow_params)
    }
    state.update({name: buf.detach().clone() for name, buf in unet.named_buffers()})
    return state


def save_component(component, out_dir: Path, name: str) -> None:
    """``component.save_pretrained`` into ``<out_dir>/<name>`` (a diffusers model or scheduler),
    replacing the previous copy only once the new one is complete."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=out_dir))
    if isinstance(component, UNet2DModel):
        component.save_pretrained(tmp, safe_serialization=True)
    else:
        component.save_pretrained(tmp)
    give_usual_modes(tmp)  # mkdtemp makes the folder private
    final, old = out_dir / name, out_dir / f".{name}.old"
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)


def export_unet(
    weights: dict[str, torch.Tensor], config: UNetConfig, out_dir: Path, cond_channels: int = 1
) -> None:
    """Write ``weights`` as ``<out_dir>/unet`` with ``save_pretrained`` (safetensors)."""
    unet = build_unet(config, cond_channels)
    unet.load_state_dict(weights)
    save_component(unet, out_dir, UNET_DIR)


def _check_sizes(task: Task, settings: PsiTraining, config: UNetConfig) -> None:
    """The UNet halves the resolution len(levels) − 1 times: sides must divide by 2^(levels−1)."""
    factor = 2 ** (len(config.block_out_channels) - 1)
    if any(side % factor for side in task.hr_shape):
        raise ConfigError(
            "preset",
            f"{settings.preset!r} needs KDE sides divisible by {factor} "
            f"(task {task.name!r} has {task.hr_shape})",
        )
    if settings.crop and (settings.crop % factor or settings.crop > min(task.hr_shape)):
        raise ConfigError(
            "crop",
            f"must be 0 or a multiple of {factor} up to {min(task.hr_shape)} (got {settings.crop})",
        )


def train_psi(
    task: Task,
    out_dir: str | Path,
    settings: PsiTraining,
    *,
    phi_checkpoint: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    command: str = "",
) -> LoopState:
    """Train Ψ for ``task`` (φ: ``phi_checkpoint`` or the shipped one) into ``out_dir``."""

    out_dir = check_output_dir(out_dir)
    if resume:
        stored, settings = resumed_settings(
            out_dir, task, CHECKPOINT_KIND, settings, keep=("steps", "device", "max_minutes")
        )
        phi_checkpoint = out_dir / stored["phi"]["checkpoint"]  # absolute paths stay absolute
    unet_config = UNET_PRESETS[settings.preset]
    _check_sizes(task, settings, unet_config)
    try:
        phi_model, _ = load_phi(phi_checkpoint, task)  # None: the shipped φ
    except ConfigError as err:  # the same message, under this function's argument name
        raise ConfigError("phi_checkpoint", err.message) from None
    phi_dir = Path(phi_checkpoint) if phi_checkpoint else shipped_checkpoint(task.name)
    phi = PhiPredictor(phi_model, task, device=settings.device)
    torch.manual_seed(settings.seed)
    cond_channels = condition_channels(settings.condition)
    unet = build_unet(unet_config, cond_channels).to(phi.device)
    ema = EMAModel(unet.parameters(), decay=settings.ema_decay)
    scheduler = make_scheduler(settings.schedule, settings.prediction)
    source = PairSource(task, phi, settings)
    val = simulate(task, settings.validation_frames, settings.seed)
    val_cond, val_y0 = source.pairs(val.adu, val.kde)
    u = task.optics.upsampling

    def step_loss(batch, step: int) -> torch.Tensor:
        cond, y0, theta = batch
        gen = step_generator(settings.seed, step)
        if settings.crop:
            corners = _crop_corners(u * (theta + 0.5) - 0.5, task.hr_shape, settings.crop, gen)
            cond, y0 = _crop([cond, y0], corners, settings.crop)
        return diffusion_loss(unet, scheduler, cond, y0, gen, settings.loss)

    def validate() -> float:
        ema.store(unet.parameters())
        ema.copy_to(unet.parameters())
        gen = step_generator(settings.seed, -1)  # the same noise and t at every validation
        total = sum(
            float(
                diffusion_loss(
                    unet, scheduler, val_cond[i : i + 16], val_y0[i : i + 16], gen, settings.loss
                )
            )
            * len(val_y0[i : i + 16])
            for i in range(0, len(val_y0), 16)
        )
        ema.restore(unet.parameters())
        return total / len(val_y0)

    # relative to the Ψ checkpoint (as phi_of resolves it): no path of this machine is recorded,
    # and a Ψ copied together with its φ keeps working
    out_dir.mkdir(parents=True, exist_ok=True)
    save_component(scheduler, out_dir, SCHEDULER_DIR)
    phi_record = {
        "checkpoint": os.path.relpath(phi_dir.resolve(), out_dir.resolve()),
        "sha256": weights_sha256(phi_dir / WEIGHTS_FILE),
    }
    exported: dict[str, int | None] = {"best_step": None}

    def write_config(loop: LoopState) -> None:
        write_json(
            out_dir / CONFIG_FILE,
            {
                "kind": CHECKPOINT_KIND,
                "unet": unet_config.to_dict(),
                "task": task.to_dict(),
                "schedule": settings.schedule,
                "loss": settings.loss,
                "training": asdict(settings),
                "prediction_type": scheduler.config.prediction_type,
                "condition": settings.condition,
                "phi": phi_record,
                "command": command,
                "progress": loop.progress_record("val_loss"),
                **kept_sections(out_dir, CHECKPOINT_KIND),
            },
        )
        best_file = out_dir / WEIGHTS_FILE
        if best_file.is_file() and exported["best_step"] != loop.best_step:
            export_unet(read_safetensors(best_file, "out")[0], unet_config, out_dir, cond_channels)
            exported["best_step"] = loop.best_step  # re-export only when the best weights change

    outcome = train(
        unet,
        batches=source.batches,
        step_loss=step_loss,
        validate=validate,
        settings=settings.loop_settings(),
        out_dir=out_dir,
        resume=resume,
        extra_state={"ema": ema},
        after_step=lambda step: ema.step(unet.parameters()),
        best_weights_of=lambda: _ema_state(unet, ema),
        on_checkpoint=write_config,
        progress=progress,
        description=f"train-psi {task.name}",
    )
    return outcome.state
