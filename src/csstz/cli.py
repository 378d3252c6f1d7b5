"""Command line: a thin layer, one library function per command.

``main(argv) -> int``: 0 on success; on bad input a one-line message naming the
file, column or value on stderr and exit status 2. Library modules are imported
lazily so that ``csstz --help`` is fast and torch is loaded only by the
commands that need it.

The options of each command are generated from the stage configuration
dataclasses (:mod:`csstz.config`): name, type, choices, help text and the
default shown in ``--help`` all come from the field. ``--config FILE`` reads a
YAML file of the same sections; an option given on the command line wins over
the file, and the file over the dataclass default.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import typing
from typing import TYPE_CHECKING, Any

from . import __version__
from .config import (
    DEFAULT_SEED,
    BuildConfig,
    CalibrateConfig,
    EvaluateConfig,
    ModelConfig,
    OptimiserConfig,
    ParallelConfig,
    PopulationConfig,
    PredictConfig,
    PzConfig,
    SimulateConfig,
    StageConfig,
    TemplateFitConfig,
    TrainConfig,
    base_type,
    field_types,
    read_config_file,
)
from .errors import CsstzError

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence


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


def _tuple_of(kind: type) -> Callable[[str], tuple]:
    def parse(text: str) -> tuple:
        try:
            return tuple(kind(x.strip()) for x in text.split(",") if x.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a comma-separated list of {kind.__name__}: {text!r}") from None

    return parse


def _show(val: Any) -> str:
    return ",".join(map(str, val)) if isinstance(val, tuple) else str(val)


# --- options generated from the stage configs ---------------------------------------------------
def add_config_options(p: argparse.ArgumentParser, *classes: type) -> None:
    """Add one option per field of each config class (and ``--config FILE``)."""
    p.add_argument(
        "--config",
        default=None,
        metavar="FILE",
        help="YAML file of stage settings (sections: " + ", ".join(c.section for c in classes) + ")",
    )
    for cls in classes:
        hints = field_types(cls)
        group = p.add_argument_group(f"{cls.section} settings")
        for f in dataclasses.fields(cls):
            meta = f.metadata
            if not meta.get("cli", True):
                continue
            tp, _ = base_type(hints[f.name])
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            prefix = getattr(cls, "cli_prefix", "")
            flag = "--" + (f"{prefix}-" if prefix else "") + f.name.replace("_", "-")
            kw: dict = {"dest": f"{cls.section}.{f.name}", "default": argparse.SUPPRESS}
            help_text = meta.get("help", "")
            if tp is bool:
                kw["action"] = "store_const"
                kw["const"] = not default
                if default:
                    flag = "--no-" + flag[2:]
                    help_text = f"no {help_text}" if help_text else help_text
            else:
                if typing.get_origin(tp) is tuple:
                    elem = typing.get_args(tp)[0]
                    if meta.get("append"):
                        kw["action"] = "append"
                        kw["type"] = elem
                    else:
                        kw["type"] = _tuple_of(elem)
                elif tp is int:
                    kw["type"] = _nonneg_int if f.name in ("seed", "num_workers", "n_flows") else _positive_int
                elif tp is float:
                    kw["type"] = float
                else:
                    kw["type"] = str
                kw["metavar"] = f.name.upper()
                if meta.get("choices"):
                    kw["choices"] = meta["choices"]
                    del kw["metavar"]
                if meta.get("required"):
                    kw["required"] = True
                elif default is not None:
                    help_text += f" (default: {_show(default)})"
            flags = [flag] + ([meta["alias"]] if meta.get("alias") else [])
            group.add_argument(*flags, help=help_text, **kw)


def stage_configs(a: argparse.Namespace, *classes: type) -> dict[str, StageConfig]:
    """The configs of a command: dataclass defaults < ``--config`` file < command-line options."""
    from_file = read_config_file(a.config) if getattr(a, "config", None) else {}
    given = vars(a)
    out = {}
    for cls in classes:
        values = dict(from_file.get(cls.section, {}))
        prefix = cls.section + "."
        values.update({k[len(prefix) :]: v for k, v in given.items() if k.startswith(prefix)})
        out[cls.section] = cls.from_dict(values, strict=True)
    return out


# --- simulate / build ---------------------------------------------------------------------------
def _add_simulate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "simulate",
        help="simulate CSST slitless spectra (every band of the instrument file) for a FITS catalogue",
        description="Simulate CSST first-order slitless spectra (2D images, noise, optimal "
        "extraction) for the sources of a FITS catalogue (HDUs CATALOG, WAVELENGTH, FLUX).",
    )
    p.add_argument("catalog", help="input FITS catalogue")
    p.add_argument("--out", required=True, help="output spectra file (HDF5)")
    add_config_options(p, SimulateConfig, ParallelConfig)
    p.set_defaults(func=_run_simulate)


def _run_simulate(a: argparse.Namespace) -> int:
    from .config import to_yaml
    from .simulate.api import simulate_file

    c = stage_configs(a, SimulateConfig, ParallelConfig)
    sim, par = c["simulate"], c["parallel"]
    simulate_file(
        a.catalog,
        a.out,
        seed=sim.seed,
        noiseless=sim.noiseless,
        save_2d=sim.save_2d,
        workers=par.workers,
        scheduler=par.scheduler,
        instrument_path=sim.instrument,
        bands=sim.bands,
        chunk=sim.chunk,
        config_yaml=to_yaml(c),
    )
    print(f"wrote {a.out}")
    return 0


def _add_plot_spectrum(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "plot-spectrum", help="draw the paper's Fig. 4 (2D images) and Fig. 5 (1D spectra) for one simulated source"
    )
    p.add_argument("catalog", help="input FITS catalogue (as for simulate)")
    p.add_argument("--targetid", type=int, required=True, help="TARGETID of the source to draw")
    p.add_argument("--out", required=True, help="output directory for fig4_<id>.png, fig5_<id>.png")
    p.add_argument("--seed", type=_nonneg_int, default=DEFAULT_SEED, help=f"root random seed (default: {DEFAULT_SEED})")
    p.add_argument("--instrument", default=None, help="instrument YAML (default: the packaged CSST file)")
    p.set_defaults(func=_run_plot_spectrum)


def _run_plot_spectrum(a: argparse.Namespace) -> int:
    from .simulate.figures import plot_source_from_catalog

    paths = plot_source_from_catalog(a.catalog, a.targetid, a.out, seed=a.seed, instrument_path=a.instrument)
    for p in paths:
        print(f"wrote {p}")
    return 0


def _add_build(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("build", help="draw N real galaxies, simulate them, assign train/val/test splits")
    p.add_argument("--out", required=True, help="output dataset file (HDF5)")
    add_config_options(p, BuildConfig, PopulationConfig, ParallelConfig)
    p.set_defaults(func=_run_build)


def _run_build(a: argparse.Namespace) -> int:
    from .build import build_from_config

    c = stage_configs(a, BuildConfig, PopulationConfig, ParallelConfig)
    build_from_config(a.out, c["build"], c["population"], c["parallel"])
    print(f"wrote {a.out}")
    return 0


def _add_plot_dataset(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plot-dataset", help="draw the paper's Figs. 1-3 (z, morphology, SNR) for a dataset file")
    p.add_argument("dataset", help="spectra/dataset HDF5 (from build or simulate)")
    p.add_argument("--out", required=True, help="output directory")
    p.set_defaults(func=_run_plot_dataset)


def _run_plot_dataset(a: argparse.Namespace) -> int:
    from .population.figures import plot_dataset_figures

    for path in plot_dataset_figures(a.dataset, a.out):
        print(f"wrote {path}")
    return 0


# --- train / predict --------------------------------------------------------------------------
def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train the default p(z) estimator (or, with --model paper, the paper's CNN "
        "and its Bayesian head), then fit the calibration on the validation split",
    )
    p.add_argument("dataset", help="dataset file from `csstz build`")
    p.add_argument("--out", required=True, help="run directory (checkpoints, model files, logs)")
    add_config_options(p, ModelConfig, OptimiserConfig, CalibrateConfig, PzConfig)
    p.set_defaults(func=_run_train)


def _run_train(a: argparse.Namespace) -> int:
    from .pipeline import train_and_calibrate

    c = stage_configs(a, ModelConfig, OptimiserConfig, CalibrateConfig, PzConfig)
    train_and_calibrate(
        a.dataset, a.out, TrainConfig.from_parts(c["model"], c["optimiser"], c["calibrate"]), pz=c["pz"]
    )
    return 0


def _add_predict(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="calibrated redshifts with uncertainties")
    p.add_argument("run_dir", help="run directory from `csstz train`")
    p.add_argument("spectra", help="spectra file (HDF5)")
    p.add_argument("--out", required=True, help="output predictions (FITS)")
    add_config_options(p, PredictConfig)
    p.set_defaults(func=_run_predict)


def _run_predict(a: argparse.Namespace) -> int:
    from .pipeline import predict_calibrated

    predict_calibrated(a.run_dir, a.spectra, a.out, stage_configs(a, PredictConfig)["predict"])
    print(f"wrote {a.out}")
    return 0


# --- evaluate / fit-templates / demo ----------------------------------------------------------
def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="metrics and figures of a predictions file against its truth")
    p.add_argument("pred", help="predictions FITS from predict or fit-templates")
    p.add_argument("--truth", required=True, help="spectra/dataset HDF5 with the true Z")
    p.add_argument("--out", required=True, help="report directory")
    add_config_options(p, EvaluateConfig)
    p.set_defaults(func=_run_evaluate)


def _run_evaluate(a: argparse.Namespace) -> int:
    from .pipeline import evaluate

    evaluate(a.pred, a.truth, a.out, stage_configs(a, EvaluateConfig)["evaluate"])
    print(f"wrote {a.out}")
    return 0


def _add_fit_templates(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("fit-templates", help="template-fitting baseline (chi-square over a redshift grid)")
    p.add_argument("spectra", help="spectra file (HDF5)")
    p.add_argument("--out", required=True, help="output predictions (FITS)")
    add_config_options(p, TemplateFitConfig, ParallelConfig)
    p.set_defaults(func=_run_fit_templates)


def _run_fit_templates(a: argparse.Namespace) -> int:
    from .templates.fit import fit_templates_file

    c = stage_configs(a, TemplateFitConfig, ParallelConfig)
    t, par = c["template_fit"], c["parallel"]
    fit_templates_file(
        a.spectra,
        a.out,
        split=t.split,
        bands=t.bands,
        zmin=t.zmin,
        zmax=t.zmax,
        dlnz=t.dlnz,
        workers=par.workers,
        scheduler=par.scheduler,
        progress=t.progress,
        lsf=t.lsf,
        basis=t.basis,
        config={k: v.to_dict() for k, v in c.items()},
    )
    print(f"wrote {a.out}")
    return 0


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="the whole chain on the embedded default, ending in a report")
    p.add_argument("--out", default="demo_out", help="output directory (default: demo_out)")
    p.add_argument("--quick", action="store_true", help="small run, <= 10 minutes on 2 cores")
    p.add_argument("--seed", type=_nonneg_int, default=DEFAULT_SEED, help=f"root random seed (default: {DEFAULT_SEED})")
    p.add_argument("--workers", type=_positive_int, default=None, help="local worker processes (default: up to 2)")
    p.set_defaults(func=_run_demo)


def _run_demo(a: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(a.out, quick=a.quick, seed=a.seed, workers=a.workers)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="csstz", description="Redshifts from CSST slitless spectra.")
    parser.add_argument("--version", action="version", version=f"csstz {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in (
        _add_simulate,
        _add_plot_spectrum,
        _add_build,
        _add_plot_dataset,
        _add_train,
        _add_predict,
        _add_evaluate,
        _add_fit_templates,
        _add_demo,
    ):
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
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
