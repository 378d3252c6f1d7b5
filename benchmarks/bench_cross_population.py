"""Cross-population benchmark: train on population A, test on population B.

Populations (each ``--n`` galaxies, seed 0, split 8:1:1, the same n(z) and
15 < m_GI < 21 selection):

* ``embedded``: the SDSS/kcorrect galaxies (``csstz build``, the default source);
* ``sps``: stellar-population synthesis with nebular emission (``--source sps``,
  needs the optional extra ``csstz[sps]``);
* ``mixed``: half of each (``--source embedded,sps --mix 0.5``).

Methods (every row is on the TEST split of B; the ``val`` rows, on B's validation
split, are what chooses the mixture that generalises best, so the test split
chooses nothing):

* ``paper``: the paper's CNN + MNF BNN, trained on A (``csstz train --model paper``);
* ``pz``: the default p(z) estimator, trained on A (``csstz train --model pz``);
* ``templates-kcorrect``: the template fit with kcorrect's 5 NMF templates (no
  training; in-family for ``embedded`` because that basis generated those SEDs);
* ``templates-learned``: the template fit with a basis learned from A's training
  split rest-frame SEDs (``--basis learned:A.h5``).

Everything goes through the public command line, each step is skipped when its
output exists (resumable: run it again after a kill), and the wall time of every
step is recorded (the JSON's ``step_times_s`` holds the steps of the last invocation
only). Results: ``benchmarks/results/cross_population.json``. Run time from scratch at the
default sizes: about 50 minutes on 2 cores (paper networks 14 min, p(z) networks 600k samples each, ~25 min).

    python benchmarks/bench_cross_population.py [--n 8000] [--work DIR] [--methods paper,pz,templates] [--keep]

``--keep`` re-runs only ``--methods`` and carries the other methods' rows over from the existing JSON; every
row records the csstz version that made it.
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

from csstz.io.run_dir import write_text

POPULATIONS = {
    "embedded": ["--source", "embedded"],
    "sps": ["--source", "sps"],
    "mixed": ["--source", "embedded,sps", "--mix", "0.5"],
}
KEYS = ("n", "sigma_nmad", "eta", "ebar", "coverage_68", "coverage_95", "by_snr_gi")


def _csstz() -> str:
    exe = Path(sys.executable).with_name("csstz")
    return str(exe) if exe.exists() else (shutil.which("csstz") or "csstz")


class Missing(Exception):
    """A step's output is absent and ``--collect-only`` forbids running it."""


class Runner:
    """Runs CLI steps once each, timing them and skipping those already done."""

    def __init__(self, work: Path, collect_only: bool = False) -> None:
        self.work = work
        self.collect_only = collect_only
        self.times: dict = {}

    def step(self, name: str, output: Path, args: list) -> Path:
        if output.exists():
            return output
        if self.collect_only:
            raise Missing(name)
        t0 = time.perf_counter()
        print(f"[cross] {name}: csstz {' '.join(args)}", flush=True)
        subprocess.run([_csstz(), *args], check=True)
        self.times[name] = round(time.perf_counter() - t0, 1)
        return output

    def maybe(self, name: str, output: Path, args: list) -> Path | None:
        """:meth:`step`, or None when ``--collect-only`` finds no output."""
        try:
            return self.step(name, output, args)
        except Missing:
            return None


def _metrics(runner: Runner, pred: Path, truth: Path, label: str) -> dict:
    rep = pred.with_suffix("")
    runner.step(
        f"evaluate {pred.name}",
        rep / "metrics.json",
        ["evaluate", str(pred), "--truth", str(truth), "--out", str(rep), "--label", label],
    )
    m = json.loads((rep / "metrics.json").read_text())
    return {**{k: m.get(k) for k in KEYS}, **_flags(pred, truth)}


def matched(pred: Path, truth: Path) -> tuple:
    """A predictions file and its truth catalogue rows, both ordered by TARGETID (matched by
    ``csstz.evaluate.report.match_truth``, which refuses duplicates and predictions without truth), so that
    two predictions files of the same galaxies line up row by row."""
    import numpy as np

    from csstz.evaluate.report import match_truth
    from csstz.io.predictions import read_predictions
    from csstz.io.spectra import read_catalog

    tab, cat = read_predictions(pred), read_catalog(truth)
    _, idx = match_truth(tab, cat, label=str(pred))
    order = np.argsort(np.asarray(tab["TARGETID"], np.int64), kind="stable")
    return tab[order], cat[idx[order]]


