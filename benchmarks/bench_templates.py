"""Benchmark: template-fitting baseline speed (spectra/s) with 1 and 2 local workers, plus its accuracy.

Builds a dataset of N galaxies from the embedded real-galaxy population
(``csstz build``, the same simulated CSST spectra the networks see), then times
``csstz.templates.fit.fit_templates`` on GV+GI over z = 0-1.6 with the
default grid (step 5e-4 in ln(1+z)), with the point-source LSF in-process (1 worker)
and with 2 local processes, and with the morphology-aware LSF (2 processes; one
template grid per LSF-width bin, rendering included). The time to render one
template grid is reported separately. Timing runs fit the dataset repeated
TILE = 4 times; the accuracy numbers use each spectrum once.
Accuracy (sigma_NMAD, eta, coverage) on these spectra is a by-product.
Writes ``benchmarks/results/templates.json``.

    python benchmarks/bench_templates.py [--n 1000] [--seed 5]
"""

from __future__ import annotations

import os

# one BLAS thread per process, set before numpy loads: "1 worker" then means one core
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from astropy.table import vstack

from csstz import __version__
from csstz.evaluate import metrics
from csstz.instrument import load_instrument
from csstz.io.run_dir import write_text
from csstz.io.spectra import BandSpectra, SpectraSet, read_spectra
from csstz.templates.fit import DEFAULT_DLNZ, fit_templates, template_model_for

#: Timing runs fit the dataset repeated this many times.
TILE = 4


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("--dataset", default=None, help="use this spectra file instead of building one")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "templates.json"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = args.dataset
        build_s = None
        if path is None:
            path = str(Path(tmp) / "ds.h5")
            t0 = time.perf_counter()
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "csstz.cli",
                    "build",
                    "--n",
                    str(args.n),
                    "--out",
                    path,
                    "--seed",
                    str(args.seed),
                    "--no-progress",
                ],
                check=True,
                capture_output=True,
            )
            build_s = time.perf_counter() - t0
        spectra = read_spectra(path, bands=("GV", "GI"))
    inst = load_instrument()
    waves = {b: spectra.bands[b].wave_aa for b in ("GV", "GI")}
    t0 = time.perf_counter()
    model = template_model_for(waves, inst)
    grid_s = time.perf_counter() - t0
    runs, accuracy = {}, {}
    z_true = np.asarray(spectra.catalog["Z"], float)
    # timing on the spectra repeated TILE times (long enough that pool start-up does not dominate)
    tiled = SpectraSet(
        {
            b: BandSpectra(v.wave_aa, np.tile(v.flux, (TILE, 1)), np.tile(v.err, (TILE, 1)))
            for b, v in spectra.bands.items()
        },
        vstack([spectra.catalog] * TILE),
        spectra.attrs,
    )
    n = len(spectra)
    for lsf, workers in (("point", 1), ("point", 2), ("morphology", 2)):
        t0 = time.perf_counter()
        tab = fit_templates(tiled, workers=workers, instrument=inst, lsf=lsf)
        wall = time.perf_counter() - t0
        runs[f"{lsf}_workers_{workers}"] = {
            "n_spectra": len(tab),
            "wall_s": round(wall, 2),
            "spectra_per_s": round(len(tab) / wall, 1),
        }
        tab = tab[:n]
        good = np.isfinite(tab["Z"])
        acc = metrics.summary(np.asarray(tab["Z"])[good], z_true[good], np.asarray(tab["ZERR"])[good])
        acc["n_failed"] = int((~good).sum())
        acc["zwarn_fraction"] = float(np.mean(tab["ZWARN"] != 0))
        ok0 = good & (np.asarray(tab["ZWARN"]) == 0)
        acc["zwarn0"] = metrics.summary(np.asarray(tab["Z"])[ok0], z_true[ok0], np.asarray(tab["ZERR"])[ok0])
        snr = np.asarray(spectra.catalog["SNR_GI"], float) if "SNR_GI" in spectra.catalog.colnames else None
        if snr is not None:
            acc["by_snr_gi"] = [
                {k: (str(v) if isinstance(v, float) and not np.isfinite(v) else v) for k, v in row.items()}
                for row in metrics.binned(
                    np.asarray(tab["Z"])[good],
                    z_true[good],
                    np.asarray(tab["ZERR"])[good],
                    by=snr[good],
                    edges=metrics.SNR_EDGES,
                )
            ]
        accuracy[lsf] = acc
    results = {
        "benchmark": "templates",
        "csstz_version": __version__,
        "date_utc": time.strftime("%Y-%m-%dT%H:%MZ", time.gmtime()),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "load_average_1_5_15min": [round(x, 2) for x in os.getloadavg()],
            "note": "shared 2-core machine: a load above 2 means other jobs took CPU during the runs",
        },
        "dataset": {
            "n": len(tab),
            "source": "embedded population (csstz build)" if args.dataset is None else args.dataset,
            "seed": args.seed,
            "build_s": build_s,
        },
        "grid": {
            "n_z": int(model.z.size),
            "dlnz": DEFAULT_DLNZ,
            "zmin": 0.0,
            "zmax": 1.6,
            "bands": "GV,GI",
            "n_templates": model.n_templates,
            "render_s": round(grid_s, 2),
        },
        "runs": runs,
        "accuracy": accuracy,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text(out, json.dumps(results, indent=1))
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
