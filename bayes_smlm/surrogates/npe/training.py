"""Training the NPE estimator: maximum likelihood of the offset u = (θ − anchor)/s under the flow,
on a fixed set of simulated frames (the usual NPE budget of simulations), validated on frames it
never saw."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, replace
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bayes_smlm.errors import ConfigError
from bayes_smlm.forward.config import Task
from bayes_smlm.forward.simulate import simulate
from bayes_smlm.io.atomic import check_output_dir, write_json
from bayes_smlm.surrogates.checkpoint import CONFIG_FILE, architecture_from, kept_sections
from bayes_smlm.surrogates.npe.estimator import CHECKPOINT_KIND, require_one_emitter
from bayes_smlm.surrogates.npe.features import frame_features
from bayes_smlm.surrogates.npe.network import build_estimator
from bayes_smlm.surrogates.settings import NpeArchitecture, NpeTraining
from bayes_smlm.surrogates.training import LoopState, resumed_settings, step_generator, train

SIMULATION_CHUNK = 20_000  # frames simulated per call while building the training set


def offset_scale_of(task: Task) -> float:
    """s, LR px: the mean over x and y of the position √CRLB of an emitter at the disc centre
    (the posterior SD of a typical frame, by the Bernstein–von Mises theorem)."""
    from bayes_smlm.forward.fisher import position_crlb_sd

    return float(np.mean(position_crlb_sd(task, np.asarray([[task.centre]], np.float32))))


def simulated_pairs(
    task: Task, n_frames: int, seed: int, first_frame: int, architecture: NpeArchitecture
) -> tuple[torch.Tensor, torch.Tensor]:
    """(condition vectors (F, K² + 4), offsets u = (θ − anchor)/s (F, 2)) of frames
    ``first_frame …`` of ``seed``."""
    features, offsets = [], []
    for start in range(0, n_frames, SIMULATION_CHUNK):
        frames = simulate(
            task, min(SIMULATION_CHUNK, n_frames - start), seed, first_frame=first_frame + start
        )
        condition, anchors = frame_features(task, frames.adu, architecture.crop)
        features.append(condition)
        offsets.append((frames.theta[:, 0] - anchors) / architecture.offset_scale)
    return (
        torch.from_numpy(np.concatenate(features)),
        torch.from_numpy(np.concatenate(offsets).astype(np.float32)),
    )


def train_npe(
    task: Task,
    out_dir: str | Path,
    settings: NpeTraining,
    *,
    architecture: NpeArchitecture | None = None,
    resume: bool = False,
    progress: bool = True,
    command: str = "",
) -> LoopState:
    """Train the NPE flow for ``task`` (one emitter per frame); write the checkpoint to
    ``out_dir``.

    The training set is frames ``0 … simulations−1`` of ``settings.seed``; step k trains on
    ``batch_size`` of them drawn by a generator seeded with (seed, k), so a resumed run sees what
    an uninterrupted one would. The validation loss is the mean negative log density of u
    (nats) over the ``validation_frames`` frames that follow; that of θ is larger by 2 log s.
    """
    require_one_emitter(task)
    out_dir = check_output_dir(out_dir)
    if resume:
        stored, settings = resumed_settings(out_dir, task, CHECKPOINT_KIND, settings)
        architecture = architecture_from(NpeArchitecture, stored.get("architecture"), out_dir)
    architecture = architecture or NpeArchitecture()
    if not architecture.offset_scale:
        architecture = replace(architecture, offset_scale=offset_scale_of(task))
    if settings.batch_size > settings.simulations:
        raise ConfigError(
            "batch_size",
            f"must be <= simulations = {settings.simulations} (got {settings.batch_size})",
        )
    torch.manual_seed(settings.seed)
    estimator: Any = build_estimator(architecture)  # an sbi flow (torch types its parts as Tensors)
    train_x, train_u = simulated_pairs(task, settings.simulations, settings.seed, 0, architecture)
    val_x, val_u = simulated_pairs(
        task, settings.validation_frames, settings.seed, settings.simulations, architecture
    )

    def batches(start: int) -> Iterator[torch.Tensor]:
        step = start
        while True:
            yield torch.randint(
                0,
                settings.simulations,
                (settings.batch_size,),
                generator=step_generator(settings.seed, step),
            )
            step += 1

    def step_loss(rows: torch.Tensor, step: int) -> torch.Tensor:
        return estimator.loss(train_u[rows], condition=train_x[rows]).mean()

    def validate() -> float:
        return float(
            sum(
                estimator.loss(val_u[i : i + 4096], condition=val_x[i : i + 4096]).sum()
                for i in range(0, len(val_x), 4096)
            )
            / len(val_x)
        )

    def write_config(loop: LoopState) -> None:
        write_json(
            out_dir / CONFIG_FILE,
            {
                "kind": CHECKPOINT_KIND,
                "architecture": architecture.to_dict(),
                "task": task.to_dict(),
                "training": asdict(settings),
                "command": command,
                "sbi_version": version("sbi"),
                "progress": loop.progress_record("val_nll"),
                **kept_sections(out_dir, CHECKPOINT_KIND),
            },
        )

    outcome = train(
        estimator,
        batches=batches,
        step_loss=step_loss,
        validate=validate,
        settings=settings.loop_settings(),
        out_dir=out_dir,
        resume=resume,
        on_checkpoint=write_config,
        progress=progress,
        description=f"train-npe {task.name}",
    )
    return outcome.state