def _flags(pred: Path, truth: Path) -> dict:
    """How often OUT_OF_DISTRIBUTION (and MULTIMODAL) are set, overall and on the outliers."""
    import numpy as np

    from csstz.evaluate.metrics import OUTLIER_THRESHOLD
    from csstz.zwarn import ZWARN

    tab, cat = matched(pred, truth)
    z = np.asarray(cat["Z"], np.float64)
    out = np.abs(np.asarray(tab["Z"], np.float64) - z) / (1 + z) > OUTLIER_THRESHOLD
    w = np.asarray(tab["ZWARN"], np.int64)
    ood = (w & int(ZWARN.OUT_OF_DISTRIBUTION)) > 0
    mm = (w & int(ZWARN.MULTIMODAL)) > 0
    return {
        "ood_flagged": float(ood.mean()),
        "n_outliers": int(out.sum()),
        "outliers_ood_flagged": float(ood[out].mean()) if out.any() else None,
        "outliers_ood_or_multimodal": float((ood | mm)[out].mean()) if out.any() else None,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=8000)
    ap.add_argument("--work", default="benchmarks/_work/cross")
    ap.add_argument("--methods", default="paper,pz,templates")
    ap.add_argument("--epochs", type=int, default=8, help="paper CNN epochs (BNN head: half)")
    ap.add_argument("--pz-max-samples", type=int, default=600_000, help="p(z) training samples (fresh noise draws)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument(
        "--keep",
        action="store_true",
        help="carry over the rows of methods not in --methods from the existing results JSON "
        "(each tagged with the csstz version that made it)",
    )
    ap.add_argument(
        "--collect-only",
        action="store_true",
        help="run nothing: tabulate the steps whose outputs exist (an interrupted run)",
    )
    args = ap.parse_args()
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    run = Runner(work, collect_only=args.collect_only)
    t_start = time.perf_counter()
    data = {}
    for pop, src in POPULATIONS.items():
        data[pop] = run.step(
            f"build {pop}",
            work / f"{pop}.h5",
            [
                "build",
                "--n",
                str(args.n),
                "--seed",
                "0",
                "--workers",
                str(args.workers),
                "--out",
                str(work / f"{pop}.h5"),
                "--no-progress",
                *src,
            ],
        )
    budget = {
        "paper": ["--epochs", str(args.epochs), "--bnn-epochs", str(max(1, args.epochs // 2))],
        "pz": ["--pz-max-samples", str(args.pz_max_samples)],
    }
    rows = []
    for a in POPULATIONS:
        runs = {}
        for method in ("paper", "pz"):
            if method in methods:
                runs[method] = run.maybe(
                    f"train {method} on {a}",
                    work / f"run_{method}_{a}" / "summary.json",
                    [
                        "train",
                        str(data[a]),
                        "--out",
                        str(work / f"run_{method}_{a}"),
                        "--model",
                        method,
                        *budget[method],
                        "--no-progress",
                    ],
                )
        runs = {m: r.parent for m, r in runs.items() if r is not None}
        for b in POPULATIONS:
            for split in ("val", "test"):
                for method, rdir in runs.items():
                    pred = work / f"pred_{method}_{a}_on_{b}_{split}.fits"
                    run.maybe(
                        f"predict {method} {a}->{b} {split}",
                        pred,
                        ["predict", str(rdir), str(data[b]), "--split", split, "--out", str(pred)],
                    )
                    if not pred.exists():
                        continue
                    rows.append(
                        {
                            "method": method,
                            "train": a,
                            "test": b,
                            "split": split,
                            **_metrics(run, pred, data[b], method),
                        }
                    )
                if "templates" in methods and split == "test":  # nothing to choose for templates: no val rows
                    pred = work / f"pred_templates-learned_{a}_on_{b}_{split}.fits"
                    run.maybe(
                        f"fit learned basis {a}->{b} {split}",
                        pred,
                        [
                            "fit-templates",
                            str(data[b]),
                            "--split",
                            split,
                            "--lsf",
                            "morphology",
                            "--basis",
                            f"learned:{data[a]}",
                            "--workers",
                            str(args.workers),
                            "--no-progress",
                            "--out",
                            str(pred),
                        ],
                    )
                    if not pred.exists():
                        continue
                    rows.append(
                        {
                            "method": "templates-learned",
                            "train": a,
                            "test": b,
                            "split": split,
                            **_metrics(run, pred, data[b], "templates-learned"),
                        }
                    )
    if "templates" in methods:
        for b in POPULATIONS:
            for split in ("test",):
                pred = work / f"pred_templates-kcorrect_{b}_{split}.fits"
                run.maybe(
                    f"fit kcorrect basis on {b} {split}",
                    pred,
                    [
                        "fit-templates",
                        str(data[b]),
                        "--split",
                        split,
                        "--lsf",
                        "morphology",
                        "--basis",
                        "kcorrect",
                        "--workers",
                        str(args.workers),
                        "--no-progress",
                        "--out",
                        str(pred),
                    ],
                )
                if not pred.exists():
                    continue
                rows.append(
                    {
                        "method": "templates-kcorrect",
                        "train": "-",
                        "test": b,
                        "split": split,
                        **_metrics(run, pred, data[b], "templates-kcorrect"),
                    }
                )
    from csstz import __version__

    for r in rows:
        r["csstz_version"] = __version__
    out = Path(__file__).parent / "results" / "cross_population.json"
    if args.keep and out.is_file():
        old = json.loads(out.read_text())
        for r in old.get("rows", []):
            base = "templates" if r["method"].startswith("templates") else r["method"]
            if base not in methods:
                rows.append({**r, "csstz_version": r.get("csstz_version", old.get("csstz_version"))})
    best = {}
    for method in {r["method"] for r in rows if r["train"] != "-"}:
        # the training population whose worst validation eta over the test populations is lowest
        worst = {}
        for r in rows:
            if r["method"] == method and r["split"] == "val" and r["eta"] is not None:
                worst[r["train"]] = max(worst.get(r["train"], 0.0), r["eta"])
        if worst:
            best[method] = min(worst, key=worst.get)
    result = {
        "benchmark": "cross_population",
        "csstz_version": __version__,
        "n_per_population": args.n,
        "seed": 0,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "wall_s": round(time.perf_counter() - t_start, 1),
        "collected_only": bool(args.collect_only),
        "step_times_s": run.times,
        "budgets": {
            "paper_epochs": args.epochs,
            "paper_bnn_epochs": max(1, args.epochs // 2),
            "pz_max_samples": args.pz_max_samples,
        },
        "best_training_population_by_val": best,
        "rows": rows,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text(out, json.dumps(result, indent=1, default=str))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
