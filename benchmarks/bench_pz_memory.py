"""Peak memory of the default p(z) estimator against dataset size: training and prediction.

Training: ``csstz train --estimator pz`` for a fixed, short budget (``--samples``) on datasets of different
sizes (e.g. 8,000 and 20,000 galaxies): the training blocks, the 4,000-spectrum feature density and the
validation curves are bounded, so the peak should not grow with the training split. Prediction: ``csstz
predict`` of splits of different size of one dataset: the blocks are bounded and the p(z) (832 float32 per
spectrum) go to a spool file and are streamed into the FITS file (0.5.1), so only the per-spectrum scalars (Z,
intervals, flags) grow as N; the slope per spectrum is reported. Peak resident memory (RSS) and proportional
set size (PSS: shared pages of the forked physics workers counted once) of the whole process tree, polled every
0.1 s; prediction with 1 and 2 workers.

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

from timing import run_peak_memory

from csstz.io.run_dir import write_text

CLI = [sys.executable, "-c", "import sys; from csstz.cli import main; sys.exit(main(sys.argv[1:]))"]


def _measure(cmd: list[str], env: dict, **labels: object) -> dict:
    """Run ``cmd``; ``labels`` plus its wall time and peak RSS / PSS [MiB] (printed as well)."""
    wall, peak, pss = run_peak_memory(cmd, env)
    row = {
        **labels,
        "wall_s": round(wall, 1),
        "peak_rss_mib": round(peak / 2**20),
        "peak_pss_mib": None if pss is None else round(pss / 2**20),
    }
    print(row, flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", nargs="+", required=True, help="datasets of different sizes (csstz build files)")
    ap.add_argument("--run", required=True, help="a trained p(z) run for the prediction rows")
    ap.add_argument("--samples", type=int, default=20000, help="training samples per training run")
    ap.add_argument("--splits", nargs="+", default=["test", "train"], help="splits of the last dataset to predict")
    ap.add_argument("--workers", nargs="+", type=int, default=[1, 2], help="csstz predict --workers values")
    ap.add_argument(
        "--malloc-trim-threshold",
        type=int,
        default=None,
        help="MALLOC_TRIM_THRESHOLD_ [bytes] of the runs (default: unset, glibc's dynamic thresholds; 131072 "
        "fixes them and returns freed memory eagerly); results then go to pz_memory_trim<N>.json",
    )
    args = ap.parse_args()

    from csstz.io.spectra import read_catalog, split_rows

    env = dict(os.environ, OMP_NUM_THREADS="2")
    if args.malloc_trim_threshold is not None:
        env["MALLOC_TRIM_THRESHOLD_"] = str(args.malloc_trim_threshold)
    train, predict = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for ds in args.data:
            n = len(read_catalog(ds))
            out = Path(tmp) / f"run_{n}"
            cmd = CLI + ["train", ds, "--out", str(out), "--estimator", "pz", "--no-progress"]
            cmd += ["--pz-max-samples", str(args.samples), "--pz-eval-every", str(args.samples)]
            train.append(_measure(cmd, env, dataset=ds, n_galaxies=n))
        ds = args.data[-1]
        for split in args.splits:
            n = int(split_rows(ds, split).size)
            cmd = CLI + ["predict", args.run, ds, "--split", split, "--out", str(Path(tmp) / f"p_{split}.fits")]
            for workers in args.workers:
                cmd_w = [*cmd, "--workers", str(workers)]
                predict.append(_measure(cmd_w, env, split=split, n_spectra=n, workers=workers))

    def slope(rows: list, n_key: str, key: str) -> float | None:
        """KiB per unit of ``n_key`` between the smallest and the largest run."""
        if len(rows) < 2 or rows[0].get(key) is None:
            return None
        a, b = sorted(rows, key=lambda r: r[n_key])[:: len(rows) - 1]
        return round((b[key] - a[key]) * 1024 / max(b[n_key] - a[n_key], 1), 2)

    from csstz import __version__

    result = {
        "benchmark": "pz_memory",
        "csstz_version": __version__,
        # the locator's rendered templates (0.10.0) are part of the prediction peak: say which the run has
        "predict_run_locator": "nnls" if (Path(args.run) / "pz_locator.fits").is_file() else "prior",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "train_samples": args.samples,
        "malloc_trim_threshold": args.malloc_trim_threshold or "unset (glibc's dynamic thresholds)",
        "train": train,
        "predict_run": args.run,
        "predict": predict,
        "train_kib_per_galaxy": {k: slope(train, "n_galaxies", k) for k in ("peak_rss_mib", "peak_pss_mib")},
        "predict_kib_per_spectrum": {
            f"workers_{w}": {
                k: slope([r for r in predict if r["workers"] == w], "n_spectra", k)
                for k in ("peak_rss_mib", "peak_pss_mib")
            }
            for w in args.workers
        },
    }
    suffix = "" if args.malloc_trim_threshold is None else f"_trim{args.malloc_trim_threshold}"
    out = Path(__file__).parent / "results" / f"pz_memory{suffix}.json"
    write_text(out, json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
