"""bayes_smlm: exact and surrogate posteriors for single-molecule localization microscopy.

The calls a user needs, importable from here (loaded on first use, so that ``import bayes_smlm``
stays light and the command line can still configure JAX before JAX is imported):

- :func:`get_task` — a named, validated task (optics, camera, scene prior), with overrides;
- :func:`simulate` — seeded frames of a task: ADU, true positions and the true KDE;
- :func:`get_method` / :func:`list_methods` / :func:`register_method` — posterior methods;
- :func:`compare_methods` — every comparison metric of several posteriors against a reference;
- :func:`save_posterior` / :func:`load_posterior` — posteriors as ArviZ DataTrees on disk.

Conventions (docs/conventions.md §2): frames are (H, W) arrays indexed [row, col] = [y, x]; emitter
positions θ = (x, y) in low-resolution pixels with pixel centres at integers; the KDE lives on a
u-times upsampled grid and one isolated kernel peaks at 1.
"""

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "get_task": "bayes_smlm.forward.tasks",
    "simulate": "bayes_smlm.forward.simulate",
    "get_method": "bayes_smlm.methods",
    "list_methods": "bayes_smlm.methods",
    "register_method": "bayes_smlm.methods",
    "compare_methods": "bayes_smlm.compare",
    "save_posterior": "bayes_smlm.io.posteriors",
    "load_posterior": "bayes_smlm.io.posteriors",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(import_module(_EXPORTS[name]), name)
        globals()[name] = value  # the next lookup does not come here
        return value
    raise AttributeError(f"module 'bayes_smlm' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
