"""Training configuration: :class:`csstz.config.TrainConfig` (model + optimiser + calibration), stored
in every model file. The defaults are defined once, in :mod:`csstz.config`.

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

from ..config import CALIBRATIONS, CPU_WIDTHS, TrainConfig

#: A config for the quick demo: ~4000 spectra, both stages and calibration in ~2-3 min on 2 cores.
QUICK = dict(epochs=8, bnn_epochs=4, batch_size=64, calib_samples=50, progress=False)

__all__ = ["TrainConfig", "CPU_WIDTHS", "CALIBRATIONS", "QUICK"]
