"""Which exact posterior a study scores the others against, and which of its frames to trust."""

from __future__ import annotations

import numpy as np

from bayes_smlm.forward.config import Task
from bayes_smlm.methods.result import PosteriorResult


def reference_method(task: Task) -> str:
    """`grid` (exact) for one emitter, else `nuts` (exact up to Monte Carlo error)."""
    return "grid" if task.prior.n_emitters == 1 else "nuts"


def reference_flags(result: PosteriorResult) -> np.ndarray:
    """(F,) True where a reference's own diagnostics fail (R-hat > 1.01 or bulk ESS < 400, as in
    :mod:`bayes_smlm.methods.diagnostics`); `grid` and other methods without chains are never
    flagged."""
    if result.diagnostics is None or result.method == "grid":
        return np.zeros(result.n_frames, bool)
    return np.asarray(result.diagnostics.flagged, bool)
