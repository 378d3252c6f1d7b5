"""Command line: a thin layer, one library function per command.

``main(argv) -> int``: 0 on success; on bad input a one-line message naming the
file, column or value on stderr and exit status 2. Library modules are imported
lazily so that ``csstz --help`` is fast and torch is loaded only by the
commands that need it.
"""
from __future__ import annotations

import argparse
import os
import sys

from . import __version__
from .errors import CsstzError


def _positive_int(text: str) -> int:
    try:
        val = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if val <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer (got {val})")
    return val


def _nonneg_int(text: str) -> int:
    try:
        val = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if val < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0 (got {val})")
    return val


# --- simulate ---------------------------------------------------------------------------------
def _add_simulate(sub):
    p = sub.add_parser("simulate", help="simulate CSST GU/GV/GI slitless spectra for a FITS catalogue",
                       description="Simulate CSST first-order slitless spectra (2D images, noise, optimal "
                                   "extraction) for the sources of a FITS catalogue (HDUs CATALOG, WAVELENGTH, FLUX).")
    p.add_argument("catalog", help="input FITS catalogue")
    p.add_argument("--out", required=True, help="output spectra file (HDF5)")
    p.add_argument("--seed", type=_nonneg_int, default=0, help="root random seed (default 0)")
    p.add_argument("--noiseless", action="store_true", help="no noise: expected counts only")
    p.add_argument("--save-2d", action="store_true", help="also store the 2D first-order images")
    p.add_argument("--workers", type=_positive_int, default=1, help="local worker processes (default 1)")
    p.add_argument("--scheduler", default=None, help="address of an existing Dask scheduler")
    p.add_argument("--instrument", default=None, help="instrument YAML (default: packaged CSST file)")
    p.add_argument("--bands", default="GU,GV,GI", help="comma-separated bands (default GU,GV,GI)")
    p.set_defaults(func=_run_simulate)


def _run_simulate(a) -> int:
    from .simulate.api import simulate_file
    simulate_file(a.catalog, a.out, seed=a.seed, noiseless=a.noiseless, save_2d=a.save_2d,
                  workers=a.workers, scheduler=a.scheduler, instrument_path=a.instrument,
                  bands=tuple(b.strip() for b in a.bands.split(",") if b.strip()))
    print(f"wrote {a.out}")
    return 0


def _add_plot_spectrum(sub):
    p = sub.add_parser("plot-spectrum", help="draw the paper's Fig. 4 (2D images) and Fig. 5 (1D spectra) "
                                             "for one simulated source")
    p.add_argument("catalog", help="input FITS catalogue (as for simulate)")
    p.add_argument("--targetid", type=int, required=True, help="TARGETID of the source to draw")
    p.add_argument("--out", required=True, help="output directory for fig4_<id>.png, fig5_<id>.png")
    p.add_argument("--seed", type=_nonneg_int, default=0)
    p.add_argument("--instrument", default=None)
    p.set_defaults(func=_run_plot_spectrum)


def _run_plot_spectrum(a) -> int:
    from .simulate.figures import plot_source_from_catalog
    paths = plot_source_from_catalog(a.catalog, a.targetid, a.out, seed=a.seed, instrument_path=a.instrument)
    for p in paths:
        print(f"wrote {p}")
    return 0


# --- build ------------------------------------------------------------------------------------
def _add_build(sub):
    p = sub.add_parser("build", help="draw N real galaxies, simulate them, assign train/val/test splits")
    p.add_argument("--n", type=_positive_int, required=True, help="number of galaxies")
    p.add_argument("--out", required=True, help="output dataset file (HDF5)")
    p.add_argument("--seed", type=_nonneg_int, default=0)
    p.add_argument("--workers", type=_positive_int, default=1)
    p.add_argument("--scheduler", default=None, help="address of an existing Dask scheduler")
    p.add_argument("--instrument", default=None)
    p.add_argument("--source", choices=("embedded", "desi", "boss", "sps"), default="embedded",
                   help="galaxy population: embedded SDSS/kcorrect default, real DESI-EDR / BOSS files, or "
                        "sps (bagpipes SPS with nebular lines; needs pip install 'csstz[sps]')")
    p.add_argument("--zcat", default=None, help="(desi/boss) redshift catalogue FITS")
    p.add_argument("--sweep", action="append", default=None, help="(desi/boss) LS DR9 sweep FITS (repeatable)")
    p.add_argument("--templates", default=None, help="(desi/boss) Redrock galaxy template FITS")
    p.add_argument("--chunk", type=_positive_int, default=2000, help="galaxies per written chunk")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_run_build)


