"""Training φ: MSE to the true KDE on frames simulated on the fly (paper §3.1, L_φ = MSE), then
each detector's threshold tuned on the validation frames and stored in the checkpoint."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from bayes_smlm.forward.checks import check_int
from bayes_smlm.forward.config import Task
from bayes_smlm.forward.simulate import simulate, stream
from bayes_smlm.io.atomic import check_output_dir, write_json
from bayes_smlm.surrogates.batch_memory import check_batch_memory
from bayes_smlm.surrogates.checkpoint import CONFIG_FILE, architecture_from, kept_sections
from bayes_smlm.surrogates.phi.estimator import (
    CHECKPOINT_KIND,
    PhiPredictor,
    architecture_for,
    frames_to_photons,
    load_phi,
)
from bayes_smlm.surrogates.phi.evaluation import tune_detection
from bayes_smlm.surrogates.phi.network import DeepSTORM, DeepSTORMConfig
from bayes_smlm.surrogates.settings import PhiTraining
from bayes_smlm.surrogates.training import LoopState, resumed_settings, train


def _batches(task: Task, settings: PhiTraining):
    def make(start: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for batch in stream(task, settings.batch_size, settings.seed, start_batch=start):
            yield frames_to_photons(batch.adu, task), torch.from_numpy(batch.kde)[:, None]

    return make


def train_phi(
    task: Task,
    out_dir: str | Path,
    settings: PhiTraining,
    *,
    resume: bool = False,
    widths: dict[str, Any] | None = None,
    progress: bool = True,
    command: str = "",
) -> LoopState:
    """Train φ on batches simulated on the fly; write the checkpoint to ``out_dir``.

    Batch k is frames of ``stream(task, batch_size, seed, start_batch=k)``; the validation set is
    ``simulate(task, validation_frames, seed)`` (fixed). The loss is the MSE to the true KDE.
    """
    check_int("batch_size", settings.batch_size)
    out_dir = check_output_dir(out_dir)
    if resume:
        stored, settings = resumed_settings(out_dir, task, CHECKPOINT_KIND, settings)
        arch = architecture_from(DeepSTORMConfig, stored.get("architecture"), out_dir)
    else:
        arch = architecture_for(task, **(widths or {}))
    torch.manual_seed(settings.seed)
    model = DeepSTORM(arch)
    val = simulate(task, settings.validation_frames, settings.seed)
    val_x, val_y = frames_to_photons(val.adu, task), torch.from_numpy(val.kde)[:, None]
    check_batch_memory(model, val_x, settings.batch_size)
    loss_fn = nn.MSELoss()

    def step_loss(batch: tuple[torch.Tensor, torch.Tensor], step: int) -> torch.Tensor:
        x, y = batch
        return loss_fn(model(x), y)

    def validate() -> float:
        return float(
            sum(
                loss_fn(model(val_x[i : i + 128]), val_y[i : i + 128]) * len(val_x[i : i + 128])
                for i in range(0, len(val_x), 128)
            )
            / len(val_x)
        )

    def write_config(loop: LoopState) -> None:
        write_json(
            out_dir / CONFIG_FILE,
            {
                "kind": CHECKPOINT_KIND,
                "architecture": arch.to_dict(),
                "task": task.to_dict(),
                "training": asdict(settings),
                "command": command,
                "progress": loop.progress_record("val_mse"),
                **kept_sections(out_dir, CHECKPOINT_KIND),
            },
        )

    outcome = train(
        model,
        batches=_batches(task, settings),
        step_loss=step_loss,
        validate=validate,
        settings=settings.loop_settings(),
        out_dir=out_dir,
        resume=resume,
        on_checkpoint=write_config,
        progress=progress,
        description=f"train-phi {task.name}",
    )
    tune_checkpoint_detection(out_dir, task, val.adu, val.theta)
    return outcome.state


def tune_checkpoint_detection(
    out_dir: str | Path, task: Task, adu: np.ndarray, theta: np.ndarray
) -> dict[str, Any]:
    """Tune each detector's threshold on the validation frames with the best weights; store it.

    The default detector is local maxima (``peaks``): on the true KDE of the 10-emitter task it
    recovers more close pairs than LoG (docs/conventions.md §2).
    """
    model, config = load_phi(out_dir, task)
    tuned = tune_detection(PhiPredictor(model, task)(adu), theta, task)
    config["detection"] = {"default": "peaks", **tuned}
    write_json(Path(out_dir) / CONFIG_FILE, config)
    return config["detection"]
