"""Dask execution for simulation and dataset builds.

``dask_client(workers, scheduler)`` yields a ``distributed.Client``: connected
to ``scheduler`` when given (an existing cluster), otherwise to a local cluster
of ``workers`` single-threaded worker processes that is shut down afterwards.

Worker environment: Dask's nanny sets ``MALLOC_TRIM_THRESHOLD_=65536`` in its
workers by default, which makes glibc return memory to the OS so eagerly that
GalSim rendering slows by 30-40% (measured by the csstz developers); csstz
raises it to 128 MiB and pins BLAS/OpenMP threads to 1 per worker.
"""
from __future__ import annotations

import contextlib

WORKER_ENV = {
    "MALLOC_TRIM_THRESHOLD_": str(128 * 1024 * 1024),
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}


@contextlib.contextmanager
def dask_client(workers: int = 1, scheduler: str | None = None):
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
    with dask.config.set({"distributed.nanny.pre-spawn-environ": WORKER_ENV,
                          "distributed.worker.daemon": False}):
        cluster = LocalCluster(n_workers=int(workers), threads_per_worker=1, processes=True,
                               dashboard_address=None, silence_logs=40)
        client = Client(cluster)
        try:
            yield client
        finally:
            client.close()
            cluster.close()


__all__ = ["dask_client", "WORKER_ENV"]
