"""Which exact posterior a study scores the others against, which of its frames to trust, and a
disk cache of it, so re-running a study after a change elsewhere (a new Ψ) does not redo minutes of
exact sampling.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from bayes_smlm.forward.config import Task
from bayes_smlm.io.posteriors import load_posterior, result_from_datatree, save_posterior
from bayes_smlm.methods.registry import get_method
from bayes_smlm.methods.result import PosteriorResult


def reference_method(task: Task) -> str:
    """`grid` (exact) for one emitter, else `smc` (exact up to Monte Carlo error, and — started
    from the prior rather than from detections — not stuck on close pairs, where NUTS chains
    can be)."""
    return "grid" if task.prior.n_emitters == 1 else "smc"


CACHE_ENV = "BAYES_SMLM_CACHE"  # a folder, or "off"; default $XDG_CACHE_HOME/bayes_smlm
_CODE = ("forward", "methods")  # the subpackages whose source decides an exact posterior
_ENGINES = ("jax", "jaxlib", "numpyro", "blackjax", "numpy", "scipy")


def cache_dir() -> Path | None:
    """Where exact reference posteriors are cached (None when ``BAYES_SMLM_CACHE=off``)."""
    setting = os.environ.get(CACHE_ENV, "")
    if setting.lower() == "off":
        return None
    if setting:
        return Path(setting)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "bayes_smlm"


def _code_digest() -> str:
    """SHA-256 of the forward model's and the methods' source and of the numerical engines'
    versions: any change to them invalidates every cached posterior."""
    digest = hashlib.sha256()
    root = Path(__file__).resolve().parents[1]
    for package in _CODE:
        for path in sorted((root / package).glob("*.py")):
            digest.update(path.name.encode() + path.read_bytes())
    for name in _ENGINES:
        digest.update(f"{name}={importlib.metadata.version(name)}".encode())
    return digest.hexdigest()


def cached_reference(
    task: Task,
    adu: np.ndarray,
    frames: tuple[int, int],
    *,
    theta_true: np.ndarray | None = None,
    method: str | None = None,
    **options: Any,
) -> PosteriorResult:
    """The reference posterior (``method``, default :func:`reference_method`) of ``adu``, from
    the cache when it holds it.

    Parameters
    ----------
    task : Task
    adu : (F, H, W) ndarray
        The frames: ``simulate(task, F, frames_seed).adu``.
    frames : (frames_seed, F)
        What identifies the frames in the cache key, with the task, the method's options and
        :func:`_code_digest`. A cached entry is used only if its frames equal ``adu`` exactly.
    theta_true, options
        As for the method (``seed``, ``chains``, ``draws``, …).
    """
    method = method or reference_method(task)
    folder = cache_dir()
    run = get_method(method)
    if folder is None:
        return run(task, adu, theta_true=theta_true, **options)
    key = json.dumps(
        {
            "task": task.to_dict(),
            "frames": list(frames),
            "method": method,
            "options": options,
            "code": _code_digest(),
        },
        sort_keys=True,
        default=str,
    )
    path = folder / f"{method}-{hashlib.sha256(key.encode()).hexdigest()[:24]}.nc"
    if path.is_file():
        try:
            cached = result_from_datatree(load_posterior(path))
            if np.array_equal(cached.adu, np.asarray(adu, cached.adu.dtype)):
                return cached
        except Exception as err:  # a cache is disposable: a damaged entry is computed again
            reason = getattr(err, "message", None) or type(err).__name__
            warnings.warn(
                f"the cached {method} reference {path.name} is damaged ({reason}); "
                "computing it again",
                stacklevel=2,
            )
    result = run(task, adu, theta_true=theta_true, **options)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        save_posterior(result, path)
    except OSError as err:  # an unwritable cache costs the next run time, never this result
        print(
            f"note: could not cache the {method} reference in {folder} ({err.strerror})",
            file=sys.stderr,
        )
    return result
