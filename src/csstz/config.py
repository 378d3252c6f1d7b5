"""Per-stage configuration: frozen, torch-free dataclasses, each default defined once.

Every stage of csstz reads one of these (``docs/design.md``):

=====================  =============================================================
section (YAML key)     class
=====================  =============================================================
``parallel``           :class:`ParallelConfig` (simulate, build, template fit)
``population``         :class:`PopulationConfig` (build)
``simulate``           :class:`SimulateConfig`
``build``              :class:`BuildConfig`
``model``              :class:`ModelConfig` (networks)
``optimiser``          :class:`OptimiserConfig` (training)
``calibrate``          :class:`CalibrateConfig`
``predict``            :class:`PredictConfig`
``template_fit``       :class:`TemplateFitConfig`
``evaluate``           :class:`EvaluateConfig`
=====================  =============================================================

:class:`TrainConfig` is model + optimiser + calibrate in one flat object, the form
stored in model files (so run directories written before this module existed load
unchanged).

A YAML file (``csstz COMMAND --config FILE``) holds any of these sections with any
of their fields; what it leaves out keeps the default, and an option given on the
command line wins over the file. :func:`to_yaml` writes the configuration used into
every output. The command-line options are generated from the fields
(:mod:`csstz.cli`): each field's ``metadata`` holds its help text and choices.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from .errors import ConfigError, FileFormatError
from .schema import ESTIMATORS, MODEL_KINDS, SPLITS, Z_RANGE, network_bands

if TYPE_CHECKING:
    from typing import Self

#: Root seed of every stage unless given.
DEFAULT_SEED = 0
#: Bayesian head kinds (csstz.models.heads).
HEAD_KINDS = ("mnf", "flipout", "mcdropout")
#: Calibration methods (csstz.calibrate).
CALIBRATIONS = ("beta", "scale", "none")
#: Galaxy sources of `csstz build`: two synthetic populations (mixable) and two real-data readers.
SOURCES = ("embedded", "sps", "desi", "boss")
#: Sources that draw galaxies from (seed, TARGETID) and can be mixed in one build (``--source embedded,sps``).
SYNTHETIC_SOURCES = ("embedded", "sps")
#: Line-spread models of the template fit.
LSF_MODELS = ("point", "morphology")
#: CPU-tuned ResNet block widths (a quarter of the authors' 64..512; see csstz.train.config).
CPU_WIDTHS = (16, 16, 32, 32, 64, 64, 128, 128)


def opt(
    default: Any = None,
    help: str = "",
    choices: tuple | None = None,
    *,
    factory: Any = None,
    cli: bool = True,
    append: bool = False,
    required: bool = False,
    alias: str | None = None,
) -> Any:
    """A dataclass field with its command-line description in ``metadata``.

    ``help`` and ``choices`` describe the option; ``cli=False`` keeps it off the command
    line; ``append`` makes it repeatable; ``alias`` is a second option name.
    """
    meta = {"help": help, "choices": choices, "cli": cli, "append": append, "required": required, "alias": alias}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


class StageConfig:
    """Behaviour shared by the stage dataclasses: validation, dict and YAML round trips."""

    #: YAML section name.
    section: typing.ClassVar[str] = ""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            ch = f.metadata.get("choices")
            val = getattr(self, f.name)
            if ch and val is not None and val not in ch:
                raise ConfigError(f.name, "invalid value", value=val, allowed=", ".join(map(str, ch)))
            # sequences are stored as tuples (YAML and JSON give lists)
            if isinstance(val, list):
                object.__setattr__(self, f.name, tuple(val))
        self.check()

    def check(self) -> None:
        """Range checks of the stage (override); raise :class:`ConfigError` naming the field."""

    def _require(self, name: str, ok: bool, allowed: str) -> None:
        if not ok:
            raise ConfigError(name, "invalid setting", value=getattr(self, name), allowed=allowed)

    def to_dict(self) -> dict:
        """Plain dict (tuples as lists), JSON- and YAML-safe."""
        out = {}
        for f in dataclasses.fields(self):
            val = getattr(self, f.name)
            out[f.name] = list(val) if isinstance(val, tuple) else val
        return out

    @classmethod
    def from_dict(cls, d: dict, origin: str | None = None, strict: bool = False) -> Self:
        """Build from a dict; unknown keys are an error with ``strict``, else ignored."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if strict and unknown:
            where = f"{cls.section}.{unknown[0]}" if cls.section else unknown[0]
            raise ConfigError(
                where, "unknown setting" + (f" in {origin}" if origin else ""), allowed=", ".join(sorted(names))
            )
        return cls(**{k: v for k, v in d.items() if k in names})

    def replace(self, **kw: Any) -> Self:
        return dataclasses.replace(self, **kw)


