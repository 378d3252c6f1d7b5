"""Benchmark: simulated galaxies per second (GU+GV+GI, noise + extraction) and peak memory.

Runs ``csstz.simulate.api.simulate_file`` on a catalogue of N galaxies with a
realistic spread of sizes and Sersic indices (log-normal half-light radius,
median 0.4", 30% n = 4-6), with 1 worker in-process and with a local Dask
cluster of 2 workers. Writes ``benchmarks/results/simulate.json``.

    python benchmarks/bench_simulate.py [--n 3000]
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
from astropy.table import Table

from csstz import __version__
from csstz.io.run_dir import write_text
from csstz.simulate.api import simulate_file, write_input_catalog
from csstz.units import abmag_to_flam17


def make_catalog(n: int, path: Path, seed: int = 1) -> None:
    rng = np.random.default_rng(seed)
    wave = np.arange(2400.0, 10700.0, 2.0)
    z = rng.uniform(0.05, 1.5, n)
    mag = rng.uniform(19.5, 22.0, n)
    flux = abmag_to_flam17(mag[:, None], wave[None, :]) * (
        1 + 3 * np.exp(-0.5 * ((wave[None, :] - 6563 * (1 + z[:, None])) / 4) ** 2)
    )
    cat = Table()
    cat["TARGETID"] = np.arange(n, dtype=np.int64)
    cat["Z"] = z
    cat["SHAPE_R"] = np.clip(rng.lognormal(np.log(0.4), 0.6, n), 0.05, 4.0)
    cat["SERSIC"] = np.where(rng.random(n) < 0.3, rng.uniform(4, 6.0, n), rng.uniform(0.5, 2.5, n))
    cat["BA"] = rng.uniform(0.2, 1.0, n)
    cat["PA"] = rng.uniform(-90, 90, n)
    write_input_catalog(path, cat, wave, flux)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=3000)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "simulate.json"))
    args = ap.parse_args()
    results = {
        "benchmark": "simulate",
        "csstz_version": __version__,
        "n_galaxies": args.n,
        "bands": "GU,GV,GI",
        "machine": f"{platform.machine()} {platform.processor()}",
        "cpu_count": __import__("os").cpu_count(),
        "runs": [],
    }
    with tempfile.TemporaryDirectory() as tmp:
        cat = Path(tmp) / "cat.fits"
        make_catalog(args.n, cat)
        simulate_file(cat, Path(tmp) / "warm.h5", workers=1, chunk=200)  # warm GalSim caches (per-n tables)
        for workers in (1, 2):
            t0 = time.perf_counter()
            simulate_file(cat, Path(tmp) / f"w{workers}.h5", workers=workers, chunk=250)
            dt = time.perf_counter() - t0
            results["runs"].append(
                {"workers": workers, "wall_s": round(dt, 2), "galaxies_per_s": round(args.n / dt, 1)}
            )
            print(f"workers={workers}: {args.n / dt:.1f} galaxies/s ({dt:.1f} s, incl. cluster start)")
    results["peak_rss_mib_main_process"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    write_text(args.out, json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
