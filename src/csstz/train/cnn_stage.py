"""Stage 1: the CNN, trained with logcosh loss and Adam (``docs/design.md``, Training).

Shared by both stages: :func:`make_loaders` (streamed HDF5 data, fresh augmentation on
every pass through the training rows) and :func:`fit_stage` (a Lightning Trainer with a
best-by-validation-loss checkpoint and ``last.ckpt``, from which a killed run resumes).
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger

from ..io.torch_dataset import SpectraDataset, collate_batch
from ..models.factory import build_cnn

if TYPE_CHECKING:
    import numpy as np
    from torch.utils.data import DataLoader

    from .._types import PathLike

_EXPECTED_WARNINGS = (
    r".*module\(s\) in eval mode.*",
    r".*smaller than the logging interval.*",
    r".*does not have many workers.*",
    r".*LeafSpec.*",
)


def logcosh(d: torch.Tensor) -> torch.Tensor:
    """log(cosh(d)) element-wise, overflow-free: |d| + softplus(-2|d|) - log 2."""
    a = d.abs()
    return a + torch.nn.functional.softplus(-2.0 * a) - math.log(2.0)


class CNNModule(L.LightningModule):
    """Lightning wrapper of the CNN (``cfg`` = TrainConfig.to_dict() + ``z_init``)."""

    def __init__(self, cfg: dict) -> None:
        super().__init__()
        self.cfg = dict(cfg)
        self.net = build_cnn(self.cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def _loss(self, batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, int]:
        x, z = batch
        return logcosh(self.net(x) - z).mean(), z.shape[0]

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss, n = self._loss(batch)
        self.log("train_loss", loss, on_step=False, on_epoch=True, batch_size=n, sync_dist=True)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        loss, n = self._loss(batch)
        self.log("val_loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=n, sync_dist=True)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.net.parameters(), lr=float(self.cfg["lr"]))


class History(Callback):
    """Records the epoch-mean validation and training losses (in memory)."""

    def __init__(self) -> None:
        self.val, self.train = [], []

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking and "val_loss" in trainer.callback_metrics:
            self.val.append(float(trainer.callback_metrics["val_loss"]))

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if "train_loss" in trainer.callback_metrics:
            self.train.append(float(trainer.callback_metrics["train_loss"]))


def make_loaders(
    dataset_path: PathLike, train_rows: np.ndarray, val_rows: np.ndarray, cfg: dict
) -> tuple[DataLoader, DataLoader]:
    """Training (shuffled, augmented) and validation (fixed) DataLoaders."""
    bands = tuple(cfg["bands"])
    nw = int(cfg.get("num_workers", 0))
    train_ds = SpectraDataset(dataset_path, train_rows, bands=bands, augment=bool(cfg.get("augment", True)))
    val_ds = SpectraDataset(dataset_path, val_rows, bands=bands, augment=False)
    bs = int(cfg["batch_size"])
    common = dict(collate_fn=collate_batch, num_workers=nw, persistent_workers=nw > 0)
    train_dl = torch.utils.data.DataLoader(
        train_ds, batch_size=bs, shuffle=True, drop_last=len(train_ds) > bs, **common
    )
    val_dl = torch.utils.data.DataLoader(val_ds, batch_size=max(bs, 256), shuffle=False, **common)
    return train_dl, val_dl


def fit_stage(
    module: L.LightningModule,
    train_dl: DataLoader,
    val_dl: DataLoader,
    cfg: dict,
    ckpt_dir: PathLike,
    epochs: int,
    name: str,
    unused_parameters: bool = False,
) -> tuple[str, History, float]:
    """Fit with Lightning; resume from ``ckpt_dir/last.ckpt`` when it exists.

    With more than one device the strategy is DDP (``unused_parameters``: let DDP skip
    parameters that do not reach the loss, e.g. MNF's auxiliary r(z|W) when the KL
    weight is 0). Every rank runs the code after ``fit`` too; the files it writes are
    identical and atomic.

    Returns
    -------
    best_path : str
        The checkpoint with the lowest validation loss.
    history : History
        Losses of the epochs run in this call.
    wall_s : float
    """
    ckpt_dir = Path(ckpt_dir)
    ckpt = ModelCheckpoint(
        dirpath=ckpt_dir,
        filename="best",
        monitor="val_loss",
        mode="min",
        save_last=True,
        save_top_k=1,
        enable_version_counter=False,
    )
    hist = History()
    devices = cfg.get("devices", "1")
    devices = int(devices) if str(devices).isdigit() else devices
    multi = isinstance(devices, int) and devices > 1
    if not cfg.get("progress", True):  # no banner lines ("GPU available: ...") in quiet runs
        logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    trainer = L.Trainer(
        max_epochs=int(epochs),
        accelerator=cfg.get("accelerator", "cpu"),
        devices=devices,
        strategy=("ddp_find_unused_parameters_true" if unused_parameters else "ddp") if multi else "auto",
        callbacks=[ckpt, hist],
        logger=CSVLogger(str(ckpt_dir.parent.parent / "logs"), name=name),
        enable_progress_bar=bool(cfg.get("progress", True)),
        enable_model_summary=False,
        num_sanity_val_steps=0,
        log_every_n_steps=10,
    )
    last = ckpt_dir / "last.ckpt"
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        for msg in _EXPECTED_WARNINGS:  # the frozen backbone is in eval mode on purpose, etc.
            warnings.filterwarnings("ignore", message=msg)
        trainer.fit(module, train_dl, val_dl, ckpt_path=str(last) if last.is_file() else None)
    wall = time.perf_counter() - t0
    best = ckpt.best_model_path or str(last)
    return best, hist, wall


def load_lightning_weights(path: PathLike, prefix: str) -> dict:
    """The state_dict entries under ``prefix`` of a Lightning checkpoint (tensors only)."""
    state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


__all__ = ["CNNModule", "History", "logcosh", "make_loaders", "fit_stage", "load_lightning_weights"]