def _positive(x: Any) -> bool:
    return x is None or (isinstance(x, (int, float)) and not isinstance(x, bool) and x > 0)


# --- shared ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ParallelConfig(StageConfig):
    """Where the work of simulate, build and the template fit runs (:func:`csstz.parallel.parallel_map`)."""

    section: typing.ClassVar[str] = "parallel"
    workers: int = opt(1, "local worker processes (1 = in-process)")
    scheduler: str | None = opt(None, "address of an existing Dask scheduler (overrides --workers)")

    def check(self) -> None:
        self._require("workers", isinstance(self.workers, int) and self.workers >= 1, "an integer >= 1")


# --- population / simulate / build -------------------------------------------------------------
@dataclass(frozen=True)
class PopulationConfig(StageConfig):
    """Which galaxies a build draws."""

    section: typing.ClassVar[str] = "population"
    source: str = opt(
        "embedded",
        "galaxy population: embedded (SDSS/kcorrect, the default), sps (stellar-"
        "population synthesis with nebular lines; pip install 'csstz[sps]'), a comma list of "
        "these two mixed by --mix, or real desi / boss files",
    )
    mix: float | None = opt(None, "(mixed sources a,b) fraction of the galaxies drawn from the second source")
    mag_limit_gi: float | None = opt(None, "(embedded, sps) faint GI magnitude limit, AB (default: the population's)")
    zcat: str | None = opt(None, "(desi/boss) redshift catalogue FITS")
    sweep: tuple[str, ...] | None = opt(None, "(desi/boss) LS DR9 sweep FITS (repeatable)", append=True)
    templates: str | None = opt(None, "(desi/boss) Redrock galaxy template FITS")

    @property
    def sources(self) -> tuple[str, ...]:
        """The source names of ``source`` (one, or the mixed synthetic sources in order)."""
        return tuple(s.strip() for s in str(self.source).split(",") if s.strip())

    def check(self) -> None:
        srcs = self.sources
        if len(srcs) == 1:
            self._require("source", srcs[0] in SOURCES, ", ".join(SOURCES) + ", or embedded,sps")
            self._require("mix", self.mix is None, "only with two mixed sources (--source embedded,sps)")
        else:
            self._require(
                "source",
                len(srcs) == 2 and len(set(srcs)) == 2 and all(s in SYNTHETIC_SOURCES for s in srcs),
                "two of " + ", ".join(SYNTHETIC_SOURCES),
            )
            self._require(
                "mix",
                self.mix is not None and 0.0 <= float(self.mix) <= 1.0,
                "a fraction in [0, 1] (share of the second source)",
            )
        if set(srcs) <= set(SYNTHETIC_SOURCES) and (self.zcat or self.sweep or self.templates):
            raise ConfigError("source", "zcat/sweep/templates need source desi or boss", value=self.source)


@dataclass(frozen=True)
class SimulateConfig(StageConfig):
    """``csstz simulate``: the simulator's switches."""

    section: typing.ClassVar[str] = "simulate"
    seed: int = opt(DEFAULT_SEED, "root random seed")
    noiseless: bool = opt(False, "no noise: expected counts only")
    save_2d: bool = opt(False, "also store the 2D first-order images")
    bands: tuple[str, ...] | None = opt(None, "comma-separated bands (default: every band of the instrument file)")
    instrument: str | None = opt(None, "instrument YAML (default: the packaged CSST file)")
    chunk: int = opt(500, "sources per parallel task")

    def check(self) -> None:
        self._require("seed", isinstance(self.seed, int) and self.seed >= 0, "an integer >= 0")
        self._require("chunk", _positive(self.chunk), "> 0")
        self._require("bands", self.bands is None or len(self.bands) >= 1, "at least one band")


