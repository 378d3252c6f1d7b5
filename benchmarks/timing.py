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


def run_peak_rss(cmd: list[str], env: dict | None = None, poll_s: float = 0.1) -> tuple[float, int]:
    """Run ``cmd``; return its wall time [s] and the peak resident memory [bytes] of its whole process tree
    (polled every ``poll_s``). Raises RuntimeError on a non-zero exit."""
    import subprocess

    import psutil

    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL)
    ps = psutil.Process(proc.pid)
    peak = 0
    while proc.poll() is None:
        try:
            rss = ps.memory_info().rss + sum(c.memory_info().rss for c in ps.children(recursive=True))
            peak = max(peak, rss)
        except psutil.Error:
            pass
        time.sleep(poll_s)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])} ... failed with exit {proc.returncode}")
    return time.perf_counter() - t0, peak
