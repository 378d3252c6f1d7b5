"""``csstz build``: draw N galaxies, simulate them, assign splits, write a dataset.

An orchestrator over population -> simulate -> io (the simulator is imported
lazily, only here). The work is cut into chunks of ``chunk`` galaxies; each
chunk is a pure function of (seed, its TARGETIDs, the source, the instrument),
computed in-process (``workers=1``), on a local Dask cluster of ``workers``
single-threaded processes, or on an existing cluster (``scheduler``). Finished
chunks go through :class:`csstz.io.dataset_writer.ChunkedDatasetWriter`, so a
killed build resumes where it stopped, and the same seed gives the same bytes
whatever the number of workers.

TARGETIDs: the embedded population's are 0 .. N-1 and the SPS population's
``SPS_TARGETID_OFFSET`` + (0 .. N-1), so ids of the two synthetic sources never
collide (a galaxy is regenerable from (seed, TARGETID) alone); real sources keep
their catalogue TARGETID. A mixed build (``source="embedded,sps"``, ``mix``) draws
row i from the second source when a run-level uniform number is below ``mix``; the
``SOURCE`` column says which.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from . import __version__
from .config import SOURCES, SYNTHETIC_SOURCES, BuildConfig, ParallelConfig, PopulationConfig, to_yaml
from .errors import InputError
from .io.spectra import BandSpectra
from .parallel import parallel_map
from .rng import run_rng
from .schema import SNR_DEFINITION, SNR_TOTAL, SPLIT_COLUMN, ZERR_CRB, snr_column

if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any

    from rich.progress import Progress, TaskID

    from ._types import PathLike
    from .instrument import Instrument
    from .population.embedded import EmbeddedPopulation
    from .population.sps import SpsPopulation

#: Splits whose rows carry ``flux_noiseless`` (training draws fresh noise around it; docs/formats.md).
NOISELESS_SPLITS = ("train", "val")
#: Version of the build's file layout, part of the resume fingerprint (2: ZERR_CRB and flux_noiseless).
BUILD_LAYOUT = 2


def _noiseless_rows(split: np.ndarray) -> np.ndarray:
    """Rows whose SPLIT is train or val (they get ``flux_noiseless``; test rows get NaN)."""
    sp = np.asarray(split)
    if sp.dtype.kind == "S":
        sp = np.char.decode(sp, "ascii")
    return np.isin(np.char.strip(sp.astype(str)), NOISELESS_SPLITS)


STREAM_REAL_SUBSET = 21  # run-level stream: which real sources a --n N build takes
STREAM_MIX = 22  # run-level stream: which source each row of a mixed build comes from

#: TARGETID offset of each synthetic source (2**40: far above any build size, below DESI's 2**60 ids).
TARGETID_OFFSET = {"embedded": 0, "sps": 1 << 40}
SPS_TARGETID_OFFSET = TARGETID_OFFSET["sps"]

REAL_COLUMNS = [("RA", "f8"), ("DEC", "f8"), ("SURVEY", "S5")]
#: First extra column of every synthetic-source build.
SOURCE_COLUMN = ("SOURCE", "S8")
#: Columns of the SPS source (csstz.population.sps), after the magnitudes.
SPS_COLUMNS = [
    ("ABSMAG_R", "f8"),
    ("REST_UR", "f8"),
    ("EARLY", "?"),
    ("SEL_FALLBACK", "?"),
    ("BANK_INDEX", "i8"),
    ("BANK_Z", "f8"),
    ("LOG_MASS_SHIFT", "f8"),
    ("LOG_MSTAR", "f8"),
    ("SFR", "f8"),
    ("LOG_SSFR", "f8"),
    ("METALLICITY", "f8"),
    ("AV", "f8"),
    ("LOG_U", "f8"),
    ("AGE", "f8"),
    ("TAU", "f8"),
    ("QUIESCENT", "?"),
    ("BURST", "?"),
    ("EW_OII", "f8"),
    ("EW_HA", "f8"),
]


def base_columns(bands: Sequence[str]) -> list:
    """Columns of the build catalogue common to all sources, in file order (one SNR column per band)."""
    return (
        [("TARGETID", "i8"), ("Z", "f8"), ("SHAPE_R", "f8"), ("SERSIC", "f8"), ("BA", "f8"), ("PA", "f8")]
        + [(snr_column(b), "f8") for b in bands]
        + [(SNR_TOTAL, "f8"), (ZERR_CRB, "f8"), (SPLIT_COLUMN, "S5")]
    )


def embedded_columns(mag_bands: Sequence[str]) -> list:
    """Extra columns of the embedded population (one magnitude per band of ``mag_bands``)."""
    return (
        [("SDSS_INDEX", "i8"), ("SDSS_Z", "f8")]
        + [(f"MAG_{b}", "f8") for b in mag_bands]
        + [("ABSMAG_R", "f8"), ("REST_UR", "f8"), ("EARLY", "?"), ("SEL_FALLBACK", "?"), ("COEFF", "f4", (5,))]
    )


def sps_columns(mag_bands: Sequence[str]) -> list:
    """Extra columns of the SPS population (one magnitude per band of ``mag_bands``)."""
    return [(f"MAG_{b}", "f8") for b in mag_bands] + SPS_COLUMNS


def synthetic_columns(sources: Sequence[str], mag_bands: Sequence[str]) -> list:
    """Extra columns of a build from synthetic sources: SOURCE, then the union of their columns in order."""
    out, seen = [SOURCE_COLUMN], {SOURCE_COLUMN[0]}
    for src in sources:
        for col in (embedded_columns if src == "embedded" else sps_columns)(mag_bands):
            if col[0] not in seen:
                out.append(col)
                seen.add(col[0])
    return out


def _missing_value(dt: np.dtype) -> float | int | bool | bytes:
    """Fill value of a column a row's source does not have: NaN, -1, False or empty."""
    return {"f": np.nan, "i": -1, "b": False, "S": b""}[dt.base.kind]