@dataclass(frozen=True)
class BuildConfig(StageConfig):
    """``csstz build``: size and seed of a dataset (the galaxies: :class:`PopulationConfig`)."""

    section: typing.ClassVar[str] = "build"
    n: int | None = opt(None, "number of galaxies", required=True)
    seed: int = opt(DEFAULT_SEED, "root random seed")
    instrument: str | None = opt(None, "instrument YAML (default: the packaged CSST file)")
    chunk: int = opt(2000, "galaxies per written chunk (unit of resuming and of memory)")
    progress: bool = opt(True, "progress bar")

    def check(self) -> None:
        self._require("seed", isinstance(self.seed, int) and self.seed >= 0, "an integer >= 0")
        self._require("chunk", _positive(self.chunk), "> 0")
        self._require("n", _positive(self.n), "> 0")


# --- networks ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelConfig(StageConfig):
    """The networks: the 1d ResNet and the Bayesian head."""

    section: typing.ClassVar[str] = "model"
    estimator: str = opt(
        "pz",
        "what to train: pz (the default p(z) network on physics curves) or paper (the paper's CNN + Bayesian head)",
        ESTIMATORS,
        alias="--model",
    )
    stem_channels: int = opt(32, "channels of the ResNet stem")
    widths: tuple[int, ...] = opt(
        CPU_WIDTHS, "comma-separated ResNet block widths (authors: 64,64,128,128,256,256,512,512)"
    )
    kernel: int = opt(7, "convolution kernel size")
    dropout: float = opt(0.2, "dropout of the CNN")
    in_channels: int = opt(2, "input channels (flux, error)", cli=False)
    head: str = opt("mnf", "Bayesian head", HEAD_KINDS)
    head_hidden: tuple[int, ...] = opt((256, 128), "hidden widths of the head")
    n_flows: int = opt(2, "MNF coupling layers (authors' code; paper 50)")
    flow_hidden: int = opt(50, "hidden units of each MNF coupling layer")
    dropout_p: float = opt(0.1, "MC-dropout probability of the head")
    prior_var: float = opt(1.0, "prior variance of the head's weights")
    sigma_init: float = opt(0.05, "initial weight-noise scale of the head")
    residual: bool = opt(True, "the head predicts a residual on the CNN's redshift", cli=False)
    kl_weight: float = opt(0.0, "weight of the KL term (0 = authors' code; 1 = full ELBO)")
    bands: tuple[str, ...] = opt(
        help="comma-separated input bands; the default is network.bands of the instrument file", factory=network_bands
    )
    instrument: str | None = opt(None, "instrument YAML the bands come from (default: the packaged CSST file)")

    def check(self) -> None:
        self._require("widths", len(self.widths) >= 1 and min(self.widths) > 0, "positive integers")
        self._require("kl_weight", self.kl_weight >= 0, ">= 0")
        self._require("n_flows", self.n_flows >= 0, ">= 0")
        if self.instrument is not None:
            from .instrument import load_instrument

            known = load_instrument(self.instrument).band_names
        else:
            from .schema import all_bands

            known = all_bands()
        self._require(
            "bands",
            len(self.bands) >= 1 and len(set(self.bands)) == len(self.bands) and all(b in known for b in self.bands),
            "distinct bands of " + ", ".join(known),
        )


