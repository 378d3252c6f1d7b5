"""Training configuration: one frozen dataclass, stored in every model file.

CPU defaults and why (measured on the 2-core development machine, fp32, GV+GI input of
926 pixels; see ``benchmarks/bench_train.py``):

* ``widths`` = 16,16,32,32,64,64,128,128 (a quarter of the authors' 64..512; 0.55 M
  parameters): ~580 training samples/s on 2 threads (batch 64), ~500-530/s for a whole
  Lightning epoch streamed from HDF5, against ~1160/s for 8..64 (0.14 M, too small to
  learn the line patterns well), ~220/s for half width (2.2 M) and ~63/s for the
  authors' 8.7 M; the authors' widths are one flag away (``--widths``) for a GPU run.
  bf16 autocast is no help on this CPU (45/s: no native bf16 units).
* ``batch_size`` = 64: on 2 cores throughput is nearly flat in batch size (520/s at 32,
  580/s at 64, 615/s at 128-256), so the smaller batch, which gives small data sets
  more optimiser steps per epoch, costs little. The paper's 1024 is a GPU choice.
* ``lr`` = 1e-3 (authors 1e-4): a CPU run sees ~1e5-1e6 samples in total instead of the
  paper's 3e9 (600k x 50 x 100), so it needs the larger Adam step to converge; best
  checkpoint by validation loss guards against the noisier end.
* ``bnn_lr`` = 1e-3, ``kl_weight`` = 0 (the authors' code; 1 = full ELBO with the KL
  divided by the number of training spectra), ``n_flows`` = 2 (authors' code; paper 50).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from ..errors import ConfigError
from ..models.heads import HEAD_KINDS

CPU_WIDTHS = (16, 16, 32, 32, 64, 64, 128, 128)
CALIBRATIONS = ("beta", "scale", "none")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run (networks, optimiser, data, hardware)."""

    # network
    stem_channels: int = 32
    widths: tuple = CPU_WIDTHS
    kernel: int = 7
    dropout: float = 0.2
    in_channels: int = 2
    # head
    head: str = "mnf"
    head_hidden: tuple = (256, 128)
    n_flows: int = 2
    flow_hidden: int = 50
    dropout_p: float = 0.1
    prior_var: float = 1.0
    sigma_init: float = 0.05
    residual: bool = True
    kl_weight: float = 0.0
    # optimisation
    epochs: int = 30
    bnn_epochs: int = 30
    batch_size: int = 64
    lr: float = 1e-3
    bnn_lr: float = 1e-3
    augment: bool = True
    # calibration
    calibration: str = "beta"
    calib_samples: int = 100
    # data
    bands: tuple = ("GV", "GI")
    max_train: int | None = None
    max_val: int | None = None
    # run
    seed: int = 0
    accelerator: str = "cpu"
    devices: str = "1"
    num_workers: int = 0
    progress: bool = True
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        checks = [
            ("epochs", self.epochs >= 1, ">= 1"), ("bnn_epochs", self.bnn_epochs >= 1, ">= 1"),
            ("batch_size", self.batch_size >= 2, ">= 2 (BatchNorm)"), ("lr", self.lr > 0, "> 0"),
            ("bnn_lr", self.bnn_lr > 0, "> 0"), ("kl_weight", self.kl_weight >= 0, ">= 0"),
            ("head", self.head in HEAD_KINDS, ", ".join(HEAD_KINDS)),
            ("calibration", self.calibration in CALIBRATIONS, ", ".join(CALIBRATIONS)),
            ("n_flows", self.n_flows >= 0, ">= 0"), ("calib_samples", self.calib_samples >= 2, ">= 2"),
            ("bands", len(self.bands) >= 1 and all(b in ("GU", "GV", "GI") for b in self.bands),
             "a subset of GU, GV, GI"),
            ("widths", len(self.widths) >= 1 and min(self.widths) > 0, "positive integers"),
        ]
        for name, ok, allowed in checks:
            if not ok:
                raise ConfigError(name, "invalid training setting", value=getattr(self, name), allowed=allowed)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        for k in ("widths", "head_hidden", "bands"):
            d[k] = list(d[k])
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in d.items() if k in names}
        for k in ("widths", "head_hidden", "bands"):
            if k in kw:
                kw[k] = tuple(kw[k])
        return cls(**kw)

    def replace(self, **kw) -> "TrainConfig":
        return dataclasses.replace(self, **kw)


#: A config for the quick demo: ~4000 spectra, both stages and calibration in ~2-3 min on 2 cores.
QUICK = dict(epochs=8, bnn_epochs=4, batch_size=64, calib_samples=50, progress=False)

__all__ = ["TrainConfig", "CPU_WIDTHS", "CALIBRATIONS", "QUICK"]
