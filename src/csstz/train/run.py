"""``train``: the CNN, then the Bayesian head on its frozen backbone. Training only.

Writes into the run directory (:mod:`csstz.io.run_dir`): ``cnn.pt``, ``bnn.pt``,
``summary.json`` (config, losses, naive baseline, wall times), ``config.yaml``,
``run_fingerprint.json``, Lightning checkpoints and CSV logs. Validation
predictions and the calibration are their own steps (:mod:`csstz.predict`,
:mod:`csstz.calibrate`), chained by :mod:`csstz.pipeline`, which is what
``csstz train`` runs.

Resuming: a stage whose model file exists is skipped; otherwise its Lightning
``last.ckpt`` (if any) is resumed. So re-running the same command after a kill
continues where it stopped. Only the ``train`` and ``val`` splits are read; best
checkpoints see the validation split only.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

import lightning as L
import numpy as np
import torch

from ..config import TrainConfig, to_yaml
from ..errors import InputError
from ..io.run_dir import write_json, write_text
from ..io.spectra import read_catalog, split_rows
from ..rng import run_rng
from ..schema import BNN_FILE, CHECKPOINT_DIR, CNN_FILE, CONFIG_FILE, FINGERPRINT_FILE, SUMMARY_FILE
from .bnn_stage import BNNModule
from .checkpoint import load_model, save_model
from .cnn_stage import CNNModule, fit_stage, load_lightning_weights, logcosh, make_loaders

if TYPE_CHECKING:
    from astropy.table import Table

    from .._types import PathLike

STREAM_SUBSET = 11


#: config keys that do not change what is trained (hardware, display)
_RUNTIME_KEYS = ("progress", "num_workers", "accelerator", "devices")


def _check_run_fingerprint(out: Path, dataset_path: PathLike, cat: Table, cfg: TrainConfig) -> None:
    """Refuse to resume a run directory made from another dataset or configuration.

    A stage whose model file exists is skipped and a stage with a ``last.ckpt``
    is resumed, so a changed dataset, seed or network would otherwise silently
    reuse old weights. The fingerprint holds the catalogue's TARGETID/Z/SPLIT
    digest and every config value that affects training.
    """
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
            changed = sorted(
                k
                for k in set(old.get("config", {})) | set(conf)
                if old.get("config", {}).get(k) != json.loads(json.dumps(conf)).get(k)
            )
            what = "the dataset" if old.get("dataset_digest") != fp["dataset_digest"] else ", ".join(changed)
            raise InputError(
                "--out",
                f"run directory was made with a different {what}; use a new --out "
                "(or the original arguments to resume)",
                value=str(out),
            )
    else:
        write_json(path, fp)


def _subset(rows: np.ndarray, n: int | None, seed: int, salt: int) -> np.ndarray:
    if n is None or n >= rows.size:
        return rows
    rng = run_rng(seed * 1000 + salt, STREAM_SUBSET)
    return np.sort(rng.choice(rows, size=int(n), replace=False))


def select_rows(dataset_path: PathLike, cfg: TrainConfig) -> tuple[np.ndarray, np.ndarray]:
    """Training and validation rows of a dataset for this config (``max_train``/``max_val`` subsets).

    Raises
    ------
    InputError
        No SPLIT column, or no train/val rows.
    """
    train_rows = _subset(split_rows(dataset_path, "train"), cfg.max_train, cfg.seed, 1)
    val_rows = _subset(split_rows(dataset_path, "val"), cfg.max_val, cfg.seed, 2)
    return train_rows, val_rows


def train(dataset_path: PathLike, out_dir: PathLike, config: TrainConfig | None = None) -> dict:
    """Train the CNN and the Bayesian head; write the models and ``summary.json`` into ``out_dir``.

    Parameters
    ----------
    dataset_path : path-like
        Dataset HDF5 from ``csstz build`` (catalogue with Z and SPLIT).
    out_dir : path-like
        Run directory (created only once the dataset has been read; an existing one is resumed).
    config : TrainConfig, optional
        Defaults: ``TrainConfig()`` (CPU-tuned). For the quick demo use
        ``TrainConfig(**csstz.train.config.QUICK)``.

    Returns
    -------
    dict
        The summary also written to ``summary.json``: ``naive_val_loss`` (logcosh of the
        median training z), ``cnn`` {``val_losses``, ``best_val_loss``, ``epochs_run``,
        ``wall_s``}, ``bnn`` {same, NLL}, ``z_range``, ``wall_s``, ``n_train``, ``n_val``.

    Raises
    ------
    InputError
        No SPLIT column, or no train/val rows; invalid config values.
    FileFormatError
        The dataset is missing or unreadable (nothing is created).
    """
    cfg = config or TrainConfig()
    out = Path(out_dir)
    t_start = time.perf_counter()
    # read and check everything before anything is created on disk
    cat = read_catalog(dataset_path)
    if "Z" not in cat.colnames:
        raise InputError("Z", "dataset catalogue has no Z column", path=str(dataset_path))
    train_rows, val_rows = select_rows(dataset_path, cfg)
    if train_rows.size < cfg.batch_size:
        raise InputError(
            "batch_size",
            "more than the number of training spectra",
            value=cfg.batch_size,
            allowed=f"<= {train_rows.size}",
        )
    out.mkdir(parents=True, exist_ok=True)
    _check_run_fingerprint(out, dataset_path, cat, cfg)
    write_text(out / CONFIG_FILE, to_yaml({"model": cfg.model, "optimiser": cfg.optimiser, "calibrate": cfg.calibrate}))
    z_all = np.asarray(cat["Z"], np.float64)
    z_train, z_val = z_all[train_rows], z_all[val_rows]
    z_init = float(np.median(z_train))
    z_range = [float(z_train.min()), float(z_train.max())]
    d = cfg.to_dict() | {"z_init": z_init}
    naive_loss = float(logcosh(torch.as_tensor(z_init - z_val)).mean())
    naive_nll = float(
        np.log(np.std(z_train))
        + 0.5 * np.mean(((z_val - np.mean(z_train)) / np.std(z_train)) ** 2)
        + 0.5 * np.log(2 * np.pi)
    )
    summary = {
        "dataset": str(dataset_path),
        "config": cfg.to_dict(),
        "n_train": int(train_rows.size),
        "n_val": int(val_rows.size),
        "z_range": z_range,
        "z_init": z_init,
        "naive_val_loss": naive_loss,
        "naive_val_nll": naive_nll,
    }
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    train_dl, val_dl = make_loaders(dataset_path, train_rows, val_rows, d)

    # --- stage 1: CNN ---------------------------------------------------------------------------
    cnn_path = out / CNN_FILE
    if not cnn_path.is_file():
        module = CNNModule(d)
        best, hist, wall = fit_stage(module, train_dl, val_dl, d, out / CHECKPOINT_DIR / "cnn", cfg.epochs, "cnn")
        module.net.cpu().load_state_dict(load_lightning_weights(best, "net."))  # prediction runs on the CPU
        module.net.eval()
        cnn_meta = {
            "val_losses": hist.val,
            "train_losses": hist.train,
            "best_val_loss": min(hist.val, default=None),
            "epochs_run": len(hist.val),
            "wall_s": wall,
            "z_range": z_range,
        }
        save_model(cnn_path, module.net, "cnn", d, cnn_meta)
    cnn, payload = load_model(cnn_path)
    summary["cnn"] = dict(payload["meta"])

    # --- stage 2: Bayesian head on the frozen backbone -----------------------------------------
    bnn_path = out / BNN_FILE
    if not bnn_path.is_file():
        L.seed_everything(cfg.seed + 1, workers=True, verbose=False)
        module = BNNModule(d, cnn, n_train=train_rows.size)
        best, hist, wall = fit_stage(
            module, train_dl, val_dl, d, out / CHECKPOINT_DIR / "bnn", cfg.bnn_epochs, "bnn", unused_parameters=True
        )
        module.bnn.cpu().load_state_dict(load_lightning_weights(best, "bnn."))
        save_model(
            bnn_path,
            module.bnn,
            "bnn",
            d,
            {
                "val_losses": hist.val,
                "train_losses": hist.train,
                "best_val_loss": min(hist.val, default=None),
                "epochs_run": len(hist.val),
                "wall_s": wall,
                "z_range": z_range,
            },
        )
    _, payload = load_model(bnn_path)
    summary["bnn"] = dict(payload["meta"])
    summary["wall_s"] = time.perf_counter() - t_start
    write_json(out / SUMMARY_FILE, summary)
    return summary


__all__ = ["train", "select_rows"]
