"""One function over chunks of work, in this process or on Dask workers, results as they come."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

IN_FLIGHT_PER_WORKER = 2  # chunks queued per worker thread: busy workers, bounded memory


def run_chunks(
    fn: Callable[..., Any],
    chunks: Iterable[tuple[int, tuple]],
    on_result: Callable[[int, Any], None],
    *,
    client: Any = None,
) -> None:
    """Call ``fn(*arguments)`` for every ``(index, arguments)`` of ``chunks`` and hand each
    result to ``on_result(index, result)`` as soon as it exists.

    Without a client the chunks run here, in order. With a ``distributed.Client`` they run on
    its workers, at most :data:`IN_FLIGHT_PER_WORKER` per worker thread at a time (``chunks``
    is read lazily, so a movie is never all in memory), in whatever order they finish. The
    arguments travel inside each task rather than being scattered, so the scheduler can run a
    lost worker's chunk again elsewhere. An exception in a chunk is raised here.
    """
    if client is None:
        for index, arguments in chunks:
            on_result(index, fn(*arguments))
        return
    from distributed import as_completed

    threads = sum(client.nthreads().values()) or 1
    pending = iter(chunks)
    index_of: dict[Any, int] = {}

    def submit_next(queue: Any) -> None:
        for index, arguments in pending:
            future = client.submit(fn, *arguments, pure=False)
            index_of[future] = index
            queue.add(future)
            return

    queue = as_completed()
    for _ in range(IN_FLIGHT_PER_WORKER * threads):
        submit_next(queue)
    for future in queue:
        on_result(index_of.pop(future), future.result())
        future.release()
        submit_next(queue)
