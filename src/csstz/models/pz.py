"""The p(z) network: physics log-likelihood curves in, a learned correction out.

The default estimator (docs/estimator.md) does not ask a network to rediscover the
templates. A torch-free physics stage (``csstz.templates.xcorr``) turns each spectrum
into log-likelihood curves on a fixed ln(1+z) grid (the marginal likelihood of a
template basis learned from the training SEDs, with its coefficient prior). This
network reads those curves along the z axis and returns logits on the same grid::

    logits_m(z) = a_m * c_0(z) + g_m(z) + b_m * log n(z)

with ``c_0`` the first curve (max-subtracted log-likelihood), ``log n(z)`` the
training split's redshift prior (a buffer), and ``g_m`` a correction computed by a
small dilated convolutional network over all curves and per-object scalars. ``a_m``
starts at 1 and ``g_m`` at 0, so an untrained network is the physics posterior.

M members are trained at once as one grouped network (``groups=M``, different random
initialisations): their spread is the epistemic uncertainty, the mean width of their
p(z) the aleatoric one (law of total variance; :func:`pz_moments`).

Layout::

    curves (B, C, K) + scalars (B, S) broadcast  ->  (B, C+S, K)
    stem: Conv1d(k=2*stride, stride), M*H out     ->  (B, M*H, K/stride)
    blocks: residual dilated Conv1d(groups=M)     ->  (B, M*H, K/stride)
    out: Conv1d(groups=M, k=1) + linear upsample  ->  g (B, M, K)
    logits = a * c_0 + g + b * log n(z)           ->  (B, M, K)

The stem's activations and the last block's output, pooled along z (mean, max, standard deviation per
channel), are the features of the OUT_OF_DISTRIBUTION density: a Gaussian fitted to the training split's
features after training and stored in the network's buffers (:meth:`PzNet.feature_distance`).

Definitions only: no I/O, no training loop (see ``csstz.train.pz_stage``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import ConfigError


class _DilatedBlock(nn.Module):
    """GELU(conv) + conv with a residual skip, grouped over ensemble members."""

    def __init__(self, channels: int, groups: int, kernel: int, dilation: int) -> None:
        super().__init__()
        pad = dilation * (kernel // 2)
        self.conv1 = nn.Conv1d(channels, channels, kernel, padding=pad, dilation=dilation, groups=groups)
        self.conv2 = nn.Conv1d(channels, channels, 1, groups=groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x (B, M*H, L) -> (B, M*H, L)
        return x + self.conv2(F.gelu(self.conv1(x)))


class PzNet(nn.Module):
    """Ensemble of p(z) correction networks on a fixed redshift grid.

    Parameters
    ----------
    n_grid : int
        Number K of redshift grid points.
    n_curves : int
        Number C of input curves per object (curve 0 is the physics log-likelihood).
    n_scalars : int
        Number S of per-object scalars (broadcast along z).
    members : int
        Ensemble members M (>= 1).
    hidden : int
        Channels H per member.
    stride : int
        Down-sampling of the z axis inside the correction network (the physics term
        stays at full resolution).
    kernel : int
        Odd kernel size of the dilated convolutions.
    dilations : tuple of int
        One residual block per dilation.
    log_prior : Tensor, shape (K,), optional
        log n(z) of the training split on the grid (normalised density; 0 = flat).
    """

    def __init__(
        self,
        n_grid: int,
        n_curves: int,
        n_scalars: int = 0,
        members: int = 4,
        hidden: int = 16,
        stride: int = 4,
        kernel: int = 5,
        dilations: tuple = (1, 2, 4, 8, 16, 32),
        log_prior: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        for name, val, lo in (
            ("n_grid", n_grid, 8),
            ("n_curves", n_curves, 1),
            ("n_scalars", n_scalars, 0),
            ("members", members, 1),
            ("hidden", hidden, 1),
            ("stride", stride, 1),
        ):
            if int(val) < lo:
                raise ConfigError(name, "invalid p(z) network setting", value=val, allowed=f">= {lo}")
        if kernel % 2 != 1:
            raise ConfigError("kernel", "must be odd", value=kernel)
        self.n_grid, self.n_curves, self.n_scalars = int(n_grid), int(n_curves), int(n_scalars)
        self.members, self.stride = int(members), int(stride)
        m, h = self.members, int(hidden)
        cin = n_curves + n_scalars
        k0 = 2 * stride if stride > 1 else 3
        self.stem = nn.Conv1d(m * cin, m * h, k0, stride=stride, padding=(k0 - stride + 1) // 2, groups=m)
        self.blocks = nn.Sequential(*[_DilatedBlock(m * h, m, kernel, d) for d in dilations])
        self.out = nn.Conv1d(m * h, m, 1, groups=m)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        self.a = nn.Parameter(torch.ones(m))
        self.b = nn.Parameter(torch.ones(m))
        lp = torch.zeros(n_grid) if log_prior is None else torch.as_tensor(log_prior, dtype=torch.float32)
        if lp.shape != (n_grid,):
            raise ConfigError(
                "log_prior", "must have one value per grid point", value=tuple(lp.shape), allowed=f"({n_grid},)"
            )
        self.register_buffer("log_prior", lp.clone())
        # the feature-space density of the training split (OUT_OF_DISTRIBUTION), fitted after training
        # (:meth:`set_feature_density`); float64, zero until fitted
        n_feat = 2 * len(FEATURE_POOLS) * m * h
        self.register_buffer("feature_mean", torch.zeros(n_feat, dtype=torch.float64))
        self.register_buffer("feature_precision", torch.zeros(n_feat, n_feat, dtype=torch.float64))

    def _check(self, curves: torch.Tensor) -> None:
        _, c, k = curves.shape
        if c != self.n_curves or k != self.n_grid:
            raise ConfigError(
                "curves", "shape does not match the network", value=(c, k), allowed=f"({self.n_curves}, {self.n_grid})"
            )

    def _trunk(
        self, curves: torch.Tensor, scalars: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Logits (B, M, K), the stem's activations and the last block's output (B, M*H, K/stride)."""
        self._check(curves)
        bsz, _, k = curves.shape
        x = curves
        if self.n_scalars:
            x = torch.cat([x, scalars[:, :, None].expand(bsz, self.n_scalars, k)], dim=1)
        # bounded inputs for the correction network (the physics term itself stays exact)
        x = torch.cat([torch.tanh(x[:, :1] / 20.0), x[:, 1:]], dim=1)  # (B, C+S, K)
        # every member's stem reads the same input: the grouped stem over M copies of x is one ungrouped
        # convolution with the same (M*H, C+S, k) weight, without the copies (E7: 1.4x faster training steps
        # with coefficient curves)
        st = self.stem
        h0 = F.gelu(F.conv1d(x, st.weight, st.bias, stride=st.stride, padding=st.padding))
        h = self.blocks(h0)  # (B, M*H, K/stride)
        g = self.out(h)  # (B, M, K/stride)
        if g.shape[-1] != k:
            g = F.interpolate(g, size=k, mode="linear", align_corners=False)
        logits = self.a[None, :, None] * curves[:, :1] + g + self.b[None, :, None] * self.log_prior
        return logits, h0, h

    def forward(self, curves: torch.Tensor, scalars: torch.Tensor | None = None) -> torch.Tensor:
        """Logits of every member.

        Parameters
        ----------
        curves : Tensor, shape (B, C, K)
            Curve 0: physics log-likelihood minus its maximum (<= 0). Others: any
            further curves on the same grid, scaled to order unity.
        scalars : Tensor, shape (B, S), optional

        Returns
        -------
        Tensor, shape (B, M, K)
            Unnormalised log-probabilities per grid point (softmax over K gives the
            probability of each grid cell).
        """
        return self._trunk(curves, scalars)[0]

    def forward_features(
        self, curves: torch.Tensor, scalars: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits (B, M, K) and the pooled features (B, F): the mean, max and standard deviation along z of
        every channel of the stem's activations and of the last block's output (F = 2 x 3 x M x H)."""
        logits, h0, h = self._trunk(curves, scalars)
        feats = [_POOL[pool](t) for t in (h0, h) for pool in FEATURE_POOLS]
        return logits, torch.cat(feats, dim=1)

    def set_feature_density(self, mean: torch.Tensor, precision: torch.Tensor) -> None:
        """Store the Gaussian density of the training split's pooled features (mean (F,), precision (F, F))."""
        self.feature_mean.copy_(torch.as_tensor(mean, dtype=torch.float64))
        self.feature_precision.copy_(torch.as_tensor(precision, dtype=torch.float64))

    def feature_distance(self, feats: torch.Tensor) -> torch.Tensor:
        """Squared Mahalanobis distance (B,) float64 of pooled features from the training density
        (Lee et al. 2018); 0 while no density is set."""
        d = feats.to(torch.float64) - self.feature_mean
        return torch.einsum("bi,ij,bj->b", d, self.feature_precision, d)


#: Poolings along z of the feature-space density (:meth:`PzNet.forward_features`).
FEATURE_POOLS = ("mean", "max", "std")
_POOL = {"mean": lambda t: t.mean(-1), "max": lambda t: t.amax(-1), "std": lambda t: t.std(-1)}


@contextlib.contextmanager
def one_thread_beside_workers(workers: int) -> Iterator[None]:
    """Run torch on one thread while ``workers`` (> 1) physics processes have the other cores.

    Two torch threads beside them oversubscribed a 2-core machine (training 581 against 774 samples/s).
    """
    n_threads = torch.get_num_threads()
    if workers > 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n_threads)


def soft_target(z_true: torch.Tensor, grid_lnz: torch.Tensor, width: float) -> torch.Tensor:
    """A narrow Gaussian target on the grid around each true redshift.

    Parameters
    ----------
    z_true : Tensor, shape (B,)
    grid_lnz : Tensor, shape (K,)
        ln(1 + z) of the grid points.
    width : float
        Gaussian sigma in ln(1 + z) (about one grid step).

    Returns
    -------
    Tensor, shape (B, K)
        Rows sum to 1.
    """
    d = (grid_lnz[None, :] - torch.log1p(z_true)[:, None]) / width
    w = torch.exp(-0.5 * d * d)
    return w / w.sum(dim=1, keepdim=True).clamp_min(1e-30)


def ensemble_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of every member against the soft target, averaged.

    Parameters
    ----------
    logits : Tensor, shape (B, M, K)
    target : Tensor, shape (B, K)
    """
    logp = torch.log_softmax(logits, dim=-1)
    return -(target[:, None, :] * logp).sum(dim=-1).mean()


__all__ = ["PzNet", "soft_target", "ensemble_loss", "one_thread_beside_workers", "FEATURE_POOLS"]
