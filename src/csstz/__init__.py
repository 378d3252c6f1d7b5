"""csstz: redshifts from CSST slitless spectra (arXiv:2407.13991, as a package).

The short public API below is loaded lazily (module ``__getattr__``), so that
``import csstz`` or ``import csstz.simulate`` never imports torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.10.1"

#: public name -> module that defines it
_PUBLIC = {
    "load_instrument": "csstz.instrument",
    "simulate_file": "csstz.simulate.api",
    "simulate_arrays": "csstz.simulate.api",
    "build_dataset": "csstz.build",
    "read_spectra": "csstz.io.spectra",
    "write_spectra": "csstz.io.spectra",
    "read_predictions": "csstz.io.predictions",
    "fit_templates": "csstz.templates.fit",
    "train_and_calibrate": "csstz.pipeline",
    "predict_calibrated": "csstz.pipeline",
    "TrainConfig": "csstz.config",
    "PredictConfig": "csstz.config",
    "ZWARN": "csstz.zwarn",
    "sigma_nmad": "csstz.evaluate.metrics",
    "outlier_fraction": "csstz.evaluate.metrics",
    "weighted_mean_uncertainty": "csstz.evaluate.metrics",
}

__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'csstz' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))
