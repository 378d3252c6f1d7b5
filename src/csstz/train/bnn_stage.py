"""Stage 2: the Bayesian head on the CNN's frozen backbone (``docs/design.md``, Networks and Training).

Only the head's parameters reach the optimiser; the backbone is a
:class:`csstz.models.resnet1d.FrozenBackbone` (no gradients, always eval mode), so its
weights and BatchNorm buffers stay bit-identical to the trained CNN's.

Loss per batch: mean Gaussian negative log likelihood
    log sigma + (z - mu)^2 / (2 sigma^2) + log(2 pi) / 2
plus ``kl_weight * KL / n_train`` (the ELBO per training spectrum when kl_weight = 1;
kl_weight = 0, the default, is the authors' code, which leaves the KL out).
"""

from __future__ import annotations

import math

import lightning as L
import torch

from ..models.factory import build_bnn
from ..models.resnet1d import ResNet1d


def gaussian_nll(mu: torch.Tensor, sigma: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Per-item negative log likelihood of z under N(mu, sigma^2), shape of z."""
    return torch.log(sigma) + 0.5 * ((z - mu) / sigma) ** 2 + 0.5 * math.log(2.0 * math.pi)


class BNNModule(L.LightningModule):
    """Lightning wrapper of frozen backbone + Bayesian head.

    Parameters
    ----------
    cfg : dict
        TrainConfig.to_dict() (+ z_init).
    cnn : ResNet1d, optional
        The trained CNN to copy (None when the weights come from a checkpoint).
    n_train : int
        Number of training spectra (scales the KL term).
    """

    def __init__(self, cfg: dict, cnn: ResNet1d | None, n_train: int) -> None:
        super().__init__()
        self.cfg = dict(cfg)
        self.bnn = build_bnn(self.cfg, cnn)
        self.n_train = max(int(n_train), 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.bnn(x)

    def _losses(self, batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, int]:
        x, z = batch
        mu, sigma = self.bnn(x)
        return gaussian_nll(mu, sigma, z).mean(), z.shape[0]

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        nll, n = self._losses(batch)
        loss = nll
        kw = float(self.cfg.get("kl_weight", 0.0))
        if kw > 0:
            kl = self.bnn.head.kl()
            loss = loss + kw * kl / self.n_train
            self.log("kl", kl, on_step=False, on_epoch=True, batch_size=n, sync_dist=True)
        self.log("train_loss", loss, on_step=False, on_epoch=True, batch_size=n, sync_dist=True)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        nll, n = self._losses(batch)
        self.log("val_loss", nll, on_step=False, on_epoch=True, prog_bar=True, batch_size=n, sync_dist=True)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.bnn.head.parameters(), lr=float(self.cfg["bnn_lr"]))


__all__ = ["BNNModule", "gaussian_nll"]
