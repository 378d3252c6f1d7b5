"""One parallel map for every stage: in-process, local processes, a local Dask cluster, or a scheduler.

:func:`parallel_map` is what ``simulate``, ``build`` and the template fit use:

* ``workers == 1`` and no ``scheduler``: in-process, in order (no pool, no Dask);
* ``scheduler`` given: the tasks go to that existing Dask cluster;
* otherwise ``local="dask"`` (default) starts a local Dask cluster of ``workers``
  single-threaded processes, and ``local="processes"`` a plain process pool (forked
  where the platform forks, so module-level caches built before the call are inherited).

At most ``in_flight`` tasks per worker are submitted at once, so memory stays bounded
however long the list; results are yielded as ``(index, result)`` as they finish.

:func:`forked_imap` is the streaming variant for the p(z) estimator: an ordered, lazy map over a
possibly endless iterator, in forked processes that inherit the caller's state (so ``func`` may
be a closure over large read-only objects: only the tasks and results are pickled), with at
most ``ahead`` tasks in flight.

``dask_client(workers, scheduler)`` yields a ``distributed.Client``: connected
to ``scheduler`` when given (an existing cluster), otherwise to a local cluster
of ``workers`` single-threaded worker processes that is shut down afterwards.

Worker environment: Dask's nanny sets ``MALLOC_TRIM_THRESHOLD_=65536`` in its
workers by default, which makes glibc return memory to the OS so eagerly that
GalSim rendering slows by 30-40% (measured by the csstz developers); csstz
raises it to 128 MiB and pins BLAS/OpenMP threads to 1 per worker. The nanny copies these into
``os.environ`` of the *calling* process before it spawns a worker, lets a value already set there win
over the configured one, and never restores it: :func:`dask_client` therefore sets them itself while the
workers start and gives the caller its own environment back afterwards (left behind, ``MKL_NUM_THREADS=1``
put torch, imported later in the same process, on one thread: ``csstz demo`` trained at 1,325 instead of
1,731 samples/s after its build).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from distributed import Client

LOCAL_KINDS = ("dask", "processes")

WORKER_ENV = {
    "MALLOC_TRIM_THRESHOLD_": str(128 * 1024 * 1024),
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}


@contextlib.contextmanager
def worker_environ() -> Iterator[None]:
    """Set :data:`WORKER_ENV` in ``os.environ`` for the block; restore the caller's environment after."""
    saved = dict(os.environ)
    os.environ.update(WORKER_ENV)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


@contextlib.contextmanager
def dask_client(workers: int = 1, scheduler: str | None = None) -> Iterator[Client]:
    """Context manager yielding a Dask client (local cluster unless ``scheduler``)."""
    import dask
    from distributed import Client, LocalCluster

    if scheduler is not None:
        client = Client(scheduler)
        try:
            yield client
        finally:
            client.close()
        return
    config = {"distributed.nanny.pre-spawn-environ": WORKER_ENV, "distributed.worker.daemon": False}
    with worker_environ(), dask.config.set(config):
        cluster = LocalCluster(
            n_workers=int(workers), threads_per_worker=1, processes=True, dashboard_address=None, silence_logs=40
        )
    try:
        client = Client(cluster)
        try:
            yield client
        finally:
            client.close()
    finally:
        cluster.close()


def parallel_map(
    func: Callable[[Any], Any],
    items: Iterable[Any],
    workers: int = 1,
    scheduler: str | None = None,
    local: str = "dask",
    in_flight: int = 2,
) -> Iterator[tuple[int, Any]]:
    """Apply ``func`` to every item; yield ``(index, result)`` as results finish.

    Parameters
    ----------
    func : callable
        A module-level function (it is pickled to the workers).
    items : iterable
        Its arguments, one per task.
    workers : int
        Local worker processes (1 = in-process, unless ``scheduler``).
    scheduler : str, optional
        Address of an existing Dask scheduler (overrides ``workers`` and ``local``).
    local : {"dask", "processes"}
        The local engine when ``workers > 1``.
    in_flight : int
        Tasks per worker submitted ahead.

    Yields
    ------
    (int, object)
        Position of the item in ``items`` and ``func(item)``; in order only in-process.

    Raises
    ------
    ValueError
        ``workers`` < 1 or an unknown ``local``.
    """
    items = list(items)
    if int(workers) < 1:
        raise ValueError(f"workers must be >= 1 (got {workers})")
    if local not in LOCAL_KINDS:
        raise ValueError(f"local must be one of {', '.join(LOCAL_KINDS)} (got {local!r})")
    if scheduler is None and workers <= 1:
        for i, item in enumerate(items):
            yield i, func(item)
        return
    if scheduler is None and local == "processes":
        yield from _process_map(func, items, int(workers), in_flight)
        return
    yield from _dask_map(func, items, int(workers), scheduler, in_flight)


