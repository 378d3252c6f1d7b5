"""Accuracy benchmark: the documented standard run of the whole chain.

Plan ``csstz.demo.STANDARD`` (20,000 embedded real galaxies, split 8:1:1,
seed 0, CNN 25 epochs, BNN head 10 epochs, 200 passes, Beta calibration on the
validation split) or ``--quick`` for the demo plan. It writes
``benchmarks/results/accuracy[_quick].json``: sigma_NMAD, eta, E_bar, coverage
and the per-z and per-GI-SNR numbers for the CNN, the BNN and the template
baseline on the test split, with the wall time of each step, next to the
paper's numbers.

    python benchmarks/bench_accuracy.py [--quick] [--out-dir DIR]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import tempfile
from pathlib import Path

from csstz import __version__
from csstz.demo import QUICK, STANDARD, run_demo
from csstz.io.run_dir import write_text

PAPER = {
    "CNN": {"sigma_nmad": 0.00047, "eta": 0.00954},
    "BNN": {"sigma_nmad": 0.00063, "eta": 0.0092, "ebar": 0.00228},
    "templates": {"sigma_nmad": "about 0.01 (text)"},
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out-dir", default=None, help="keep the run here (default: a temporary directory)")
    ap.add_argument(
        "--no-paper",
        action="store_true",
        help="skip the paper's CNN + BNN (the default estimator and the template fits only; results -> *_pz.json)",
    )
    args = ap.parse_args()
    plan = QUICK if args.quick else STANDARD
    if args.no_paper:
        plan = dataclasses.replace(plan, paper=False)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out_dir or tmp)
        res = run_demo(out, seed=0, plan=plan)
        metrics = json.loads((out / "report" / "metrics.json").read_text())
    result = {
        "benchmark": "accuracy",
        "csstz_version": __version__,
        "plan": res["plan"],
        "seed": 0,
        "machine": f"{platform.machine()}, {__import__('os').cpu_count()} cores",
        "times_s": res["times"],
        "methods": {
            k: {
                key: v.get(key)
                for key in (
                    "n",
                    "sigma_nmad",
                    "eta",
                    "ebar",
                    "bias",
                    "coverage_68",
                    "coverage_95",
                    "crps",
                    "by_z",
                    "by_snr_gi",
                )
            }
            for k, v in metrics["methods"].items()
        },
        "calibration": res["train_summary"].get("calibration"),
        "pz_chain_s": res["pz_chain_s"],
        "pz_fit": {k: v for k, v in res["pz_summary"]["fit"].items()},
        "pz_calibration": res["pz_summary"].get("calibration"),
        "nmad_over_crb": {
            k: {"crb_median": v.get("crb_median"), "nmad_over_crb": v.get("nmad_over_crb")}
            for k, v in metrics["methods"].items()
        },
        # each method's p(z) (PZ HDU): CRPS, PIT and the coverage of its central intervals ("crps" above is that
        # of Z +- ZERR as a Gaussian)
        "pz_metrics": {k: v.get("pz") for k, v in metrics["methods"].items()},
        "paper": PAPER,
    }
    name = f"accuracy{'_quick' if args.quick else ''}{'_pz' if args.no_paper else ''}.json"
    path = Path(__file__).parent / "results" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, json.dumps(result, indent=1, default=str))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
