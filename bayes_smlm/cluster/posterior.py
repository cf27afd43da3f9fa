"""``posterior`` in chunks of frames: on Dask workers or in this process, into a zarr store.

Each chunk is one call of the method on its frames with ``first_frame`` = the index of its first
frame, so a frame's random numbers depend on (seed, frame index) only and the store holds what
one call over all frames would have given. Finished chunks are written as they arrive; a worker
that is lost costs its unfinished chunk (Dask runs it again), and a stopped run resumes from the
chunks already in the store.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from bayes_smlm.cluster.chunks import run_chunks
from bayes_smlm.errors import ConfigError
from bayes_smlm.forward.config import Task
from bayes_smlm.io.atomic import OutputError, os_reason
from bayes_smlm.io.posterior_store import PosteriorStore, run_identity
from bayes_smlm.io.posteriors import to_datatree
from bayes_smlm.methods.result import PosteriorResult

DEFAULT_CHUNK_FRAMES = 64  # a chunk is the unit of work, of writing and of resuming


def run_chunk(
    method: str,
    task_json: str,
    adu: np.ndarray,
    theta_true: np.ndarray | None,
    options: dict[str, Any],
    first_frame: int,
) -> PosteriorResult:
    """One chunk of a run (the function each worker calls): the method on ``adu`` (frames
    ``first_frame …`` of the run), with its diagnostics computed there too."""
    from bayes_smlm.forward.config import task_from_json
    from bayes_smlm.methods import get_method

    result = get_method(method)(
        task_from_json(task_json), adu, theta_true=theta_true, first_frame=first_frame, **options
    )
    _ = result.diagnostics  # R-hat and ESS on the worker: arviz-stats' loop is a third of a run
    return result


def check_shardable(method: str) -> None:
    """A one-line error unless the method takes ``first_frame`` (seeds each frame by its index
    in the run, so that chunks reproduce one call)."""
    from bayes_smlm.methods.registry import method_spec

    if not method_spec(method).chunkable:
        raise ConfigError(
            "method",
            f"{method} seeds its frames as one batch (it takes no "
            "first_frame option), so chunks would not reproduce one run; "
            "run it without --scheduler into an .nc file",
        )


def posterior_in_chunks(
    method: str,
    task: Task,
    adu: np.ndarray,
    out: str | Path,
    *,
    options: dict[str, Any],
    chunk_frames: int,
    theta_true: np.ndarray | None = None,
    client: Any = None,
    progress: bool = False,
) -> tuple[Path, int]:
    """Run ``method`` over ``adu`` (F, H, W) in chunks of ``chunk_frames`` frames into the zarr
    store ``out``, on ``client``'s workers (a ``distributed.Client``) or in this process (None).

    Returns the store's path and the number of chunks computed by this call (the others were
    already in the store).
    """
    from tqdm.auto import tqdm

    check_shardable(method)
    task_json = task.to_json()
    store = PosteriorStore.open(out, run_identity(method, options, adu, task_json, chunk_frames))
    pending = [i for i, done in enumerate(store.verified_done()) if not done]

    def arguments(i: int) -> tuple[Any, ...]:
        first, stop = store.ranges[i]
        truth = None if theta_true is None else theta_true[first:stop]
        return method, task_json, adu[first:stop], truth, options, first

    with tqdm(
        total=len(pending), desc=f"{method} chunks", unit="chunk", disable=not progress
    ) as bar:

        def write(index: int, result: PosteriorResult) -> None:
            store.write(index, to_datatree(result))
            bar.update()

        try:
            run_chunks(run_chunk, ((i, arguments(i)) for i in pending), write, client=client)
            return store.finish(), len(pending)
        except OSError as err:  # a disk that filled: the finished chunks stay, verified
            kept = int(store.done.sum())
            raise OutputError(
                f"could not write {store.path} ({os_reason(err)}); {kept} of "
                f"{len(store.ranges)} chunks are finished in it: rerun the same "
                "command when there is space, and it resumes"
            ) from None