def parallel_list(func: Callable[[Any], Any], items: Iterable[Any], **kwargs: Any) -> list:
    """:func:`parallel_map` collected into a list in the order of ``items``."""
    items = list(items)
    out: list = [None] * len(items)
    for i, res in parallel_map(func, items, **kwargs):
        out[i] = res
    return out


#: The function of the current :func:`forked_imap` (set in the parent before the fork, inherited by the workers).
_FORKED: dict = {}


def _run_forked(task: Any) -> Any:
    return _FORKED["func"](task)


def forked_imap(
    func: Callable[[Any], Any], tasks: Iterable[Any], workers: int = 1, ahead: int | None = None
) -> Iterator[Any]:
    """``func(task)`` for every task, in order, lazily; ``workers`` > 1: in that many forked processes.

    Parameters
    ----------
    func : callable
        Any callable, closures included (the workers inherit it by fork; it is never pickled).
    tasks : iterable
        Possibly endless; consumed only as results are taken.
    workers : int
        1 (or a platform without fork): in this process.
    ahead : int, optional
        Tasks in flight at most (default ``workers + 1``): memory stays flat.

    Yields
    ------
    object
        ``func(task)`` in the order of ``tasks``.
    """
    import multiprocessing
    from collections import deque

    if int(workers) < 1:
        raise ValueError(f"workers must be >= 1 (got {workers})")
    if workers <= 1 or "fork" not in multiprocessing.get_all_start_methods():
        for t in tasks:
            yield func(t)
        return
    if _FORKED:
        raise RuntimeError("forked_imap is already running in this process")
    _FORKED["func"] = func
    it = iter(tasks)
    end = object()
    try:
        with multiprocessing.get_context("fork").Pool(int(workers)) as pool:
            pending: deque = deque()
            for _ in range(int(ahead or workers + 1)):
                t = next(it, end)
                if t is end:
                    break
                pending.append(pool.apply_async(_run_forked, (t,)))
            while pending:
                res = pending.popleft().get()
                t = next(it, end)
                if t is not end:
                    pending.append(pool.apply_async(_run_forked, (t,)))
                yield res
    finally:
        _FORKED.clear()


def _process_map(func: Callable[[Any], Any], items: list, workers: int, in_flight: int) -> Iterator[tuple[int, Any]]:
    import concurrent.futures as cf

    with cf.ProcessPoolExecutor(workers) as ex:
        pending = list(enumerate(items))
        running: dict = {}
        while pending or running:
            while pending and len(running) < in_flight * workers:
                i, item = pending.pop(0)
                running[ex.submit(func, item)] = i
            done, _ = cf.wait(running, return_when=cf.FIRST_COMPLETED)
            for fut in done:
                yield running.pop(fut), fut.result()


def _dask_map(
    func: Callable[[Any], Any], items: list, workers: int, scheduler: str | None, in_flight: int
) -> Iterator[tuple[int, Any]]:
    from distributed import as_completed

    with dask_client(workers=workers, scheduler=scheduler) as client:
        n_slots = in_flight * max(
            workers if scheduler is None else 1, len(client.scheduler_info().get("workers", {})) or 1
        )
        pending = list(enumerate(items))
        futures: dict = {}
        ac = as_completed()

        def submit() -> None:
            i, item = pending.pop(0)
            [data] = client.scatter([item])  # the whole item as one piece of data, not inside the graph
            fut = client.submit(func, data, pure=False)
            futures[fut] = i
            ac.add(fut)

        while pending and len(futures) < n_slots:
            submit()
        for fut in ac:
            i = futures.pop(fut)
            result = fut.result()
            fut.release()
            if pending:
                submit()
            yield i, result


__all__ = [
    "forked_imap",
    "parallel_map",
    "parallel_list",
    "dask_client",
    "worker_environ",
    "WORKER_ENV",
    "LOCAL_KINDS",
]
