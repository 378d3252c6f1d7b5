"""Timing helper shared by the benchmark scripts (run as ``python benchmarks/NAME.py``, so this folder is on
``sys.path``)."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np


def best_of(fn: Callable[[], object], reps: int = 3) -> float:
    """The shortest wall time [s] of ``reps`` calls of ``fn`` (the least disturbed by other processes)."""
    best = np.inf
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best
