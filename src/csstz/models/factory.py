"""Build networks from a plain config dict (as stored in model files).

Keys used (defaults in :class:`csstz.train.config.TrainConfig`): ``in_channels``,
``stem_channels``, ``widths``, ``kernel``, ``dropout``, ``z_init``; ``head``,
``head_hidden``, ``n_flows``, ``flow_hidden``, ``dropout_p``, ``prior_var``,
``sigma_init``, ``residual``.
"""

from __future__ import annotations

import copy

from .heads import BNN, BayesianHead
from .pz import PzNet
from .resnet1d import FrozenBackbone, ResNet1d


def build_cnn(cfg: dict) -> ResNet1d:
    """The CNN of a config."""
    return ResNet1d(
        in_channels=int(cfg.get("in_channels", 2)),
        stem_channels=int(cfg["stem_channels"]),
        widths=tuple(cfg["widths"]),
        kernel=int(cfg["kernel"]),
        dropout=float(cfg["dropout"]),
        z_init=float(cfg.get("z_init", 0.0)),
    )


def build_head(cfg: dict, in_features: int) -> BayesianHead:
    """The Bayesian head of a config on ``in_features`` backbone features."""
    return BayesianHead(
        in_features,
        kind=cfg["head"],
        hidden=tuple(cfg["head_hidden"]),
        n_flows=int(cfg["n_flows"]),
        flow_hidden=int(cfg["flow_hidden"]),
        dropout_p=float(cfg["dropout_p"]),
        prior_var=float(cfg["prior_var"]),
        sigma_init=float(cfg.get("sigma_init", 0.05)),
    )


def build_pz(cfg: dict) -> PzNet:
    """The p(z) network of a config (its n(z) prior buffer comes with the state_dict)."""
    return PzNet(
        int(cfg["n_grid"]),
        int(cfg["n_curves"]),
        int(cfg["n_scalars"]),
        members=int(cfg["members"]),
        hidden=int(cfg["hidden"]),
        stride=int(cfg["stride"]),
        kernel=int(cfg["kernel"]),
        dilations=tuple(cfg["dilations"]),
    )


def build_bnn(cfg: dict, cnn: ResNet1d | None = None) -> BNN:
    """BNN = a deep copy of ``cnn`` (or a fresh one) frozen + a new head."""
    base = copy.deepcopy(cnn) if cnn is not None else build_cnn(cfg)
    backbone = FrozenBackbone(base)
    return BNN(backbone, build_head(cfg, backbone.n_features), residual=bool(cfg.get("residual", True)))


__all__ = ["build_cnn", "build_head", "build_bnn", "build_pz"]