_WORKER_CACHE: dict = {}


# --- one chunk (runs on a worker) ------------------------------------------------------------------
def _instrument(yaml_text: str) -> Instrument:
    from .instrument import parse_instrument

    key = ("instrument", hashlib.sha256(yaml_text.encode()).hexdigest())
    if key not in _WORKER_CACHE:
        _WORKER_CACHE[key] = parse_instrument(yaml_text, "<build instrument>")
    return _WORKER_CACHE[key]


def _embedded_population(yaml_text: str, mag_limit_gi: float) -> EmbeddedPopulation:
    from .population.embedded import EmbeddedPopulation

    key = ("population", hashlib.sha256(yaml_text.encode()).hexdigest(), float(mag_limit_gi))
    if key not in _WORKER_CACHE:
        _WORKER_CACHE[key] = EmbeddedPopulation(_instrument(yaml_text), mag_limit_gi=mag_limit_gi)
    return _WORKER_CACHE[key]


def _sps_population(yaml_text: str, mag_limit_gi: float, bank_size: int) -> SpsPopulation:
    from .population.sps import SpsPopulation

    key = ("sps", hashlib.sha256(yaml_text.encode()).hexdigest(), float(mag_limit_gi), int(bank_size))
    if key not in _WORKER_CACHE:
        _WORKER_CACHE[key] = SpsPopulation(_instrument(yaml_text), mag_limit_gi=mag_limit_gi, bank_size=bank_size)
    return _WORKER_CACHE[key]


def _pack(columns: dict, snr: dict, bands: Sequence[str], extra_dtype: list) -> np.ndarray:
    dtype = np.dtype(base_columns(bands) + extra_dtype)
    n = len(columns["TARGETID"])
    out = np.zeros(n, dtype=dtype)
    for name in dtype.names:
        if name not in snr and name not in columns:
            out[name] = _missing_value(dtype[name])
            continue
        src = snr[name] if name in snr else columns[name]
        if dtype[name].kind == "S":
            src = np.char.encode(np.asarray(src, dtype=str), "ascii")
        out[name] = src
    return out