@dataclass(frozen=True)
class OptimiserConfig(StageConfig):
    """Training: epochs, batches, Adam, data subsets and hardware."""

    section: typing.ClassVar[str] = "optimiser"
    epochs: int = opt(30, "CNN epochs (paper: 100)")
    bnn_epochs: int | None = opt(None, "BNN-head epochs (default: --epochs)")
    batch_size: int = opt(64, "batch size (CPU-tuned; paper 1024)")
    lr: float = opt(1e-3, "Adam learning rate of the CNN (authors 1e-4)")
    bnn_lr: float = opt(1e-3, "Adam learning rate of the head")
    augment: bool = opt(True, "fresh Gaussian noise realisation of every training spectrum on every pass")
    max_train: int | None = opt(None, "use at most N training spectra")
    max_val: int | None = opt(None, "use at most N validation spectra")
    seed: int = opt(DEFAULT_SEED, "root random seed")
    accelerator: str = opt("cpu", "Lightning accelerator: cpu, gpu, auto")
    devices: str = opt("1", "Lightning devices (e.g. 1, 4, auto); >1 uses DDP")
    num_workers: int = opt(0, "DataLoader worker processes")
    progress: bool = opt(True, "progress bars")

    def check(self) -> None:
        if self.bnn_epochs is None:
            object.__setattr__(self, "bnn_epochs", self.epochs)
        object.__setattr__(self, "devices", str(self.devices))
        self._require("epochs", isinstance(self.epochs, int) and self.epochs >= 1, ">= 1")
        self._require("bnn_epochs", isinstance(self.bnn_epochs, int) and self.bnn_epochs >= 1, ">= 1")
        self._require("batch_size", self.batch_size >= 2, ">= 2 (BatchNorm)")
        self._require("lr", self.lr > 0, "> 0")
        self._require("bnn_lr", self.bnn_lr > 0, "> 0")
        self._require("max_train", _positive(self.max_train), "> 0")
        self._require("max_val", _positive(self.max_val), "> 0")
        self._require("num_workers", self.num_workers >= 0, ">= 0")


@dataclass(frozen=True)
class CalibrateConfig(StageConfig):
    """Calibration of the uncertainties, fitted on the validation split."""

    section: typing.ClassVar[str] = "calibrate"
    calibration: str = opt("beta", "calibration method (fitted on the validation split)", CALIBRATIONS)
    calib_samples: int = opt(100, "stochastic head passes per validation spectrum for the calibration fit")

    def check(self) -> None:
        self._require("calib_samples", self.calib_samples >= 2, ">= 2")


@dataclass(frozen=True)
class TrainConfig(CalibrateConfig, OptimiserConfig, ModelConfig):
    """Model + optimiser + calibration as one flat object: the config stored in model files.

    Accepts every field of :class:`ModelConfig`, :class:`OptimiserConfig` and
    :class:`CalibrateConfig` (defaults defined there); :attr:`model`,
    :attr:`optimiser` and :attr:`calibrate` give the parts back.
    """

    section: typing.ClassVar[str] = "train"
    extra: dict = field(default_factory=dict, metadata={"cli": False})

    def check(self) -> None:
        ModelConfig.check(self)
        OptimiserConfig.check(self)
        CalibrateConfig.check(self)

    def _part(self, cls: type) -> Any:
        return cls(**{f.name: getattr(self, f.name) for f in dataclasses.fields(cls)})

    @property
    def model(self) -> ModelConfig:
        return self._part(ModelConfig)

    @property
    def optimiser(self) -> OptimiserConfig:
        return self._part(OptimiserConfig)

    @property
    def calibrate(self) -> CalibrateConfig:
        return self._part(CalibrateConfig)

    @classmethod
    def from_parts(
        cls,
        model: ModelConfig | None = None,
        optimiser: OptimiserConfig | None = None,
        calibrate: CalibrateConfig | None = None,
    ) -> TrainConfig:
        kw: dict = {}
        for part in (model, optimiser, calibrate):
            if part is not None:
                kw.update({f.name: getattr(part, f.name) for f in dataclasses.fields(part)})
        return cls(**kw)


# --- predict / template fit / evaluate -----------------------------------------------------------
#: Point estimates ``Z`` of a p(z) run (``csstz predict --point``; csstz.predict_pz): "kernel" (default since 0.9.0)
#: or "mode" (0.8's).
POINT_ESTIMATES = ("kernel", "mode")
#: How a p(z) run locates Z in its final step (``csstz train --pz-locator``; csstz.templates.locator): "nnls"
#: (default since 0.10.0) or "prior" (0.9's relocation on the physics basis).
LOCATORS = ("nnls", "prior")