def _run_build(a) -> int:
    from .build import build_from_args
    build_from_args(a)
    print(f"wrote {a.out}")
    return 0


def _add_plot_dataset(sub):
    p = sub.add_parser("plot-dataset", help="draw the paper's Figs. 1-3 (z, morphology, SNR) for a dataset file")
    p.add_argument("dataset", help="spectra/dataset HDF5 (from build or simulate)")
    p.add_argument("--out", required=True, help="output directory")
    p.set_defaults(func=_run_plot_dataset)


def _run_plot_dataset(a) -> int:
    from .population.figures import plot_dataset_figures
    for path in plot_dataset_figures(a.dataset, a.out):
        print(f"wrote {path}")
    return 0


# --- train / predict --------------------------------------------------------------------------
def _add_train(sub):
    p = sub.add_parser("train", help="train the CNN, the BNN head on its frozen backbone, and the calibration")
    p.add_argument("dataset", help="dataset file from `csstz build`")
    p.add_argument("--out", required=True, help="run directory (checkpoints, model files, logs)")
    p.add_argument("--epochs", type=_positive_int, default=30, help="CNN epochs (paper: 100)")
    p.add_argument("--bnn-epochs", type=_positive_int, default=None, help="BNN-head epochs (default: --epochs)")
    p.add_argument("--batch-size", type=_positive_int, default=None, help="batch size (default: CPU-tuned)")
    p.add_argument("--lr", type=float, default=None, help="Adam learning rate")
    p.add_argument("--head", choices=("mnf", "flipout", "mcdropout"), default="mnf", help="Bayesian head")
    p.add_argument("--calibration", choices=("beta", "scale", "none"), default="beta")
    p.add_argument("--bands", default="GV,GI", help="input bands (default GV,GI)")
    p.add_argument("--seed", type=_nonneg_int, default=0)
    p.add_argument("--accelerator", default="cpu", help="Lightning accelerator: cpu, gpu, auto")
    p.add_argument("--devices", default="1", help="Lightning devices (e.g. 1, 4, auto); >1 uses DDP")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--widths", default=None, help="8 comma-separated ResNet block widths "
                   "(default 16,16,32,32,64,64,128,128; authors 64,64,128,128,256,256,512,512)")
    p.add_argument("--kl-weight", type=float, default=None, help="weight of the KL term (0 = authors' code)")
    p.add_argument("--n-flows", type=_nonneg_int, default=None, help="MNF coupling layers (default 2)")
    p.add_argument("--max-train", type=_positive_int, default=None, help="use at most N training spectra")
    p.add_argument("--num-workers", type=_nonneg_int, default=None, help="DataLoader worker processes")
    p.set_defaults(func=_run_train)


def _run_train(a) -> int:
    from .train.run import train_from_args
    train_from_args(a)
    return 0


def _add_predict(sub):
    p = sub.add_parser("predict", help="calibrated redshifts with uncertainties")
    p.add_argument("run_dir", help="run directory from `csstz train`")
    p.add_argument("spectra", help="spectra file (HDF5)")
    p.add_argument("--out", required=True, help="output predictions (FITS)")
    p.add_argument("--samples", type=_positive_int, default=200, help="stochastic head passes (default 200)")
    p.add_argument("--split", default=None, help="only rows of this SPLIT (train/val/test)")
    p.add_argument("--seed", type=_nonneg_int, default=0)
    p.add_argument("--batch-size", type=_positive_int, default=1024)
    p.add_argument("--model", choices=("bnn", "cnn"), default="bnn",
                   help="bnn (default) or the CNN alone (ZERR = its validation sigma_NMAD x (1+z))")
    p.set_defaults(func=_run_predict)


