"""Learning curve of the default p(z) estimator: validation sigma_NMAD and eta against training samples seen.

One ``csstz train --model pz`` run per budget (each a full one-cycle schedule of that many fresh noise
draws, on the same dataset and seed), each predicted on the VALIDATION split (calibrated; the test split
is not read) and evaluated. Optional extra points: finished runs of larger budgets (``--runs DIR ...``, e.g.
the standard accuracy run's ``run_pz``). A line ``eta = a + b log10(samples)`` (and the same for
sigma_NMAD) is fitted to the points and extrapolated to 1e6 and 1e7 samples.

    python benchmarks/bench_learning_curve.py --data DATASET.h5 --work DIR [--budgets 10000,30000,100000]
        [--runs DIR ...]

Results: ``benchmarks/results/learning_curve.json``. Resumable: a budget whose run directory holds a
``summary.json`` is not retrained.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from csstz.io.run_dir import write_text


def _csstz() -> str:
    exe = Path(sys.executable).with_name("csstz")
    return str(exe) if exe.exists() else (shutil.which("csstz") or "csstz")


def _val_metrics(run: Path, data: Path) -> dict:
    pred = run / "pred_val.fits"
    rep = run / "report_val"
    if not (rep / "metrics.json").exists():
        subprocess.run([_csstz(), "predict", str(run), str(data), "--split", "val", "--out", str(pred)], check=True)
        subprocess.run([_csstz(), "evaluate", str(pred), "--truth", str(data), "--out", str(rep)], check=True)
    m = json.loads((rep / "metrics.json").read_text())
    s = json.loads((run / "summary.json").read_text())
    fit = s["fit"]
    return {
        "run": str(run),
        "samples": int(fit["samples_seen"]),
        "best_samples": int(fit["best_samples"]),
        "train_wall_s": s["wall_s"],
        "samples_per_s": fit["samples_per_s"],
        "val_sigma_nmad": m["sigma_nmad"],
        "val_eta": m["eta"],
        "val_coverage_68": m.get("coverage_68"),
        "val_coverage_95": m.get("coverage_95"),
        "physics_only_val_eta_grid": fit["history"][0].get("val_eta"),
        "best_val_loss": fit.get("best_val_loss"),
        # CRPS of the calibrated p(z) (PZ HDU) on the validation split
        "val_crps_pz": next(iter(m.get("methods", {}).values()), {}).get("pz", {}).get("crps"),
    }


def _line(x: np.ndarray, y: np.ndarray) -> dict:
    b, a = np.polyfit(np.log10(x), y, 1)
    return {
        "a": float(a),
        "b_per_decade": float(b),
        "at_1e6": float(a + 6 * b),
        "at_1e7": float(a + 7 * b),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--budgets", default="10000,30000,100000")
    ap.add_argument("--runs", nargs="*", default=[], help="finished p(z) runs to add as points")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    data, work = Path(args.data), Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    points = []
    for n in [int(x) for x in args.budgets.split(",") if x]:
        run = work / f"run_{n}"
        if not (run / "summary.json").exists():
            shutil.rmtree(run, ignore_errors=True)
            subprocess.run(
                [
                    _csstz(),
                    "train",
                    str(data),
                    "--out",
                    str(run),
                    "--model",
                    "pz",
                    "--seed",
                    str(args.seed),
                    "--pz-max-samples",
                    str(n),
                    "--pz-eval-every",
                    str(max(n // 5, 2560)),
                    "--no-progress",
                ],
                check=True,
            )
        points.append(_val_metrics(run, data))
    points += [_val_metrics(Path(r), data) for r in args.runs]
    points.sort(key=lambda p: p["samples"])
    x = np.array([p["samples"] for p in points], float)
    result = {
        "benchmark": "learning_curve",
        "dataset": str(data),
        "seed": args.seed,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "wall_s": round(time.perf_counter() - t0, 1),
        "points": points,
        "fit_eta": _line(x, np.array([p["val_eta"] for p in points])) if len(points) >= 2 else None,
        "fit_sigma_nmad": _line(x, np.array([p["val_sigma_nmad"] for p in points])) if len(points) >= 2 else None,
    }
    out = Path(__file__).parent / "results" / "learning_curve.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text(out, json.dumps(result, indent=1))
    print(json.dumps({k: result[k] for k in ("fit_eta", "fit_sigma_nmad")}, indent=1))
    for p in points:
        print(p["samples"], p["val_sigma_nmad"], p["val_eta"], p["samples_per_s"])
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
