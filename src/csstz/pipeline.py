"""The one place that chains the stages: train -> validation predictions -> calibrate -> predict -> evaluate.

``csstz train``, ``csstz predict`` and ``csstz demo`` run these functions; each stage
stays a library step of its own (:func:`csstz.train.run.train` only trains,
:func:`csstz.predict.predict_validation` predicts the validation rows,
:func:`csstz.calibrate.calibrate_run` fits and saves the calibration,
:func:`csstz.predict.predict_file` applies a calibration it is given).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from astropy.table import Table

from .config import EvaluateConfig, PredictConfig, PzConfig, TrainConfig

if TYPE_CHECKING:
    from ._types import PathLike


def train_pz_and_calibrate(dataset_path: PathLike, out_dir: PathLike, config: TrainConfig, pz: PzConfig) -> dict:
    """``csstz train --model pz``: physics stage + p(z) network, then temperature and flag thresholds on val."""
    from .calibrate import calibrate_pz_run
    from .io.run_dir import update_summary
    from .train.pz_run import train_pz
    from .train.run import select_rows

    train_pz(dataset_path, out_dir, config, pz)
    _, val_rows = select_rows(dataset_path, config)
    cal = calibrate_pz_run(out_dir, dataset_path, val_rows, pz.ood_quantile, pz.multimodal_mass)
    # the scan and the OOD reference quantiles stay in calibration.json only
    kept = {k: v for k, v in cal.items() if k not in ("nll_scan", "ood_reference")}
    return update_summary(out_dir, {"calibration": kept})


def train_and_calibrate(
    dataset_path: PathLike, out_dir: PathLike, config: TrainConfig | None = None, pz: PzConfig | None = None
) -> dict:
    """``csstz train``: train, predict the validation split, fit the calibration; a calibrated run.

    ``config.estimator == "pz"`` (the default) trains the p(z) estimator with ``pz``
    (:func:`train_pz_and_calibrate`); ``"paper"`` the paper's CNN and Bayesian head.

    Parameters
    ----------
    dataset_path : path-like
        Dataset HDF5 from ``csstz build``.
    out_dir : path-like
        Run directory (nothing is created if the dataset cannot be read).
    config : TrainConfig, optional

    Returns
    -------
    dict
        ``summary.json`` of the run: the training summary plus ``naive_val_sigma_nmad``,
        ``cnn.val_sigma_nmad``, ``bnn.val_sigma_nmad`` and ``calibration`` (method, parameters,
        validation coverage before/after).
    """
    import time

    from .calibrate import calibrate_run
    from .evaluate.metrics import sigma_nmad
    from .io.run_dir import update_summary
    from .predict import predict_validation
    from .train.run import select_rows, train

    cfg = config or TrainConfig()
    if cfg.estimator == "pz":
        return train_pz_and_calibrate(dataset_path, out_dir, cfg, pz or PzConfig())
    t0 = time.perf_counter()
    summary = train(dataset_path, out_dir, cfg)
    _, val_rows = select_rows(dataset_path, cfg)
    cnn_val = predict_validation(out_dir, dataset_path, val_rows, "cnn", seed=cfg.seed)
    bnn_val = predict_validation(out_dir, dataset_path, val_rows, "bnn", samples=cfg.calib_samples, seed=cfg.seed)
    z_val = bnn_val["z_true"]
    _, cal_summary = calibrate_run(out_dir, bnn_val, cfg.calibrate)
    return update_summary(
        out_dir,
        {
            "naive_val_sigma_nmad": sigma_nmad(np.full_like(z_val, summary["z_init"]), z_val),
            "cnn": {"val_sigma_nmad": sigma_nmad(cnn_val["z"], z_val)},
            "bnn": {"val_sigma_nmad": sigma_nmad(bnn_val["z"], z_val)},
            "calibration": cal_summary,
            "wall_s": summary["wall_s"] + time.perf_counter() - t0,
        },
    )


def predict_calibrated(
    run_dir: PathLike, spectra_path: PathLike, out_path: PathLike, config: PredictConfig | None = None, **overrides: Any
) -> Table:
    """``csstz predict``: predictions with the run's calibration applied (calibrated ZERR).

    The network defaults to the run's estimator: ``pz`` for a p(z) run (with PZ / PZ_GRID),
    the BNN for a paper run.
    """
    from .calibrate import load_run_calibration
    from .io.run_dir import read_summary
    from .predict import predict_file

    cfg = config or PredictConfig()
    estimator = read_summary(run_dir).get("estimator", "paper")
    model = overrides.pop("model", None) or cfg.model or ("pz" if estimator == "pz" else "bnn")
    if model == "pz":
        from .predict_pz import predict_pz_file

        return predict_pz_file(run_dir, spectra_path, out_path, cfg.replace(model="pz", **overrides))
    if estimator == "pz":
        from .errors import InputError

        raise InputError("model", "a p(z) run holds only the pz network", value=model, allowed="pz")
    config = cfg.replace(model=model)

    return predict_file(run_dir, spectra_path, out_path, config, calibration=load_run_calibration(run_dir), **overrides)


def evaluate(
    pred_path: PathLike, truth_path: PathLike, out_dir: PathLike, config: EvaluateConfig | None = None
) -> dict:
    """``csstz evaluate``: metrics and figures of one predictions file against its truth."""
    from .evaluate.report import evaluate_predictions

    return evaluate_predictions(pred_path, truth_path, out_dir, label=(config or EvaluateConfig()).label)


__all__ = ["train_and_calibrate", "predict_calibrated", "evaluate"]