@dataclass(frozen=True)
class PredictConfig(StageConfig):
    """``csstz predict``: how many head passes, which rows, which network."""

    section: typing.ClassVar[str] = "predict"
    samples: int = opt(200, "stochastic head passes per spectrum")
    seed: int = opt(DEFAULT_SEED, "seed of the head's weight noise (same seed, same output)")
    batch_size: int = opt(1024, "spectra per backbone batch")
    model: str | None = opt(
        None,
        "network to apply; default: the run's estimator (pz, or bnn for a paper run); "
        "cnn = the paper's CNN alone (ZERR = its validation sigma_NMAD x (1+z))",
        MODEL_KINDS,
    )
    split: str | None = opt(None, "only rows of this SPLIT (" + ", ".join(SPLITS) + ")")
    # 1 since 0.8.0: with the coefficient curves (8 curves per spectrum to send back) in-process prediction
    # measured 2,031 spectra/s against 1,885/s with 2 physics processes (benchmarks/results/pz_speed.json)
    workers: int = opt(1, "processes computing the physics curves of a p(z) run (1: in-process)")
    point: str = opt(
        POINT_ESTIMATES[0],
        "Z of a p(z) run: kernel = the peak of p(z) smoothed over about the outlier threshold where it lies "
        "away from the mode (fewer outliers), else the located mode; mode = always the located mode (0.8)",
        POINT_ESTIMATES,
    )
    locator: str = opt(
        "auto",
        "last step of Z of a p(z) run: auto = the run's own (nnls where it has pz_locator.fits, else prior); nnls; "
        "prior (0.9's relocation)",
        ("auto", *LOCATORS),
    )

    def check(self) -> None:
        self._require("samples", isinstance(self.samples, int) and self.samples >= 1, ">= 1")
        self._require("batch_size", self.batch_size >= 1, ">= 1")
        self._require("workers", isinstance(self.workers, int) and self.workers >= 1, "an integer >= 1")


@dataclass(frozen=True)
class TemplateFitConfig(StageConfig):
    """``csstz fit-templates``: the chi-square template-fitting baseline."""

    section: typing.ClassVar[str] = "template_fit"
    bands: tuple[str, ...] | None = opt(
        None, "comma-separated bands to fit (default: network.bands of the instrument file)"
    )
    zmin: float = opt(Z_RANGE[0], "lowest redshift of the grid")
    zmax: float = opt(Z_RANGE[1], "highest redshift of the grid")
    dlnz: float | None = opt(
        None, "grid step in ln(1+z) (default: fine, csstz.templates.fit.DEFAULT_DLNZ)", alias="--dz"
    )
    lsf: str = opt(
        "point",
        "line-spread model: point-source PSF, or broadened by each galaxy's catalogue "
        "shape projected on the dispersion axis",
        LSF_MODELS,
    )
    split: str | None = opt(None, "only rows of this SPLIT (" + ", ".join(SPLITS) + ")")
    basis: str = opt(
        "kcorrect",
        "template basis: kcorrect (non-negative fit of the kcorrect NMF templates), "
        "learned:DATASET.h5[:K] (PCA basis of that dataset's training-split rest-frame SEDs, "
        "marginal-likelihood fit), or FILE (basis HDF5 from csstz.templates.learned.save_basis, "
        "or a kcorrect-layout template FITS)",
    )
    progress: bool = opt(True, "progress bar")

    def check(self) -> None:
        self._require(
            "basis",
            isinstance(self.basis, str) and bool(self.basis.strip()),
            "kcorrect, learned:DATASET.h5[:K] or a basis file",
        )
        self._require("zmin", math.isfinite(self.zmin) and self.zmin >= 0, ">= 0")
        self._require("zmax", math.isfinite(self.zmax) and self.zmax > self.zmin, "> zmin")


