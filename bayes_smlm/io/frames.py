"""Reading a frames file (``bayes-smlm simulate``'s ``.npz``): its task, its frames checked by the
one frame gate, and its true positions, if any, checked against both."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from bayes_smlm.errors import ConfigError
from bayes_smlm.forward.config import Task, task_from_json
from bayes_smlm.forward.count_prior import count_is_drawn, count_maximum
from bayes_smlm.forward.frames import validate_frames
from bayes_smlm.io.atomic import read_npz


def read_frames(path: str | Path) -> tuple[Task, np.ndarray, np.ndarray | None]:
    """(task, adu (F, H, W) float32, theta (F, N, 2) or None) of a frames file, or a one-line
    ConfigError naming the file and what is wrong with it."""
    data = read_npz(path, required=("adu", "config"))
    try:
        task = task_from_json(str(data["config"]))
    except (json.JSONDecodeError, TypeError, KeyError) as err:
        raise ConfigError("file", f"{path}: its 'config' is not a task's JSON ({err})") from None
    adu = validate_frames(task, data["adu"], argument="file")
    theta = data.get("theta")
    if theta is not None:
        theta = np.asarray(theta)
        expected = (len(adu), count_maximum(task.prior), 2)
        if theta.dtype.kind not in "iuf" or theta.shape != expected:
            raise ConfigError(
                "file",
                f"{path}: 'theta' must be real (F, N, 2) = {expected} "
                f"for its frames and task (got {theta.shape}, "
                f"{theta.dtype})",
            )
        # a task that draws its count marks the absent emitters by rows of NaN
        absent = np.isnan(theta).all(axis=-1) if count_is_drawn(task.prior) else False
        if not np.isfinite(theta[~absent]).all():
            raise ConfigError("file", f"{path}: 'theta' holds non-finite positions")
    return task, adu, theta
