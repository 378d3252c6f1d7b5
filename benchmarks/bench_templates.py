"""Benchmark: template-fitting baseline speed (spectra/s) with 1 and 2 local workers, plus its accuracy.

Builds a dataset of N galaxies from the embedded real-galaxy population
(``csstz build``, the same simulated CSST spectra the networks see), then times
``csstz.evaluate.templates.fit_templates`` on GV+GI over z = 0-1.6 with the
default grid (step 5e-4 in ln(1+z)), once in-process (1 worker) and once with 2
local processes. The time to render the template grid is reported separately.
Accuracy (sigma_NMAD, eta, coverage) on these spectra is a by-product.
Writes ``benchmarks/results/templates.json``.

    python benchmarks/bench_templates.py [--n 1000] [--seed 5]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from csstz import __version__
from csstz.evaluate import metrics
from csstz.evaluate.templates import DEFAULT_DLNZ, fit_templates, template_model_for
from csstz.instrument import load_instrument
from csstz.io.spectra import read_spectra


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("--dataset", default=None, help="use this spectra file instead of building one")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "templates.json"))
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    with tempfile.TemporaryDirectory() as tmp:
        path = args.dataset
        build_s = None
        if path is None:
            path = str(Path(tmp) / "ds.h5")
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-m", "csstz.cli", "build", "--n", str(args.n), "--out", path,
                            "--seed", str(args.seed), "--no-progress"], check=True, capture_output=True)
            build_s = time.perf_counter() - t0
        spectra = read_spectra(path, bands=("GV", "GI"))
    inst = load_instrument()
    waves = {b: spectra.bands[b].wave_aa for b in ("GV", "GI")}
    t0 = time.perf_counter()
    model = template_model_for(waves, inst)
    grid_s = time.perf_counter() - t0
    runs = {}
    tab = None
    for workers in (1, 2):
        t0 = time.perf_counter()
        tab = fit_templates(spectra, workers=workers, instrument=inst)
        wall = time.perf_counter() - t0
        runs[f"workers_{workers}"] = {"wall_s": round(wall, 2), "spectra_per_s": round(len(tab) / wall, 1)}
    z_true = np.asarray(spectra.catalog["Z"], float)
    good = np.isfinite(tab["Z"])
    acc = metrics.summary(np.asarray(tab["Z"])[good], z_true[good], np.asarray(tab["ZERR"])[good])
    acc["zwarn_fraction"] = float(np.mean(tab["ZWARN"] != 0))
    ok0 = good & (np.asarray(tab["ZWARN"]) == 0)
    acc["zwarn0"] = metrics.summary(np.asarray(tab["Z"])[ok0], z_true[ok0], np.asarray(tab["ZERR"])[ok0])
    results = {
        "benchmark": "templates", "csstz_version": __version__, "date_utc": time.strftime("%Y-%m-%dT%H:%MZ",
                                                                                         time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "load_average_1_5_15min": [round(x, 2) for x in os.getloadavg()],
                    "note": "shared 2-core machine: a load above 2 means other jobs took CPU during the runs"},
        "dataset": {"n": len(tab), "source": "embedded population (csstz build)" if args.dataset is None
                    else args.dataset, "seed": args.seed, "build_s": build_s},
        "grid": {"n_z": int(model.z.size), "dlnz": DEFAULT_DLNZ, "zmin": 0.0, "zmax": 1.6, "bands": "GV,GI",
                 "n_templates": model.n_templates, "render_s": round(grid_s, 2)},
        "runs": runs,
        "accuracy": acc,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1))
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