def _all_noiseless(bands: dict) -> dict:
    """Give every band a ``flux_noiseless`` array (NaN rows where absent): one layout whatever the chunk's splits."""
    for sp in bands.values():
        if sp.flux_noiseless is None:
            sp.flux_noiseless = np.full(sp.flux.shape, np.nan, np.float32)
    return bands


def _simulate_columns(wave_aa: np.ndarray, flux_flam17: np.ndarray, cols: dict, seed: int, inst: Instrument) -> tuple:
    """Simulate catalogue rows: spectra, SNR and ZERR_CRB, noiseless spectra for the train/val rows."""
    from .simulate.api import simulate_arrays

    return simulate_arrays(
        wave_aa,
        flux_flam17,
        cols["TARGETID"],
        cols["SHAPE_R"],
        cols["SERSIC"],
        cols["BA"],
        cols["PA"],
        seed=seed,
        instrument=inst,
        z=cols["Z"],
        want_noiseless=_noiseless_rows(cols["SPLIT"]),
    )


def make_chunk(job: dict) -> tuple[dict[str, BandSpectra], np.ndarray]:
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
    inst = _instrument(job["instrument_yaml"])
    seed = int(job["seed"])
    if job["source"] in ("desi", "boss"):
        from .population.redrock import redrock_sed_flam17

        cols = job["rows"]
        wave, flux = redrock_sed_flam17(job["templates"], cols["Z"], cols["COEFF"])
        bands, snr = _simulate_columns(wave, flux, cols, seed, inst)
        return _all_noiseless(bands), _pack(cols, snr, inst.band_names, REAL_COLUMNS)
    sources = tuple(job["source"].split(","))
    row_source = np.asarray(job.get("row_source", np.zeros(job["stop"] - job["start"], np.int8)))
    rows = np.arange(job["start"], job["stop"], dtype=np.int64)
    extra, cat, bands = None, None, None
    for code, src in enumerate(sources):
        idx = np.flatnonzero(row_source == code)
        if idx.size == 0:
            continue
        pop = (
            _embedded_population(job["instrument_yaml"], job["mag_limit_gi"])
            if src == "embedded"
            else _sps_population(job["instrument_yaml"], job["mag_limit_gi"], job["bank_size"])
        )
        if extra is None:
            extra = synthetic_columns(sources, pop.mag_bands)
        chunk = pop.draw(seed, TARGETID_OFFSET[src] + rows[idx])
        cols = dict(chunk.columns, SOURCE=np.full(idx.size, src))
        part, snr = _simulate_columns(chunk.wave_aa, chunk.flux_flam17, cols, seed, inst)
        _all_noiseless(part)
        packed = _pack(cols, snr, inst.band_names, extra)
        if len(idx) == len(rows):
            return part, packed
        if cat is None:
            cat = np.zeros(len(rows), dtype=packed.dtype)
            bands = {
                b: BandSpectra(
                    sp.wave_aa,
                    np.empty((len(rows),) + sp.flux.shape[1:], sp.flux.dtype),
                    np.empty((len(rows),) + sp.err.shape[1:], sp.err.dtype),
                    None if sp.image2d is None else np.empty((len(rows),) + sp.image2d.shape[1:], sp.image2d.dtype),
                    np.full((len(rows),) + sp.flux.shape[1:], np.nan, np.float32),
                )
                for b, sp in part.items()
            }
        cat[idx] = packed
        for b, sp in part.items():
            bands[b].flux[idx], bands[b].err[idx] = sp.flux, sp.err
            bands[b].flux_noiseless[idx] = sp.flux_noiseless
            if sp.image2d is not None:
                bands[b].image2d[idx] = sp.image2d
    return bands, cat


# --- the build --------------------------------------------------------------------------------------
def _file_id(path: PathLike) -> dict:
    p = Path(path)
    if not p.is_file():
        raise InputError("path", "file not found", value=str(path))
    st = p.stat()
    return {"path": str(p.resolve()), "size": st.st_size}


