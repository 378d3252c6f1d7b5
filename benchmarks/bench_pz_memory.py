"""Peak memory of the default p(z) estimator against dataset size: training and prediction.

Training: ``csstz train --estimator pz`` for a fixed, short budget (``--samples``) on datasets of different
sizes (e.g. 8,000 and 20,000 galaxies): the training blocks, the 4,000-spectrum feature density and the
validation curves are bounded, so the peak should not grow with the training split. Prediction: ``csstz
predict`` of ``--rows`` rows of one dataset: the streamed blocks are bounded; the output (Z, flags, and a
p(z) of 832 float32 per spectrum, written to the FITS file at the end) grows as N, and the slope per spectrum
is reported. Peak resident memory of the whole process tree, polled every 0.1 s.

    python benchmarks/bench_pz_memory.py --data SMALL.h5 LARGE.h5 --run RUN_DIR [--samples 20000]

Results: ``benchmarks/results/pz_memory.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
from pathlib import Path

from timing import run_peak_rss

CLI = [sys.executable, "-c", "import sys; from csstz.cli import main; sys.exit(main(sys.argv[1:]))"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", nargs="+", required=True, help="datasets of different sizes (csstz build files)")
    ap.add_argument("--run", required=True, help="a trained p(z) run for the prediction rows")
    ap.add_argument("--samples", type=int, default=20000, help="training samples per training run")
    ap.add_argument("--splits", nargs="+", default=["test", "train"], help="splits of the last dataset to predict")
    args = ap.parse_args()

    from csstz.io.spectra import read_catalog, split_rows

    env = dict(os.environ, OMP_NUM_THREADS="2")
    train, predict = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for ds in args.data:
            n = len(read_catalog(ds))
            out = Path(tmp) / f"run_{n}"
            cmd = CLI + ["train", ds, "--out", str(out), "--estimator", "pz", "--no-progress"]
            cmd += ["--pz-max-samples", str(args.samples), "--pz-eval-every", str(args.samples)]
            wall, peak = run_peak_rss(cmd, env)
            train.append(
                {"dataset": ds, "n_galaxies": n, "wall_s": round(wall, 1), "peak_rss_mib": round(peak / 2**20)}
            )
            print(train[-1], flush=True)
        ds = args.data[-1]
        for split in args.splits:
            n = int(split_rows(ds, split).size)
            cmd = CLI + ["predict", args.run, ds, "--split", split, "--out", str(Path(tmp) / f"p_{split}.fits")]
            wall, peak = run_peak_rss(cmd, env)
            predict.append(
                {"split": split, "n_spectra": n, "wall_s": round(wall, 1), "peak_rss_mib": round(peak / 2**20)}
            )
            print(predict[-1], flush=True)
    slope = None
    if len(predict) >= 2:
        a, b = sorted(predict, key=lambda r: r["n_spectra"])[:: len(predict) - 1]
        slope = round((b["peak_rss_mib"] - a["peak_rss_mib"]) * 1024 / max(b["n_spectra"] - a["n_spectra"], 1), 2)
    result = {
        "benchmark": "pz_memory",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "train_samples": args.samples,
        "train": train,
        "predict_run": args.run,
        "predict": predict,
        "predict_kib_per_spectrum": slope,
    }
    out = Path(__file__).parent / "results" / "pz_memory.json"
    out.write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
