"""Running a jitted, frame-vmapped function over frame batches with a progress bar."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np


def frame_keys(seed: int, n_frames: int, first_frame: int = 0) -> np.ndarray:
    """(F, 2) JAX PRNG keys of frames ``first_frame … first_frame + F − 1`` of a run seeded with
    ``seed``: key ``g`` of ``split(PRNGKey(seed), ·)`` for the frame of global index ``g``.

    JAX's partitionable threefry (the default since JAX 0.5) makes the ``g``-th key of a split
    independent of how many keys are split, so a shard of a movie draws exactly the numbers the
    whole run draws for its frames (what :mod:`bayes_smlm.cluster` relies on).
    """
    import jax

    from bayes_smlm.forward.checks import check_int

    first_frame = check_int("first_frame", first_frame, lo=0)
    keys = jax.random.split(jax.random.PRNGKey(seed), first_frame + n_frames)
    return np.asarray(keys)[first_frame:]


def map_frame_batches(
    fn: Callable[..., Any],
    arrays: Sequence[np.ndarray],
    batch_size: int,
    *,
    progress: bool = False,
    desc: str = "frames",
    multiple_of: int = 1,
) -> Any:
    """Apply ``fn`` to consecutive frame batches of ``arrays`` (leading axis F) and concatenate.

    ``fn`` returns a pytree of arrays with leading axis = batch; the result has the same
    structure with leading axis F. The last batch is padded to ``batch_size`` by repeating its
    final frame so that ``fn`` is compiled once; the padding is dropped from the output.
    ``multiple_of`` rounds the batch up (e.g. to the number of devices it is split across).

    A run of fewer frames than ``batch_size`` uses a smaller batch, but never one frame per
    device where ``batch_size`` gives each several: XLA compiles a batch of one into other
    arithmetic (rounding differs in the last bit), and a frame's numbers must not depend on how
    many frames share its run (:mod:`bayes_smlm.cluster` splits runs into chunks).
    """
    import jax
    from tqdm.auto import tqdm

    def rounded_up(frames: int) -> int:
        return multiple_of * -(-frames // multiple_of)

    n = arrays[0].shape[0]
    full = rounded_up(max(1, batch_size))
    batch_size = max(min(full, rounded_up(n)), min(full, 2 * multiple_of))
    outputs: list[Any] = []
    with tqdm(total=n, desc=desc, unit="frame", disable=not progress, leave=False) as bar:
        for start in range(0, n, batch_size):
            stop = min(start + batch_size, n)
            pad = batch_size - (stop - start)
            batch = [
                np.concatenate([a[start:stop], np.repeat(a[stop - 1 : stop], pad, 0)])
                if pad
                else a[start:stop]
                for a in arrays
            ]
            out = fn(*batch)
            outputs.append(jax.tree_util.tree_map(lambda o: np.asarray(o)[: stop - start], out))
            bar.update(stop - start)
    return jax.tree_util.tree_map(lambda *parts: np.concatenate(parts), *outputs)