def _progress(enabled: bool, total: int, done: int) -> tuple[Progress, TaskID]:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    prog = Progress(
        TextColumn("csstz build"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("galaxies"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        disable=not enabled,
        transient=False,
    )
    task = prog.add_task("build", total=total, completed=done)
    return prog, task


def build_dataset(
    out: PathLike,
    n: int,
    seed: int = BuildConfig.seed,
    workers: int = ParallelConfig.workers,
    scheduler: str | None = None,
    source: str = PopulationConfig.source,
    instrument_path: PathLike | None = None,
    chunk: int = BuildConfig.chunk,
    progress: bool = True,
    config_yaml: str | None = None,
    **source_kwargs: Any,
) -> Path:
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
    source : str
        "embedded", "sps", "embedded,sps" (mixed; needs ``mix``), "desi" or "boss".
    instrument_path : path-like, optional
        Instrument YAML (default: packaged CSST).
    chunk : int
        Galaxies per chunk (unit of work, of resuming and of memory).
    progress : bool
        Show a rich progress bar.
    config_yaml : str, optional
        The stage configuration (YAML) stored as root attribute ``config``.
    **source_kwargs
        embedded, sps: ``mag_limit_gi`` (default :data:`csstz.population.embedded.MAG_LIMIT_GI`);
        sps: ``bank_size`` (SED bank members); mixed: ``mix`` (fraction from the second source).
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
    sources = tuple(x.strip() for x in str(source).split(",") if x.strip())
    mixed = len(sources) > 1
    if (
        not sources
        or any(x not in SOURCES for x in sources)
        or (mixed and (len(sources) != 2 or len(set(sources)) != 2 or not set(sources) <= set(SYNTHETIC_SOURCES)))
    ):
        raise InputError(
            "--source", "unknown source", value=source, allowed=", ".join(SOURCES) + ", or embedded,sps with --mix"
        )
    mix = source_kwargs.pop("mix", None)
    if mixed != (mix is not None) or (mixed and not 0.0 <= float(mix) <= 1.0):
        raise InputError("--mix", "a fraction in [0, 1], given exactly when two sources are mixed", value=mix)
    n, seed, chunk = int(n), int(seed), int(chunk)
    source = ",".join(sources)
    inst = load_instrument(instrument_path)
    yaml_text = inst.to_yaml()
    fingerprint = {
        "csstz_version": __version__,
        "layout": BUILD_LAYOUT,
        "n": n,
        "seed": seed,
        "chunk": chunk,
        "source": source,
        "instrument_sha256": hashlib.sha256(yaml_text.encode()).hexdigest(),
    }
    real = None
    row_source = None
    if set(sources) <= set(SYNTHETIC_SOURCES):
        allowed_kw = {"mag_limit_gi"} | ({"bank_size"} if "sps" in sources else set())
        unknown = set(source_kwargs) - allowed_kw
        if unknown:
            raise InputError(sorted(unknown)[0], f"not an option of the {source} source")
        mag_limit = float(source_kwargs.get("mag_limit_gi") or MAG_LIMIT_GI)
        fingerprint["mag_limit_gi"] = mag_limit
        population = {}
        if "embedded" in sources:
            population["embedded"] = get_population_description(mag_limit)
        if "sps" in sources:
            from .population.sps import BANK_SIZE, ensure_bank, get_sps_description

            bank_size = int(source_kwargs.get("bank_size") or BANK_SIZE)
            fingerprint["bank_size"] = bank_size
            population["sps"] = get_sps_description(mag_limit, bank_size)
            ensure_bank(seed, bank_size, progress=progress)  # once, here, before the workers load it
        if mixed:
            fingerprint["mix"] = float(mix)
            population["mix"] = {"sources": list(sources), "fraction_second": float(mix)}
            row_source = (run_rng(seed, STREAM_MIX).random(n) < float(mix)).astype(np.int8)
        population = population[sources[0]] if not mixed else population
    else:
        from .population.desi import load_real_sources

        zcat, sweep, templates = (source_kwargs.get(k) for k in ("zcat", "sweep", "templates"))
        for name, val in (("--zcat", zcat), ("--sweep", sweep), ("--templates", templates)):
            if not val:
                raise InputError(name, f"required with --source {source}")
        sweep = [sweep] if isinstance(sweep, (str, os.PathLike)) else list(sweep)
        fingerprint["inputs"] = {
            "zcat": _file_id(zcat),
            "sweep": [_file_id(s) for s in sweep],
            "templates": _file_id(templates),
        }
        real = load_real_sources(source, zcat, sweep, seed=seed)
        if n > len(real["TARGETID"]):
            raise InputError("--n", f"only {len(real['TARGETID'])} {source} sources pass the cuts", value=n)
        # a seeded random subset, not the first N ids (DESI TARGETIDs encode survey, program and brick)
        keep = np.sort(run_rng(seed, STREAM_REAL_SUBSET).choice(len(real["TARGETID"]), size=n, replace=False))
        real = {c: v[keep] for c, v in real.items()}
        population = {
            "source": source,
            "cuts": "docs/design.md, selection cuts 1-3",
            "templates": str(templates),
            "split": "test drawn with weights following the CSST n(z) table; 8:1:1 overall",
        }
    writer = ChunkedDatasetWriter(out, n, chunk, fingerprint)
    jobs = []
    for k in writer.pending():
        start, stop = writer.bounds[k]
        job = {"k": k, "seed": seed, "source": source, "instrument_yaml": yaml_text, "start": start, "stop": stop}
        if real is None:
            job["mag_limit_gi"] = mag_limit
            if "sps" in sources:
                job["bank_size"] = bank_size
            if row_source is not None:
                job["row_source"] = row_source[start:stop]
        else:
            job["templates"] = str(templates)
            job["rows"] = {c: v[start:stop] for c, v in real.items()}
        jobs.append(job)
    done_rows = n - sum(j["stop"] - j["start"] for j in jobs)
    prog, task = _progress(progress, n, done_rows)
    with prog:
        for i, (bands, cat) in parallel_map(make_chunk, jobs, workers=workers, scheduler=scheduler):
            writer.write_chunk(jobs[i]["k"], bands, cat)
            prog.update(task, advance=len(cat))
    attrs = {
        "csstz_version": __version__,
        "seed": seed,
        "instrument": yaml_text,
        "n": n,
        "source": source,
        "population": population,
        "chunk": chunk,
        "snr_definition": SNR_DEFINITION,
    }
    if config_yaml is not None:
        attrs["config"] = config_yaml
    return writer.finalize(attrs)


def build_from_config(
    out: PathLike,
    build: BuildConfig,
    population: PopulationConfig | None = None,
    parallel: ParallelConfig | None = None,
) -> Path:
    """:func:`build_dataset` from stage configs; the configs are stored in the file (attribute ``config``).

    Only what changes the content is stored (not the workers, the scheduler or the progress bar), so the
    same build on any number of workers gives the same bytes.
    """
    pop = population or PopulationConfig()
    par = parallel or ParallelConfig()
    kwargs: dict = {}
    if set(pop.sources) <= set(SYNTHETIC_SOURCES):
        if pop.mag_limit_gi is not None:
            kwargs["mag_limit_gi"] = pop.mag_limit_gi
        if pop.mix is not None:
            kwargs["mix"] = pop.mix
    else:
        kwargs = {"zcat": pop.zcat, "sweep": list(pop.sweep or ()), "templates": pop.templates}
    return build_dataset(
        out,
        build.n,
        seed=build.seed,
        workers=par.workers,
        scheduler=par.scheduler,
        source=pop.source,
        instrument_path=build.instrument,
        chunk=build.chunk,
        progress=build.progress,
        config_yaml=to_yaml({"build": build, "population": pop}, exclude=("progress",)),
        **kwargs,
    )


__all__ = ["build_dataset", "build_from_config", "make_chunk", "SOURCES", "TARGETID_OFFSET"]
