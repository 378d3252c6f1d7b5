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
    wall, rss, _ = run_peak_memory(cmd, env, poll_s, pss=False)
    return wall, rss


def run_peak_memory(
    cmd: list[str], env: dict | None = None, poll_s: float = 0.1, pss: bool = True
) -> tuple[float, int, int | None]:
    """Run ``cmd``; return its wall time [s], the peak summed RSS and the peak summed PSS [bytes] of its process
    tree (polled every ``poll_s``).

    RSS counts pages shared by forked children once per process; PSS (Linux ``smaps``, proportional set size)
    splits each shared page between its sharers, so its sum is the memory the tree really holds. ``pss=False``
    (or no PSS on this system): the third value is None. Raises RuntimeError on a non-zero exit.
    """
    import subprocess

    import psutil

    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL)
    ps = psutil.Process(proc.pid)
    peak, peak_pss = 0, None
    while proc.poll() is None:
        try:
            procs = [ps, *ps.children(recursive=True)]
            peak = max(peak, sum(p.memory_info().rss for p in procs))
            if pss:
                tot = sum(getattr(p.memory_full_info(), "pss", 0) for p in procs)
                peak_pss = max(peak_pss or 0, tot)
        except psutil.Error:
            pass
        time.sleep(poll_s)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])} ... failed with exit {proc.returncode}")
    return time.perf_counter() - t0, peak, peak_pss