def _run_predict(a) -> int:
    from .predict import predict_from_args
    predict_from_args(a)
    print(f"wrote {a.out}")
    return 0


# --- evaluate / fit-templates / demo ----------------------------------------------------------
def _add_evaluate(sub):
    p = sub.add_parser("evaluate", help="metrics and figures of a predictions file against its truth")
    p.add_argument("pred", help="predictions FITS from predict or fit-templates")
    p.add_argument("--truth", required=True, help="spectra/dataset HDF5 with the true Z")
    p.add_argument("--out", required=True, help="report directory")
    p.add_argument("--label", default=None, help="name of the method in the report")
    p.set_defaults(func=_run_evaluate)


def _run_evaluate(a) -> int:
    from .evaluate.report import evaluate_from_args
    evaluate_from_args(a)
    print(f"wrote {a.out}")
    return 0


def _add_fit_templates(sub):
    p = sub.add_parser("fit-templates", help="template-fitting baseline (chi-square over a redshift grid)")
    p.add_argument("spectra", help="spectra file (HDF5)")
    p.add_argument("--out", required=True, help="output predictions (FITS)")
    p.add_argument("--split", default=None, help="only rows of this SPLIT")
    p.add_argument("--bands", default="GV,GI", help="bands to fit (default GV,GI)")
    p.add_argument("--zmin", type=float, default=0.0)
    p.add_argument("--zmax", type=float, default=1.6)
    p.add_argument("--dz", type=float, default=None, help="grid step in ln(1+z) (default: fine)")
    p.add_argument("--workers", type=_positive_int, default=1)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--lsf", choices=("point", "morphology"), default="point",
                   help="line-spread model: point-source PSF (default), or broadened by each galaxy's "
                        "catalogue shape projected on the dispersion axis")
    p.set_defaults(func=_run_fit_templates)


def _run_fit_templates(a) -> int:
    from .evaluate.templates import fit_templates_from_args
    fit_templates_from_args(a)
    print(f"wrote {a.out}")
    return 0


def _add_demo(sub):
    p = sub.add_parser("demo", help="the whole chain on the embedded default, ending in a report")
    p.add_argument("--out", default="demo_out", help="output directory (default demo_out)")
    p.add_argument("--quick", action="store_true", help="small run, <= 10 minutes on 2 cores")
    p.add_argument("--seed", type=_nonneg_int, default=0)
    p.add_argument("--workers", type=_positive_int, default=None)
    p.set_defaults(func=_run_demo)


def _run_demo(a) -> int:
    from .demo import demo_from_args
    demo_from_args(a)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="csstz", description="Redshifts from CSST slitless spectra.")
    parser.add_argument("--version", action="version", version=f"csstz {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in (_add_simulate, _add_plot_spectrum, _add_build, _add_plot_dataset, _add_train, _add_predict, _add_evaluate,
                _add_fit_templates, _add_demo):
        add(sub)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"csstz {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # one line for the user; CSSTZ_DEBUG=1 shows the traceback
        if os.environ.get("CSSTZ_DEBUG"):
            raise
        what = "error" if isinstance(exc, (CsstzError, OSError)) else f"internal error ({type(exc).__name__})"
        print(f"csstz {args.command}: {what}: {_one_line(exc)}", file=sys.stderr)
        return 2


def _one_line(exc: BaseException) -> str:
    """The exception's message on one line, without terminal colour codes."""
    import re

    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
    return " ".join(text.split()) or type(exc).__name__


if __name__ == "__main__":  # pragma: no cover
    os.environ.setdefault("MALLOC_TRIM_THRESHOLD_", str(128 * 1024 * 1024))
    sys.exit(main())