@dataclass(frozen=True)
class PzConfig(StageConfig):
    """The default estimator (``csstz train --model pz``): physics curves + p(z) network (docs/estimator.md).

    Command-line flags carry the prefix ``--pz-`` (e.g. ``--pz-max-samples``).
    """

    section: typing.ClassVar[str] = "pz"
    cli_prefix: typing.ClassVar[str] = "pz"
    # physics stage (torch-free, csstz.templates)
    n_components: int | None = opt(None, "learned basis size (default: chosen on validation SEDs)")
    prior_mixture: int = opt(1, "Gaussian-mixture components of the basis coefficients' prior (1: one Gaussian)")
    # free emission lines in the physics basis (csstz.templates.learned.add_emission_lines; the choice of
    # [OII] alone and 10 A is measured in docs/estimator.md)
    line_ew_sd: float = opt(
        10.0,
        "prior sigma [A] of the equivalent width of free emission-line templates (--pz-lines) added to the "
        "physics basis (0: none)",
    )
    lines: tuple[str, ...] = opt(("OII",), "comma-separated emission-line groups freed (OII, OIII, HaNII)")
    lsf: str = opt("morphology", "line-spread model of the physics curves", LSF_MODELS)
    locator_lsf_scale: float = opt(
        0.625,
        "scale of the galaxy part of the line-spread width with which the located peak is re-located "
        "(--pz-lsf morphology; 1: the curves' own widths, which with --pz-locator prior means no relocation)",
    )
    locator: str = opt(
        LOCATORS[0],
        "the last step of Z: nnls = a non-negative fit of a small NMF basis learned from the training SEDs, on "
        "native pixels, at the locator's line-spread widths (pz_locator.fits); prior = the physics basis with its "
        "coefficient prior on the common grid (0.9)",
        LOCATORS,
    )
    locator_templates: int = opt(5, "NMF templates of the nnls locator")
    coeff_curves: bool = opt(True, "coefficient curves: the best-fit SED shape (normalised basis coefficients) along z")
    # network (csstz.models.pz)
    members: int = opt(4, "ensemble members (their spread is the epistemic uncertainty)")
    hidden: int = opt(8, "channels per member")
    stride: int = opt(8, "down-sampling of the z axis inside the correction network")
    kernel: int = opt(5, "kernel of the dilated convolutions")
    dilations: tuple[int, ...] = opt((1, 2, 4, 8, 16, 32), "one residual block per dilation")
    # optimisation
    batch_size: int = opt(256, "spectra per step")
    lr: float = opt(2e-3, "AdamW peak learning rate (one-cycle schedule)")
    weight_decay: float = opt(1e-4, "AdamW weight decay")
    max_samples: int = opt(300_000, "training samples seen at most (each a fresh noise draw)")
    eval_every: int = opt(30_000, "samples between validation evaluations")
    patience: int = opt(4, "evaluations without improvement before stopping (counted after the schedule's midpoint)")
    target_width: float = opt(1.0, "sigma of the training target in grid steps of ln(1+z)")
    # flags
    ood_quantile: float = opt(
        0.96,
        "OUT_OF_DISTRIBUTION threshold: this quantile of the in-family validation spectra's OOD_SCORE (the sum "
        "of the ranks of the feature distance OOD_DIST2 and of the members' spread)",
    )
    multimodal_mass: float = opt(0.2, "MULTIMODAL: p(z) mass farther than 0.02 (1+z) from the mode above this")
    threads: int = opt(2, "threads of the physics FFTs")
    workers: int = opt(
        1,
        "processes computing the training physics curves while the network trains (1: in-process, the fastest "
        "on 2 cores since the solves are compiled)",
    )

    def check(self) -> None:
        for name in (
            "members", "hidden", "stride", "batch_size", "max_samples", "eval_every", "patience", "workers",
            "prior_mixture", "locator_templates",
        ):  # fmt: skip
            self._require(name, isinstance(getattr(self, name), int) and getattr(self, name) >= 1, "an integer >= 1")
        self._require("kernel", self.kernel % 2 == 1, "odd")
        self._require("lr", self.lr > 0, "> 0")
        self._require("line_ew_sd", math.isfinite(self.line_ew_sd) and self.line_ew_sd >= 0, ">= 0 [A]")
        self._require(
            "locator_lsf_scale", math.isfinite(self.locator_lsf_scale) and 0 <= self.locator_lsf_scale <= 2, "in [0, 2]"
        )
        from .templates.learned import EMISSION_LINE_GROUPS

        self._require(
            "lines",
            len(self.lines) > 0 and all(g in EMISSION_LINE_GROUPS for g in self.lines),
            ", ".join(EMISSION_LINE_GROUPS),
        )
        self._require("locator_templates", self.locator_templates <= 12, "an integer 1..12")
        self._require("ood_quantile", 0.5 < self.ood_quantile < 1.0, "in (0.5, 1)")
        self._require("multimodal_mass", 0.0 < self.multimodal_mass < 1.0, "in (0, 1)")


