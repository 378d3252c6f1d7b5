"""The 1d ResNet redshift network (``docs/design.md``, Networks; He et al. 2015 blocks).

Layout (paper section 3.1, with the block widths of the authors' released code)::

    x (B, 2, L)
    stem: Conv1d(2 -> stem, k=7, pad 3) + BN + ReLU + MaxPool(2)       (B, stem, L/2)
    8 ResNet blocks, widths w[0..7]; block i downsamples (stride 2) when i is even
      (every second block); the skip carries Conv1d(k=1, stride) + BN where a block
      downsamples or changes width; every conv is followed by BN and ReLU (the second
      conv's ReLU comes after the addition, as in He et al.)     (B, w[7], ~L/32)
    global average pool                                          (B, w[7])   = features
    dropout(0.2) + Linear(w[7] -> 1)                             (B,)        = z

Widths: the authors use 64,64,128,128,256,256,512,512 (kernel 7). The CPU default of
csstz is a quarter of that (16,16,32,32,64,64,128,128), chosen by measurement on 2
cores (see ``benchmarks/bench_train.py`` and ``csstz.train.config``).
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

import torch
from torch import nn

from ..errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Self

#: Channel widths of the authors' released code (paper's reference implementation).
AUTHORS_WIDTHS = (64, 64, 128, 128, 256, 256, 512, 512)


class ResBlock1d(nn.Module):
    """Two convolutions with BN + ReLU and an identity or 1x1-conv skip.

    Parameters
    ----------
    in_ch, out_ch : int
        Channels in and out.
    kernel : int
        Odd kernel size of the two convolutions.
    stride : int
        1, or 2 to halve the length (then the skip carries a convolution).
    """

    def __init__(self, in_ch: int, out_ch: int, kernel: int = 7, stride: int = 1) -> None:
        super().__init__()
        pad = kernel // 2
        self.conv1 = nn.Conv1d(in_ch, out_ch, kernel, stride=stride, padding=pad, bias=False)
        self.bn1 = nn.BatchNorm1d(out_ch)
        self.conv2 = nn.Conv1d(out_ch, out_ch, kernel, padding=pad, bias=False)
        self.bn2 = nn.BatchNorm1d(out_ch)
        self.skip = None
        if stride != 1 or in_ch != out_ch:
            self.skip = nn.Sequential(nn.Conv1d(in_ch, out_ch, 1, stride=stride, bias=False), nn.BatchNorm1d(out_ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x (B, in_ch, L) -> (B, out_ch, ceil(L / stride))
        h = torch.relu(self.bn1(self.conv1(x)))
        h = self.bn2(self.conv2(h))
        s = x if self.skip is None else self.skip(x)
        return torch.relu(h + s)


class ResNet1d(nn.Module):
    """1d ResNet: spectrum (B, 2, L) -> redshift (B,).

    Parameters
    ----------
    in_channels : int
        Input channels (2: flux, error).
    stem_channels : int
        Kernels of the first convolution (paper: 32).
    widths : sequence of 8 int
        Channels of the 8 ResNet blocks.
    kernel : int
        Kernel size of stem and blocks (paper/code: 7).
    dropout : float
        Dropout before the output layer (paper: 0.2).
    z_init : float
        Initial output bias (e.g. the median training redshift).

    Raises
    ------
    ConfigError
        Non-positive widths, even kernel, or dropout outside [0, 1).
    """

    def __init__(
        self,
        in_channels: int = 2,
        stem_channels: int = 32,
        widths: Sequence[int] = AUTHORS_WIDTHS,
        kernel: int = 7,
        dropout: float = 0.2,
        z_init: float = 0.0,
    ) -> None:
        super().__init__()
        widths = tuple(int(w) for w in widths)
        if not widths or min(widths) <= 0 or stem_channels <= 0:
            raise ConfigError("widths", "channel widths must be positive", value=widths)
        if kernel <= 0 or kernel % 2 == 0:
            raise ConfigError("kernel", "kernel size must be odd and positive", value=kernel)
        if not 0.0 <= dropout < 1.0:
            raise ConfigError("dropout", "dropout out of range", value=dropout, allowed="[0, 1)")
        self.stem = nn.Sequential(
            nn.Conv1d(in_channels, stem_channels, kernel, padding=kernel // 2, bias=False),
            nn.BatchNorm1d(stem_channels),
            nn.ReLU(),
            nn.MaxPool1d(2, ceil_mode=True),
        )
        blocks, prev = [], stem_channels
        for i, w in enumerate(widths):
            blocks.append(ResBlock1d(prev, w, kernel, stride=2 if i % 2 == 0 else 1))
            prev = w
        self.blocks = nn.Sequential(*blocks)
        self.n_features = prev
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(prev, 1)
        with torch.no_grad():
            self.out.bias.fill_(float(z_init))

    def fused_copy(self) -> "ResNet1d":
        """An eval-mode copy with every BatchNorm folded into the convolution before it.

        Same outputs to float rounding (~1e-6), ~12% faster on the CPU; for prediction only.
        """
        from torch.nn.utils.fusion import fuse_conv_bn_eval

        net = copy.deepcopy(self).eval()
        net.stem[0] = fuse_conv_bn_eval(net.stem[0], net.stem[1])
        net.stem[1] = nn.Identity()
        for b in net.blocks:
            b.conv1, b.bn1 = fuse_conv_bn_eval(b.conv1, b.bn1), nn.Identity()
            b.conv2, b.bn2 = fuse_conv_bn_eval(b.conv2, b.bn2), nn.Identity()
            if b.skip is not None:
                b.skip = fuse_conv_bn_eval(b.skip[0], b.skip[1])
        return net

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Feature extractor: (B, 2, L) -> (B, n_features) after global average pooling."""
        return self.blocks(self.stem(x)).mean(dim=-1)

    def head(self, feats: torch.Tensor) -> torch.Tensor:
        """Output layer: (B, n_features) -> (B,)."""
        return self.out(self.dropout(feats)).squeeze(-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 3 or x.shape[1] != self.stem[0].in_channels:
            raise ConfigError("x", f"input must be (B, {self.stem[0].in_channels}, L)", value=tuple(x.shape))
        return self.head(self.features(x))


class FrozenBackbone(nn.Module):
    """A copy of a trained CNN's feature extractor that never trains.

    ``requires_grad`` is off for every parameter and :meth:`train` always leaves it in
    eval mode, so BatchNorm running statistics and dropout stay fixed whatever the
    surrounding training loop does.
    """

    def __init__(self, cnn: ResNet1d) -> None:
        super().__init__()
        self.cnn = cnn
        for p in self.cnn.parameters():
            p.requires_grad_(False)
        self.cnn.eval()

    def train(self, mode: bool = True) -> Self:  # noqa: ARG002 - always eval
        return super().train(False)

    @property
    def n_features(self) -> int:
        return self.cnn.n_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 2, L) -> features (B, n_features), no gradient."""
        with torch.no_grad():
            return self.cnn.features(x)

    def cnn_z(self, feats: torch.Tensor) -> torch.Tensor:
        """The frozen CNN's own redshift from its features: (B, F) or (S, B, F) -> (B,) / (S, B)."""
        with torch.no_grad():
            return self.cnn.out(feats).squeeze(-1)


__all__ = ["ResBlock1d", "ResNet1d", "FrozenBackbone", "AUTHORS_WIDTHS"]
