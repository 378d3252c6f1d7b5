"""``csstz demo``: the whole chain on the embedded real-galaxy default, ending in one report.

Steps: build a dataset from the embedded SDSS/kcorrect population -> the
paper's Figs. 1-5 for it -> train the default p(z) estimator and, beside it, the
paper's CNN and BNN head on its frozen backbone, each with its calibration
(validation split only) -> predict the test split with all three -> the
template-fitting baseline on the same test spectra -> one report comparing
p(z), BNN, CNN and templates.

Two plans: ``QUICK`` (``--quick``; about 5 minutes on 2 cores) and
``STANDARD`` (the documented accuracy benchmark of ``benchmarks/bench_accuracy.py``).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .config import DEFAULT_SEED, PredictConfig
from .io.atomic import atomic_path
from .train.config import QUICK as TRAIN_QUICK

if TYPE_CHECKING:
    from astropy.table import Table
    from rich.console import Console

    from ._types import PathLike


@dataclass(frozen=True)
class DemoPlan:
    """Sizes of a demo run.

    Attributes
    ----------
    n_galaxies : int
        Galaxies in the dataset (split 8:1:1).
    train : dict
        Overrides of :class:`csstz.train.config.TrainConfig`.
    samples : int
        Stochastic BNN passes per spectrum.
    pz : dict
        Overrides of :class:`csstz.config.PzConfig`.
    paper : bool
        Also train and report the paper's CNN + BNN.
    learned_basis : bool
        Also run the template fit with the basis learned from the training split (beside kcorrect's).
    """

    name: str
    n_galaxies: int
    train: dict = field(default_factory=dict)
    samples: int = PredictConfig.samples
    pz: dict = field(default_factory=dict)
    paper: bool = True
    learned_basis: bool = False


# quick: <= 10 min on 2 cores (README); 8,000 galaxies, p(z) estimator 160k samples, paper 10+4 epochs
QUICK = DemoPlan(
    "quick",
    n_galaxies=8000,
    train=dict(TRAIN_QUICK, epochs=10, bnn_epochs=4),
    pz=dict(max_samples=160_000, eval_every=40_000),
)
STANDARD = DemoPlan(
    "standard",
    n_galaxies=20000,
    train=dict(epochs=25, bnn_epochs=10, batch_size=64, calib_samples=100, progress=False),
    pz=dict(max_samples=2_000_000, eval_every=100_000),
    learned_basis=True,
)


def _console() -> Console:
    from rich.console import Console

    return Console(stderr=False, highlight=False)


def _step(console: Console, i: int, n: int, text: str) -> float:
    console.print(f"[bold]\\[{i}/{n}][/bold] {text}")
    return time.perf_counter()


def _example_figures(dataset: Path, cat: Table, out_dir: Path, seed: int) -> list[Path]:
    """Fig. 4/5 for the test galaxy with the median GI SNR, regenerated from its catalogue row."""
    from .instrument import parse_instrument
    from .io.spectra import read_attrs
    from .population.embedded import get_population
    from .simulate.figures import plot_source

    test = cat[cat["SPLIT"] == "test"]
    snr = np.asarray(test["SNR_GI"])
    i = int(np.argsort(snr)[len(snr) // 2])
    row = test[i]
    pop = get_population()
    sed = pop.sed_flam17(np.asarray(row["COEFF"], np.float64), float(row["Z"]))
    inst = parse_instrument(read_attrs(dataset)["instrument"])
    return plot_source(
        pop.wave_aa,
        sed,
        float(row["SHAPE_R"]),
        float(row["SERSIC"]),
        float(row["BA"]),
        float(row["PA"]),
        out_dir,
        targetid=int(row["TARGETID"]),
        seed=seed,
        z=float(row["Z"]),
        instrument=inst,
    )


def run_demo(
    out_dir: PathLike = "demo_out",
    quick: bool = False,
    seed: int = DEFAULT_SEED,
    workers: int | None = None,
    plan: DemoPlan | None = None,
) -> dict:
    """Run the whole chain and write ``out_dir/report/report.html``.

    Returns
    -------
    dict
        Headline metrics per method, wall times per step and the report path.
    """
    from .build import build_dataset
    from .config import PzConfig
    from .evaluate.report import write_report
    from .io.predictions import read_predictions, write_predictions
    from .io.spectra import read_catalog, read_spectra
    from .pipeline import predict_calibrated, train_and_calibrate
    from .population.figures import plot_dataset_figures
    from .templates.fit import fit_templates
    from .train.config import TrainConfig

    plan = plan or (QUICK if quick else STANDARD)
    workers = workers or min(2, os.cpu_count() or 1)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    console = _console()
    times = {}
    n_steps = 7
    console.print(f"csstz demo ({plan.name}): {plan.n_galaxies} galaxies, seed {seed}, {workers} workers -> {out}")

    t = _step(console, 1, n_steps, "building the dataset from the embedded SDSS/kcorrect population")
    dataset = out / "dataset.h5"
    build_dataset(dataset, plan.n_galaxies, seed=seed, workers=workers, progress=True)
    times["build_s"] = time.perf_counter() - t

    t = _step(console, 2, n_steps, "figures of the dataset (paper Figs. 1-5)")
    fig_dir = out / "figures"
    cat = read_catalog(dataset)
    data_figs = list(plot_dataset_figures(dataset, fig_dir)) + _example_figures(dataset, cat, fig_dir, seed)
    times["figures_s"] = time.perf_counter() - t

    t = _step(console, 3, n_steps, "training the p(z) estimator and its calibration (validation split)")
    run_pz = out / "run_pz"
    pz_summary = train_and_calibrate(dataset, run_pz, TrainConfig(seed=seed, estimator="pz"), pz=PzConfig(**plan.pz))
    times["train_pz_s"] = time.perf_counter() - t
    run_dir = out / "run"
    config = TrainConfig(seed=seed, estimator="paper", **plan.train)
    summary = {"cnn": {}, "bnn": {}}
    if plan.paper:
        t = _step(console, 4, n_steps, "training the paper's CNN, its BNN head and the calibration (validation split)")
        summary = train_and_calibrate(dataset, run_dir, config)
        times["train_paper_s"] = time.perf_counter() - t

    what = f"p(z); BNN with {plan.samples} passes; CNN" if plan.paper else "p(z)"
    t = _step(console, 5, n_steps, f"predicting the test split ({what})")
    preds = {}
    runs = (("p(z)", run_pz, "pz"), ("BNN", run_dir, "bnn"), ("CNN", run_dir, "cnn"))
    for label, rdir, model in runs if plan.paper else runs[:1]:
        path = out / f"pred_{model}.fits"  # the p(z) estimator first: the report's primary method
        t_m = time.perf_counter()
        predict_calibrated(rdir, dataset, path, samples=plan.samples, split="test", seed=seed, model=model)
        preds[label] = read_predictions(path)
        if model == "pz":
            pz_predict_s = time.perf_counter() - t_m
    times["predict_s"] = time.perf_counter() - t

    t = _step(console, 6, n_steps, "template-fitting baseline on the same test spectra")
    test_rows = np.flatnonzero(np.asarray(cat["SPLIT"]) == "test")
    spectra = read_spectra(dataset, bands=config.bands, rows=test_rows)
    # each galaxy's own shape broadens its lines (CSST images the same galaxies): a fair baseline
    tmpl = fit_templates(spectra, bands=config.bands, workers=workers, progress=True, lsf="morphology")
    write_predictions(out / "pred_templates.fits", tmpl, header={"METHOD": "templates", "LSF": "morphology"})
    preds["templates"] = tmpl
    if plan.learned_basis:  # the basis learned from the training split's SEDs: not the generating one
        tl = fit_templates(
            spectra, bands=config.bands, workers=workers, progress=True, lsf="morphology", basis=f"learned:{dataset}"
        )
        write_predictions(out / "pred_templates_learned.fits", tl, header={"METHOD": "templates-learned"})
        preds["templates (learned basis)"] = tl
    times["templates_s"] = time.perf_counter() - t

    t = _step(console, 7, n_steps, "evaluating and writing the report")
    truth = cat[test_rows]
    notes = {
        "plan": plan.name,
        "galaxies": plan.n_galaxies,
        "test spectra": len(test_rows),
        "seed": seed,
        "p(z) samples seen": pz_summary["fit"]["samples_seen"],
        "p(z) temperature": round(pz_summary["calibration"]["temperature"], 3),
        "CNN epochs run": summary["cnn"].get("epochs_run", "not run"),
        "BNN epochs run": summary["bnn"].get("epochs_run", "not run"),
        "BNN passes": plan.samples if plan.paper else "not run",
    }
    notes.update({k: f"{v:.0f} s" for k, v in times.items()})
    metrics = write_report(out / "report", preds, truth, extra_figures=data_figs, notes=notes)
    times["report_s"] = time.perf_counter() - t
    times["total_s"] = sum(times.values())

    headline = {}
    for label in preds:
        entry = metrics["methods"][label]
        headline[label] = {k: entry.get(k) for k in ("n", "sigma_nmad", "eta", "ebar", "coverage_68", "coverage_95")}
    result = {
        "plan": asdict(plan),
        "seed": seed,
        "headline": headline,
        "times": times,
        "report": str(out / "report" / "report.html"),
        # the default estimator's own chain (issue 8's budget): build + train/calibrate + predict the test split
        "pz_chain_s": times["build_s"] + times["train_pz_s"] + pz_predict_s,
        "train_summary": summary,
        "pz_summary": pz_summary,
    }
    with atomic_path(out / "demo_summary.json") as tmp:
        tmp.write_text(json.dumps(result, indent=2, default=str))
    console.print("\n[bold]Headline (test split)[/bold]")
    for label, h in headline.items():
        ebar = "" if h.get("ebar") is None else f"  E_bar {h['ebar']:.4f}"
        cov = "" if h.get("coverage_68") is None else f"  68% coverage {h['coverage_68']:.3f}"
        console.print(f"  {label:26s} sigma_NMAD {h['sigma_nmad']:.4f}  eta {100 * h['eta']:.2f}%{ebar}{cov}")
    console.print(f"total {times['total_s']:.0f} s; report: {result['report']}")
    return result


__all__ = ["DemoPlan", "QUICK", "STANDARD", "run_demo"]