@dataclass(frozen=True)
class EvaluateConfig(StageConfig):
    """``csstz evaluate``."""

    section: typing.ClassVar[str] = "evaluate"
    label: str | None = opt(None, "name of the method in the report (default: the METHOD header keyword)")


SECTIONS: dict[str, type] = {
    c.section: c
    for c in (
        ParallelConfig,
        PopulationConfig,
        SimulateConfig,
        BuildConfig,
        ModelConfig,
        OptimiserConfig,
        CalibrateConfig,
        PredictConfig,
        PzConfig,
        TemplateFitConfig,
        EvaluateConfig,
    )
}


# --- YAML ------------------------------------------------------------------------------------------
def read_config_file(path: str | Path) -> dict[str, dict]:
    """Read a YAML configuration file: ``{section: {field: value}}``, checked against the dataclasses.

    Raises
    ------
    FileFormatError
        Missing file, not YAML, or not a mapping of mappings.
    ConfigError
        An unknown section or field (the message names it and the file).
    """
    p = Path(path)
    if not p.is_file():
        raise FileFormatError(str(p), "configuration file not found")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise FileFormatError(str(p), f"not valid YAML ({exc.__class__.__name__})") from None
    if not isinstance(data, dict):
        raise FileFormatError(str(p), "a configuration file is a mapping of sections")
    for sec, values in data.items():
        if sec not in SECTIONS:
            raise ConfigError(str(sec), f"unknown configuration section in {p}", allowed=", ".join(SECTIONS))
        if not isinstance(values, dict):
            raise FileFormatError(str(p), f"section {sec} must be a mapping")
        names = {f.name for f in dataclasses.fields(SECTIONS[sec])}
        for key in values:
            if key not in names:
                raise ConfigError(f"{sec}.{key}", f"unknown setting in {p}", allowed=", ".join(sorted(names)))
    return data


def to_yaml(configs: dict[str, StageConfig], exclude: tuple[str, ...] = ()) -> str:
    """YAML text of ``{section: config}``, readable back with ``--config`` (fields in ``exclude`` left out)."""
    return yaml.safe_dump(
        {k: {f: x for f, x in v.to_dict().items() if f not in exclude} for k, v in configs.items()}, sort_keys=False
    )


def field_types(cls: type) -> dict[str, Any]:
    """Resolved type annotations of a config dataclass (the annotations are strings)."""
    return typing.get_type_hints(cls)


def base_type(tp: Any) -> tuple[Any, bool]:
    """(inner type, optional) of an annotation such as ``int | None`` or ``tuple[str, ...]``."""
    optional = False
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        optional = len(args) < len(typing.get_args(tp))
        tp = args[0]
    return tp, optional


__all__ = [
    "StageConfig",
    "ParallelConfig",
    "PopulationConfig",
    "SimulateConfig",
    "BuildConfig",
    "ModelConfig",
    "OptimiserConfig",
    "CalibrateConfig",
    "TrainConfig",
    "PredictConfig",
    "POINT_ESTIMATES",
    "LOCATORS",
    "TemplateFitConfig",
    "EvaluateConfig",
    "PzConfig",
    "SECTIONS",
    "read_config_file",
    "to_yaml",
    "field_types",
    "base_type",
    "opt",
    "DEFAULT_SEED",
    "HEAD_KINDS",
    "CALIBRATIONS",
    "SOURCES",
    "SYNTHETIC_SOURCES",
    "LSF_MODELS",
    "CPU_WIDTHS",
]
