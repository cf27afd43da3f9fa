"""Running a jitted, frame-vmapped function over frame batches with a progress bar."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np



def map_frame_batches(fn: Callable[..., Any], arrays: Sequence[np.ndarray], batch_size: int,
                      *, progress: bool = False, desc: str = "frames", multiple_of: int = 1) -> Any:
    """Apply ``fn`` to consecutive frame batches of ``arrays`` (leading axis F) and concatenate.

    ``fn`` returns a pytree of arrays with leading axis = batch; the result has the same
    structure with leading axis F. The last batch is padded to ``batch_size`` by repeating its
    final frame so that ``fn`` is compiled once; the padding is dropped from the output.
    ``multiple_of`` rounds the batch up (e.g. to the number of devices it is split across).
    """
    import jax
    from tqdm.auto import tqdm

    n = arrays[0].shape[0]
    batch_size = max(1, min(batch_size, n))
    batch_size = multiple_of * -(-batch_size // multiple_of)
    outputs: list[Any] = []
    with tqdm(total=n, desc=desc, unit="frame", disable=not progress, leave=False) as bar:
        for start in range(0, n, batch_size):
            stop = min(start + batch_size, n)
            pad = batch_size - (stop - start)
            batch = [np.concatenate([a[start:stop], np.repeat(a[stop - 1:stop], pad, 0)])
                     if pad else a[start:stop] for a in arrays]
            out = fn(*batch)
            outputs.append(jax.tree_util.tree_map(lambda o: np.asarray(o)[: stop - start], out))
            bar.update(stop - start)
    return jax.tree_util.tree_map(lambda *parts: np.concatenate(parts), *outputs)
