"""Wall-clock timing for the benchmark studies: medians, because the machine is shared."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np


def median_seconds(fn: Callable[[], object], repeats: int, *, warmup: int = 0) -> float:
    """Median wall time of ``fn()`` over ``repeats`` calls (seconds), after ``warmup`` untimed
    calls (one-off allocation, compilation, kernel selection)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))
