"""``csstz build``: draw N galaxies, simulate them, assign splits, write a dataset.

An orchestrator over population -> simulate -> io (the simulator is imported
lazily, only here). The work is cut into chunks of ``chunk`` galaxies; each
chunk is a pure function of (seed, its TARGETIDs, the source, the instrument),
computed in-process (``workers=1``), on a local Dask cluster of ``workers``
single-threaded processes, or on an existing cluster (``scheduler``). Finished
chunks go through :class:`csstz.io.dataset_writer.ChunkedDatasetWriter`, so a
killed build resumes where it stopped, and the same seed gives the same bytes
whatever the number of workers.

TARGETIDs of the embedded population are 0 .. N-1; real sources keep their
catalogue TARGETID.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from . import __version__
from .errors import InputError
from .rng import run_rng

STREAM_REAL_SUBSET = 21  # run-level stream: which real sources a --n N build takes

SOURCES = ("embedded", "desi", "boss", "sps")
#: Columns of the build catalogue common to all sources, in file order.
BASE_COLUMNS = [("TARGETID", "i8"), ("Z", "f8"), ("SHAPE_R", "f8"), ("SERSIC", "f8"), ("BA", "f8"),
                ("PA", "f8"), ("SNR_GU", "f8"), ("SNR_GV", "f8"), ("SNR_GI", "f8"), ("SNR_TOTAL", "f8"),
                ("SPLIT", "S5")]
EMBEDDED_COLUMNS = [("SDSS_INDEX", "i8"), ("SDSS_Z", "f8"), ("MAG_GV", "f8"), ("MAG_GI", "f8"),
                    ("ABSMAG_R", "f8"), ("REST_UR", "f8"), ("EARLY", "?"), ("SEL_FALLBACK", "?"),
                    ("COEFF", "f4", (5,))]
REAL_COLUMNS = [("RA", "f8"), ("DEC", "f8"), ("SURVEY", "S5")]
#: Columns of the SPS source (csstz.population.sps; needs the optional extra csstz[sps]).
SPS_COLUMNS = [("SOURCE", "S8"), ("MAG_GV", "f8"), ("MAG_GI", "f8"), ("ABSMAG_R", "f8"), ("REST_UR", "f8"),
               ("EARLY", "?"), ("SEL_FALLBACK", "?"), ("BANK_INDEX", "i8"), ("BANK_Z", "f8"),
               ("LOG_MASS_SHIFT", "f8"), ("LOG_MSTAR", "f8"), ("SFR", "f8"), ("LOG_SSFR", "f8"),
               ("METALLICITY", "f8"), ("AV", "f8"), ("LOG_U", "f8"), ("AGE", "f8"), ("TAU", "f8"),
               ("QUIESCENT", "?"), ("BURST", "?"), ("EW_OII", "f8"), ("EW_HA", "f8")]

_WORKER_CACHE: dict = {}


# --- one chunk (runs on a worker) ------------------------------------------------------------------
def _instrument(yaml_text: str):
    from .instrument import parse_instrument
    key = ("instrument", hashlib.sha256(yaml_text.encode()).hexdigest())
    if key not in _WORKER_CACHE:
        _WORKER_CACHE[key] = parse_instrument(yaml_text, "<build instrument>")
    return _WORKER_CACHE[key]


def _embedded_population(yaml_text: str, mag_limit_gi: float):
    from .population.embedded import EmbeddedPopulation
    key = ("population", hashlib.sha256(yaml_text.encode()).hexdigest(), float(mag_limit_gi))
    if key not in _WORKER_CACHE:
        _WORKER_CACHE[key] = EmbeddedPopulation(_instrument(yaml_text), mag_limit_gi=mag_limit_gi)
    return _WORKER_CACHE[key]


def _sps_population(yaml_text: str, mag_limit_gi: float, bank_size: int):
    from .population.sps import SpsPopulation
    key = ("sps", hashlib.sha256(yaml_text.encode()).hexdigest(), float(mag_limit_gi), int(bank_size))
    if key not in _WORKER_CACHE:
        _WORKER_CACHE[key] = SpsPopulation(_instrument(yaml_text), mag_limit_gi=mag_limit_gi, bank_size=bank_size)
    return _WORKER_CACHE[key]


def _pack(columns: dict, snr: dict, extra_dtype: list) -> np.ndarray:
    dtype = np.dtype(BASE_COLUMNS + extra_dtype)
    n = len(columns["TARGETID"])
    out = np.zeros(n, dtype=dtype)
    for name in dtype.names:
        src = snr[name] if name.startswith("SNR_") else columns[name]
        if dtype[name].kind == "S":
            src = np.char.encode(np.asarray(src, dtype=str), "ascii")
        out[name] = src
    return out


def make_chunk(job: dict):
    """Compute one chunk: population draw + simulation.

    Parameters
    ----------
    job : dict
        ``seed``, ``source``, ``instrument_yaml``, ``start``, ``stop`` and, for the
        embedded source, ``mag_limit_gi``; for real sources ``rows`` (dict of
        column arrays for the chunk) and ``templates`` (Redrock template path).

    Returns
    -------
    bands : dict of str -> BandSpectra
    catalog : structured ndarray, shape (stop - start,)
    """
    from .simulate.api import simulate_arrays

    inst = _instrument(job["instrument_yaml"])
    seed = int(job["seed"])
    if job["source"] == "embedded":
        pop = _embedded_population(job["instrument_yaml"], job["mag_limit_gi"])
        chunk = pop.draw(seed, np.arange(job["start"], job["stop"], dtype=np.int64))
        cols, wave, flux = chunk.columns, chunk.wave_aa, chunk.flux_flam17
        extra = EMBEDDED_COLUMNS
    elif job["source"] == "sps":
        pop = _sps_population(job["instrument_yaml"], job["mag_limit_gi"], job["bank_size"])
        chunk = pop.draw(seed, np.arange(job["start"], job["stop"], dtype=np.int64))
        cols, wave, flux = dict(chunk.columns), chunk.wave_aa, chunk.flux_flam17
        cols["SOURCE"] = np.full(len(cols["TARGETID"]), "sps")
        extra = SPS_COLUMNS
    else:
        from .population.redrock import redrock_sed_flam17
        cols = job["rows"]
        wave, flux = redrock_sed_flam17(job["templates"], cols["Z"], cols["COEFF"])
        extra = REAL_COLUMNS
    bands, snr = simulate_arrays(wave, flux, cols["TARGETID"], cols["SHAPE_R"], cols["SERSIC"], cols["BA"],
                                 cols["PA"], seed=seed, instrument=inst)
    return bands, _pack(cols, snr, extra)


# --- the build --------------------------------------------------------------------------------------
def _file_id(path) -> dict:
    p = Path(path)
    if not p.is_file():
        raise InputError("path", "file not found", value=str(path))
    st = p.stat()
    return {"path": str(p.resolve()), "size": st.st_size}


def _progress(enabled: bool, total: int, done: int):
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)
    prog = Progress(TextColumn("csstz build"), BarColumn(), MofNCompleteColumn(), TextColumn("galaxies"),
                    TimeElapsedColumn(), TimeRemainingColumn(), disable=not enabled, transient=False)
    task = prog.add_task("build", total=total, completed=done)
    return prog, task


def build_dataset(out, n, seed=0, workers=1, scheduler=None, source="embedded", instrument_path=None,
                  chunk=2000, progress=True, **source_kwargs) -> Path:
    """Draw ``n`` galaxies, simulate their CSST spectra and write a dataset file.

    Parameters
    ----------
    out : path-like
        Output HDF5 file (spectra layout + SPLIT and provenance columns).
    n : int
        Number of galaxies (> 0).
    seed : int
        Root seed (>= 0); with the same arguments the output bytes are the same
        for any ``workers``/``scheduler``.
    workers : int
        Local worker processes (1 = in-process, no Dask).
    scheduler : str, optional
        Address of an existing Dask scheduler (overrides ``workers``).
    source : {"embedded", "desi", "boss"}
    instrument_path : path-like, optional
        Instrument YAML (default: packaged CSST).
    chunk : int
        Galaxies per chunk (unit of work, of resuming and of memory).
    progress : bool
        Show a rich progress bar.
    **source_kwargs
        embedded: ``mag_limit_gi`` (default :data:`csstz.population.embedded.MAG_LIMIT_GI`).
        desi/boss: ``zcat`` (FITS), ``sweep`` (list of LS DR9 sweep FITS), ``templates``
        (Redrock template FITS).

    Returns
    -------
    Path
        ``out``.

    Raises
    ------
    InputError
        ``n``, ``seed``, ``chunk``, ``workers`` or ``source`` invalid, or too few real sources.
    FileFormatError
        Unreadable inputs, or a partial build that cannot be resumed.
    """
    from .instrument import load_instrument
    from .io.dataset_writer import ChunkedDatasetWriter
    from .population.embedded import MAG_LIMIT_GI, get_population_description

    for name, val, lo in (("--n", n, 1), ("--chunk", chunk, 1), ("--workers", workers, 1), ("--seed", seed, 0)):
        if isinstance(val, bool) or not isinstance(val, (int, np.integer)) or val < lo:
            raise InputError(name, "must be an integer" + (" > 0" if lo else " >= 0"), value=val)
    if source not in SOURCES:
        raise InputError("--source", "unknown source", value=source, allowed=", ".join(SOURCES))
    n, seed, chunk = int(n), int(seed), int(chunk)
    inst = load_instrument(instrument_path)
    yaml_text = inst.to_yaml()
    fingerprint = {"csstz_version": __version__, "n": n, "seed": seed, "chunk": chunk, "source": source,
                   "instrument_sha256": hashlib.sha256(yaml_text.encode()).hexdigest()}
    real = None
    if source == "embedded":
        unknown = set(source_kwargs) - {"mag_limit_gi"}
        if unknown:
            raise InputError(sorted(unknown)[0], "not an option of the embedded source")
        mag_limit = float(source_kwargs.get("mag_limit_gi") or MAG_LIMIT_GI)
        fingerprint["mag_limit_gi"] = mag_limit
        population = get_population_description(mag_limit)
    elif source == "sps":
        from .population.sps import BANK_SIZE, ensure_bank, get_sps_description
        unknown = set(source_kwargs) - {"mag_limit_gi", "bank_size"}
        if unknown:
            raise InputError(sorted(unknown)[0], "not an option of the sps source")
        mag_limit = float(source_kwargs.get("mag_limit_gi") or MAG_LIMIT_GI)
        bank_size = int(source_kwargs.get("bank_size") or BANK_SIZE)
        fingerprint.update(mag_limit_gi=mag_limit, bank_size=bank_size)
        population = get_sps_description(mag_limit, bank_size)
        ensure_bank(seed, bank_size, progress=progress)  # once, here, before the workers load it
    else:
        from .population.desi import load_real_sources
        zcat, sweep, templates = (source_kwargs.get(k) for k in ("zcat", "sweep", "templates"))
        for name, val in (("--zcat", zcat), ("--sweep", sweep), ("--templates", templates)):
            if not val:
                raise InputError(name, f"required with --source {source}")
        sweep = [sweep] if isinstance(sweep, (str, os.PathLike)) else list(sweep)
        fingerprint["inputs"] = {"zcat": _file_id(zcat), "sweep": [_file_id(s) for s in sweep],
                                 "templates": _file_id(templates)}
        real = load_real_sources(source, zcat, sweep, seed=seed)
        if n > len(real["TARGETID"]):
            raise InputError("--n", f"only {len(real['TARGETID'])} {source} sources pass the cuts", value=n)
        # a seeded random subset, not the first N ids (DESI TARGETIDs encode survey, program and brick)
        keep = np.sort(run_rng(seed, STREAM_REAL_SUBSET).choice(len(real["TARGETID"]), size=n, replace=False))
        real = {c: v[keep] for c, v in real.items()}
        population = {"source": source, "cuts": "method.md eq. 1-3", "templates": str(templates),
                      "split": "test drawn with weights following the CSST n(z) table; 8:1:1 overall"}
    writer = ChunkedDatasetWriter(out, n, chunk, fingerprint)
    jobs = []
    for k in writer.pending():
        start, stop = writer.bounds[k]
        job = {"k": k, "seed": seed, "source": source, "instrument_yaml": yaml_text, "start": start, "stop": stop}
        if source == "embedded":
            job["mag_limit_gi"] = mag_limit
        elif source == "sps":
            job["mag_limit_gi"], job["bank_size"] = mag_limit, bank_size
        else:
            job["templates"] = str(templates)
            job["rows"] = {c: v[start:stop] for c, v in real.items()}
        jobs.append(job)
    done_rows = n - sum(j["stop"] - j["start"] for j in jobs)
    prog, task = _progress(progress, n, done_rows)
    with prog:
        for k, (bands, cat) in _run_jobs(jobs, workers, scheduler):
            writer.write_chunk(k, bands, cat)
            prog.update(task, advance=len(cat))
    attrs = {"csstz_version": __version__, "seed": seed, "instrument": yaml_text, "n": n, "source": source,
             "population": population, "chunk": chunk,
             "snr_definition": "SNR_<band> = median over the band's valid pixels of flux/err; "
                               "SNR_TOTAL = the same over the valid pixels of all bands"}
    return writer.finalize(attrs)


def _run_jobs(jobs: list, workers: int, scheduler: str | None):
    """Yield (chunk index, result) as chunks finish; at most 2 per worker in flight."""
    if scheduler is None and workers <= 1:
        for job in jobs:
            yield job["k"], make_chunk(job)
        return
    from distributed import as_completed

    from .simulate.parallel import dask_client

    with dask_client(workers=workers, scheduler=scheduler) as client:
        n_slots = 2 * max(workers, len(client.scheduler_info().get("workers", {})) or 1)
        pending = list(jobs)
        futures = {}
        ac = as_completed()
        while pending and len(futures) < n_slots:
            job = pending.pop(0)
            fut = client.submit(make_chunk, job, pure=False)
            futures[fut] = job["k"]
            ac.add(fut)
        for fut in ac:
            k = futures.pop(fut)
            result = fut.result()
            fut.release()
            if pending:
                job = pending.pop(0)
                nf = client.submit(make_chunk, job, pure=False)
                futures[nf] = job["k"]
                ac.add(nf)
            yield k, result


def build_from_args(a) -> Path:
    """Run :func:`build_dataset` from the parsed ``csstz build`` arguments."""
    kwargs = {}
    if a.source not in ("embedded", "sps"):
        kwargs = {"zcat": a.zcat, "sweep": a.sweep, "templates": a.templates}
    elif a.zcat or a.sweep or a.templates:
        raise InputError("--source", "--zcat/--sweep/--templates need --source desi or boss", value=a.source)
    return build_dataset(a.out, a.n, seed=a.seed, workers=a.workers, scheduler=a.scheduler, source=a.source,
                         instrument_path=a.instrument, chunk=a.chunk, progress=not a.no_progress, **kwargs)


__all__ = ["build_dataset", "build_from_args", "make_chunk", "SOURCES"]
