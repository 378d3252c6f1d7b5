"""Bayesian head on the frozen CNN features: mean and width of a Gaussian in z.

Layout (the authors' BNN head, ``docs/design.md``, Networks)::

    features (B, F)
    Bayesian dense (F -> 256) + BatchNorm + LeakyReLU
    Bayesian dense (256 -> 128) + BatchNorm + LeakyReLU
    Linear (128 -> 2)  -> raw mean m, raw width r
    mu = m  (+ the frozen CNN's own z when ``residual``)      (B,)
    sigma = SIGMA_FLOOR + softplus(r)                          (B,)

``residual=True`` (csstz default) makes the head predict a correction to the frozen
CNN's redshift (the CNN's output layer is part of the copied network), so that a short
BNN training starts from the CNN's accuracy; ``residual=False`` is the authors' head.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.nn import functional as F

from ..config import HEAD_KINDS
from ..errors import ConfigError
from .bayesian import FlipoutLinear, MCDropoutLinear, MNFLinear, apply_sampled

if TYPE_CHECKING:
    from collections.abc import Sequence

#: Lower bound of the predicted width (authors' code: 1e-4).
SIGMA_FLOOR = 1e-4


class BayesianHead(nn.Module):
    """Two Bayesian dense layers and a (mean, width) output.

    Parameters
    ----------
    in_features : int
        Backbone feature size F.
    kind : {"mnf", "flipout", "mcdropout"}
    hidden : tuple of int
        Widths of the Bayesian layers (authors: 256, 128).
    n_flows, flow_hidden : int
        MNF coupling layers and their hidden size.
    dropout_p : float
        MC-dropout rate.
    prior_var : float
        Weight prior variance.
    sigma_init : float
        Initial width (sets the bias of the width output).
    """

    def __init__(
        self,
        in_features: int,
        kind: str = "mnf",
        hidden: Sequence[int] = (256, 128),
        n_flows: int = 2,
        flow_hidden: int = 50,
        dropout_p: float = 0.1,
        prior_var: float = 1.0,
        sigma_init: float = 0.05,
    ) -> None:
        super().__init__()
        if kind not in HEAD_KINDS:
            raise ConfigError("head", "unknown head", value=kind, allowed=", ".join(HEAD_KINDS))
        self.kind = kind
        layers, norms, prev = [], [], in_features
        for h in hidden:
            if kind == "mnf":
                layers.append(MNFLinear(prev, h, n_flows=n_flows, flow_hidden=flow_hidden, prior_var=prior_var))
            elif kind == "flipout":
                layers.append(FlipoutLinear(prev, h, prior_var=prior_var))
            else:
                layers.append(MCDropoutLinear(prev, h, p=dropout_p))
            norms.append(nn.BatchNorm1d(h))
            prev = h
        self.layers = nn.ModuleList(layers)
        self.norms = nn.ModuleList(norms)
        self.out = nn.Linear(prev, 2)
        with torch.no_grad():
            self.out.weight[0].mul_(0.01)
            self.out.bias[0] = 0.0
            # softplus^-1(sigma_init - floor)
            s = torch.tensor(max(sigma_init - SIGMA_FLOOR, 1e-6))
            self.out.bias[1] = torch.log(torch.expm1(s))

    def forward(self, feats: torch.Tensor, n_samples: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, F) -> mu, sigma (B,); or (1|S, B, F) with ``n_samples`` -> (S, B) each."""
        h = feats
        for layer, norm in zip(self.layers, self.norms):
            if h.ndim == 3 and not norm.training:
                # prediction: sampled weights with the (eval) BatchNorm folded into them
                w, b = layer.sample_weights(n_samples or h.shape[0])
                scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
                shift = norm.bias - norm.running_mean * scale
                h = F.leaky_relu_(apply_sampled(h, w * scale, b * scale + shift), 0.01)
                continue
            h = layer(h, n_samples) if h.ndim == 3 else layer(h)
            shape = h.shape
            h = F.leaky_relu(norm(h.reshape(-1, shape[-1])).reshape(shape), 0.01)
        raw = self.out(h)
        return raw[..., 0], SIGMA_FLOOR + F.softplus(raw[..., 1])

    def kl(self) -> torch.Tensor:
        """Sum of the layers' KL terms (scalar)."""
        return sum(layer.kl() for layer in self.layers)


class BNN(nn.Module):
    """Frozen backbone + Bayesian head.

    Parameters
    ----------
    backbone : csstz.models.resnet1d.FrozenBackbone
    head : BayesianHead
    residual : bool
        Add the frozen CNN's z to the head's mean.
    """

    def __init__(self, backbone: nn.Module, head: BayesianHead, residual: bool = True) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.residual = bool(residual)

    def head_forward(self, feats: torch.Tensor, n_samples: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Head on cached features: (B, F) -> (B,) x2, or (1, B, F) + n_samples -> (S, B) x2."""
        mu, sigma = self.head(feats, n_samples)
        if self.residual:
            mu = mu + self.backbone.cnn_z(feats)
        return mu, sigma

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 2, L) -> mu, sigma (B,), one stochastic pass."""
        return self.head_forward(self.backbone(x))


__all__ = ["BayesianHead", "BNN", "SIGMA_FLOOR", "HEAD_KINDS"]
