"""Load the NPE estimator and draw from it: ADU frames in, position draws out.

A checkpoint is a directory with ``model.safetensors`` (the best weights by validation loss) and
``config.json`` (architecture, task, training settings, the sbi version, metrics); loading rebuilds
the sbi estimator from the JSON and reads the weights from safetensors — nothing is unpickled.
"""

from __future__ import annotations

import itertools
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from bayes_smlm.errors import ConfigError
from bayes_smlm.forward.checks import check_int
from bayes_smlm.forward.config import Task
from bayes_smlm.surrogates.checkpoint import (
    architecture_from,
    build_network,
    load_weights,
    open_checkpoint,
    read_safetensors,
    shipped_checkpoint,
)
from bayes_smlm.surrogates.npe.features import frame_features
from bayes_smlm.surrogates.npe.network import build_estimator
from bayes_smlm.surrogates.settings import NpeArchitecture
from bayes_smlm.surrogates.training import WEIGHTS_FILE

CHECKPOINT_KIND = "npe-flow"


def require_one_emitter(task: Task) -> None:
    """NPE here models one emitter's position; refuse other tasks in one line."""
    if task.prior.n_emitters != 1:
        raise ConfigError(
            "task",
            f"npe models one emitter per frame (a task like 'isolated'); "
            f"{task.name!r} has {task.prior.n_emitters}",
        )


def load_npe(checkpoint: str | Path | None, task: Task) -> tuple[nn.Module, dict[str, Any]]:
    """The NPE estimator for ``task`` (the shipped one of its name when ``checkpoint`` is None)
    and its config."""
    require_one_emitter(task)
    checkpoint, config = open_checkpoint(
        checkpoint,
        task,
        kind=CHECKPOINT_KIND,
        shipped=shipped_checkpoint("npe", task.name),
        payload=WEIGHTS_FILE,
        label="NPE",
        train_command="train-npe",
    )
    architecture = architecture_from(NpeArchitecture, config.get("architecture"), checkpoint)
    estimator = build_network(lambda: build_estimator(architecture), checkpoint)
    load_weights(estimator, read_safetensors(checkpoint / WEIGHTS_FILE)[0], checkpoint)
    return estimator.eval(), config


def sample_offsets(
    estimator: Any, condition: np.ndarray, n_draws: int, generator_seed: int, batch_size: int = 256
) -> np.ndarray:
    """(F, S, 2) draws of the offset u for F condition vectors, S per frame, seeded by
    ``generator_seed``."""
    n_draws = check_int("draws", n_draws)
    torch.manual_seed(generator_seed)
    out = []
    with torch.inference_mode(), warnings.catch_warnings():
        # nflows' LU layer calls a deprecated torch solver; harmless, and not the user's to fix
        warnings.filterwarnings("ignore", message=".*triangular_solve is deprecated")
        for i in range(0, len(condition), batch_size):
            draws = estimator.sample(
                (n_draws,), condition=torch.from_numpy(condition[i : i + batch_size])
            )  # (S, B, 2)
            out.append(draws.permute(1, 0, 2).numpy())
    return np.concatenate(out).astype(np.float32)


def npe_position_draws(
    estimator: Any, config: dict[str, Any], task: Task, adu: np.ndarray, n_draws: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(F, S, 2) position draws (LR px) for validated frames, restricted to the prior disc, and
    the flow's mass inside the disc per frame (fraction of the first round's draws)."""
    from bayes_smlm.methods.truncation import draws_in_disc

    architecture = NpeArchitecture.from_dict(config["architecture"])
    condition, anchors = frame_features(task, adu, architecture.crop)
    rounds = itertools.count()  # each redraw round gets its own torch seed

    def draw(frames: np.ndarray, size: int) -> np.ndarray:  # (F', S, 1, 2)
        offsets = sample_offsets(estimator, condition[frames], size, seed * 1000 + next(rounds))
        return (anchors[frames, None] + architecture.offset_scale * offsets)[:, :, None]

    points, inside = draws_in_disc(draw, len(adu), n_draws, task)
    return points[:, :, 0], inside
