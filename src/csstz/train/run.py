"""``csstz train``: CNN, then the Bayesian head on its frozen backbone, then the calibration.

Run directory layout::

    RUN_DIR/cnn.pt               CNN model file (state_dict + config + version + meta)
    RUN_DIR/bnn.pt               frozen backbone + head model file
    RUN_DIR/calibration.json     calibration fitted on the validation split
    RUN_DIR/summary.json         config, losses per epoch, naive baseline, wall times
    RUN_DIR/checkpoints/{cnn,bnn}/{best,last}.ckpt   Lightning checkpoints (resume)
    RUN_DIR/logs/                CSV logs

Resuming: a stage whose model file exists is skipped; otherwise its Lightning
``last.ckpt`` (if any) is resumed. So re-running the same command after a kill
continues where it stopped. Only the ``train`` and ``val`` splits are read; best
checkpoints, early choices and the calibration see the validation split only.
This module orchestrates the command and therefore also calls the prediction and
calibration stages (on validation data).
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import lightning as L
import numpy as np
import torch

from ..calibrate import CALIBRATION_FILE, P68, P95, fit_calibration, interval_coverage
from ..evaluate.metrics import sigma_nmad  # pure numpy, the paper's formula
from ..errors import InputError
from ..io.atomic import atomic_path
from ..io.spectra import read_catalog
from ..io.torch_dataset import SpectraDataset, split_rows
from ..rng import run_rng
from .bnn_stage import BNNModule
from .checkpoint import BNN_FILE, CNN_FILE, load_model, save_model
from .cnn_stage import CNNModule, fit_stage, load_lightning_weights, logcosh, make_loaders
from .config import TrainConfig

STREAM_SUBSET = 11


#: config keys that do not change what is trained (hardware, display)
_RUNTIME_KEYS = ("progress", "num_workers", "accelerator", "devices")
FINGERPRINT_FILE = "run_fingerprint.json"


def _check_run_fingerprint(out: Path, dataset_path, cat, cfg: TrainConfig) -> None:
    """Refuse to resume a run directory made from another dataset or configuration.

    A stage whose model file exists is skipped and a stage with a ``last.ckpt``
    is resumed, so a changed dataset, seed or network would otherwise silently
    reuse old weights. The fingerprint holds the catalogue's TARGETID/Z/SPLIT
    digest and every config value that affects training.
    """
    import hashlib

    h = hashlib.sha256()
    for col in ("TARGETID", "Z", "SPLIT"):
        if col in cat.colnames:
            h.update(np.ascontiguousarray(np.asarray(cat[col])).tobytes())
    conf = {k: v for k, v in cfg.to_dict().items() if k not in _RUNTIME_KEYS}
    fp = {"dataset_digest": h.hexdigest(), "n_rows": len(cat), "config": conf}
    path = out / FINGERPRINT_FILE
    if path.is_file():
        try:
            old = json.loads(path.read_text())
        except ValueError:
            raise InputError("--out", f"unreadable {FINGERPRINT_FILE} in the run directory", value=str(out)) from None
        if old != json.loads(json.dumps(fp)):
            changed = sorted(k for k in set(old.get("config", {})) | set(conf)
                             if old.get("config", {}).get(k) != json.loads(json.dumps(conf)).get(k))
            what = "the dataset" if old.get("dataset_digest") != fp["dataset_digest"] else ", ".join(changed)
            raise InputError("--out", f"run directory was made with a different {what}; use a new --out "
                             "(or the original arguments to resume)", value=str(out))
    else:
        _write_json(path, fp)


def _subset(rows: np.ndarray, n: int | None, seed: int, salt: int) -> np.ndarray:
    if n is None or n >= rows.size:
        return rows
    rng = run_rng(seed * 1000 + salt, STREAM_SUBSET)
    return np.sort(rng.choice(rows, size=int(n), replace=False))


def _write_json(path: Path, obj) -> None:
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(obj, indent=2))


def train(dataset_path, out_dir, config: TrainConfig | None = None) -> dict:
    """Train CNN + BNN head and fit the calibration; write everything into ``out_dir``.

    Parameters
    ----------
    dataset_path : path-like
        Dataset HDF5 from ``csstz build`` (catalogue with Z and SPLIT).
    out_dir : path-like
        Run directory (created; an existing one is resumed).
    config : TrainConfig, optional
        Defaults: ``TrainConfig()`` (CPU-tuned). For the quick demo use
        ``TrainConfig(**csstz.train.config.QUICK)``.

    Returns
    -------
    dict
        The summary also written to ``summary.json``: ``naive_val_loss`` (logcosh of the
        median training z), ``cnn`` {``val_losses``, ``best_val_loss``, ``epochs_run``,
        ``wall_s``, ``val_sigma_nmad``}, ``bnn`` {same, NLL}, ``calibration``
        {method, params, val coverage before/after}, ``wall_s``, ``n_train``, ``n_val``.

    Raises
    ------
    InputError
        No SPLIT column, or no train/val rows; invalid config values.
    """
    cfg = config or TrainConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    cat = read_catalog(dataset_path)
    if "Z" not in cat.colnames:
        raise InputError("Z", "dataset catalogue has no Z column", path=str(dataset_path))
    train_rows = _subset(split_rows(dataset_path, "train"), cfg.max_train, cfg.seed, 1)
    val_rows = _subset(split_rows(dataset_path, "val"), cfg.max_val, cfg.seed, 2)
    if train_rows.size < cfg.batch_size:
        raise InputError("batch_size", "more than the number of training spectra",
                         value=cfg.batch_size, allowed=f"<= {train_rows.size}")
    _check_run_fingerprint(out, dataset_path, cat, cfg)
    z_all = np.asarray(cat["Z"], np.float64)
    z_train, z_val = z_all[train_rows], z_all[val_rows]
    z_init = float(np.median(z_train))
    z_range = [float(z_train.min()), float(z_train.max())]
    d = cfg.to_dict() | {"z_init": z_init}
    naive_loss = float(logcosh(torch.as_tensor(z_init - z_val)).mean())
    naive_nll = float(np.log(np.std(z_train)) + 0.5 * np.mean(((z_val - np.mean(z_train)) / np.std(z_train)) ** 2)
                      + 0.5 * np.log(2 * np.pi))
    summary = {"dataset": str(dataset_path), "config": cfg.to_dict(), "n_train": int(train_rows.size),
               "n_val": int(val_rows.size), "z_range": z_range, "z_init": z_init,
               "naive_val_loss": naive_loss, "naive_val_nll": naive_nll,
               "naive_val_sigma_nmad": sigma_nmad(np.full_like(z_val, z_init), z_val)}
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    train_dl, val_dl = make_loaders(dataset_path, train_rows, val_rows, d)
    val_ds = SpectraDataset(dataset_path, val_rows, bands=cfg.bands, augment=False)
    from ..predict import predict_dataset  # the train command also predicts on validation

    # --- stage 1: CNN ---------------------------------------------------------------------------
    cnn_path = out / CNN_FILE
    if not cnn_path.is_file():
        module = CNNModule(d)
        best, hist, wall = fit_stage(module, train_dl, val_dl, d, out / "checkpoints" / "cnn", cfg.epochs, "cnn")
        module.net.cpu().load_state_dict(load_lightning_weights(best, "net."))  # prediction runs on the CPU
        module.net.eval()
        vz = predict_dataset(module.net, "cnn", val_ds, batch_size=512)["z"]
        cnn_meta = {"val_losses": hist.val, "train_losses": hist.train, "best_val_loss": min(hist.val, default=None),
                    "epochs_run": len(hist.val), "wall_s": wall, "val_sigma_nmad": sigma_nmad(vz, z_val),
                    "z_range": z_range}
        save_model(cnn_path, module.net, "cnn", d, cnn_meta)
    cnn, payload = load_model(cnn_path)
    summary["cnn"] = payload["meta"]

    # --- stage 2: Bayesian head on the frozen backbone -----------------------------------------
    bnn_path = out / BNN_FILE
    if not bnn_path.is_file():
        L.seed_everything(cfg.seed + 1, workers=True, verbose=False)
        module = BNNModule(d, cnn, n_train=train_rows.size)
        best, hist, wall = fit_stage(module, train_dl, val_dl, d, out / "checkpoints" / "bnn", cfg.bnn_epochs, "bnn",
                                     unused_parameters=True)
        module.bnn.cpu().load_state_dict(load_lightning_weights(best, "bnn."))
        save_model(bnn_path, module.bnn, "bnn", d,
                   {"val_losses": hist.val, "train_losses": hist.train, "best_val_loss": min(hist.val, default=None),
                    "epochs_run": len(hist.val), "wall_s": wall, "z_range": z_range})
    bnn, payload = load_model(bnn_path)
    summary["bnn"] = dict(payload["meta"])

    # --- calibration on the validation split ----------------------------------------------------
    raw = predict_dataset(bnn, "bnn", val_ds, samples=cfg.calib_samples, batch_size=512, seed=cfg.seed)
    uncal = np.hypot(raw["zerr_epistemic"], raw["zerr_aleatoric"])
    cal = fit_calibration(z_val, raw["z"], uncal, cfg.calibration)
    cal.save(out / CALIBRATION_FILE)
    summary["bnn"]["val_sigma_nmad"] = sigma_nmad(raw["z"], z_val)
    summary["calibration"] = cal.to_dict() | {
        "val_coverage_68_before": interval_coverage(z_val, raw["z"] - uncal, raw["z"] + uncal),
        "val_coverage_95_before": interval_coverage(z_val, raw["z"] - 2 * uncal, raw["z"] + 2 * uncal),
        "val_coverage_68_after": interval_coverage(z_val, *cal.interval(raw["z"], uncal, P68)),
        "val_coverage_95_after": interval_coverage(z_val, *cal.interval(raw["z"], uncal, P95))}
    summary["wall_s"] = time.perf_counter() - t_start
    _write_json(out / "summary.json", summary)
    return summary


def config_from_args(a) -> TrainConfig:
    """TrainConfig from ``csstz train`` arguments (None = keep the default)."""
    kw = {"epochs": a.epochs, "bnn_epochs": a.bnn_epochs if a.bnn_epochs is not None else a.epochs,
          "head": a.head, "calibration": a.calibration, "seed": a.seed,
          "bands": tuple(b.strip() for b in a.bands.split(",") if b.strip()),
          "accelerator": a.accelerator, "devices": str(a.devices), "progress": not a.no_progress}
    if a.batch_size is not None:
        kw["batch_size"] = a.batch_size
    if a.lr is not None:
        kw["lr"] = a.lr
    for name in ("widths", "kl_weight", "n_flows", "max_train", "num_workers"):
        val = getattr(a, name, None)
        if val is not None:
            kw[name] = tuple(int(w) for w in val.split(",")) if name == "widths" else val
    return TrainConfig(**kw)


def train_from_args(a) -> dict:
    """``csstz train`` entry point."""
    return train(a.dataset, a.out, config_from_args(a))


__all__ = ["train", "train_from_args", "config_from_args"]
