"""Bayesian dense layers: MNF (Louizos & Welling 2017), flipout (Wen et al. 2018), MC dropout.

Training form: ``x`` of shape (B, in) -> (B, out) with per-example noise (MNF: local
reparameterisation of the output; flipout: random sign flips; MC dropout: per-example
masks), new noise on every call.

Prediction form: :meth:`sample_weights` draws S whole weight matrices W_s (S, in, out)
and biases (S, out) from the approximate posterior, one network per stochastic pass, and
``x`` of shape (S, B, in) or (1, B, in) -> (S, B, out) applies pass s's weights to every
spectrum of the batch (a (1, B, in) input is shared by all passes: one GEMM). For a given
spectrum the S outputs are then S independent posterior draws, exactly as in the
training form, but the noise costs O(S * in * out) per batch instead of O(S * B * out),
which is what makes 200 passes affordable on a CPU.
Each layer has ``kl()``: a (stochastic) estimate of KL(q(W) || p(W)).

MNF
---
q(W) = integral q(W|z) q(z) dz with q(W|z) = prod_ij N(z_i mu_ij, sigma_ij^2) and z the
multiplicative noise of the inputs, z = f_K(...f_1(z_0)), z_0 ~ N(mu_0, sigma_0^2), f_k
RealNVP-type masked coupling layers (:class:`MaskedCoupling`). The output is drawn with
the local reparameterisation: mean (x*z) mu, variance x^2 sigma^2. The KL bound
(paper eq. 12) is  KL(q(W|z)||p(W)) + log q(z_K) - log r(z_K|W), with the auxiliary
inverse model r(z|W) = N(mu_r, sigma_r^2) after its own coupling flow, where
mu_r, log sigma_r^2 = mean over outputs of outer(tanh(c^T W), b1 / b2) (paper section 4).
Its expectation is KL(q(W,z) || p(W) r(z|W)) >= KL(q(W)||p(W)) >= 0.
The number of flows is configurable: the authors' code uses 2, the paper says 50.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import ConfigError

_LOG2PI = math.log(2.0 * math.pi)


def _gauss_kl(mu: torch.Tensor, logvar: torch.Tensor, prior_var: float) -> torch.Tensor:
    """Sum of KL(N(mu, exp(logvar)) || N(0, prior_var)) over all elements (>= 0)."""
    return 0.5 * torch.sum(math.log(prior_var) - logvar + (logvar.exp() + mu**2) / prior_var - 1.0)


def _noise_shape(x: torch.Tensor, n_samples: int | None) -> tuple[int, ...]:
    """Leading shape of one weight-noise draw: (B,) for 2-d input, (S, 1) for 3-d input."""
    if x.ndim == 2:
        return (x.shape[0],)
    if x.ndim == 3:
        return (n_samples or x.shape[0], 1)
    raise ConfigError("x", "input must be (B, in) or (S, B, in)", value=tuple(x.shape))


def apply_sampled(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """x (1|S, B, in), w (S, in, out), b (S, out) -> (S, B, out)."""
    n_s, n_in, n_out = w.shape
    if x.shape[0] == 1:  # one input shared by every pass: a single (B, in) x (in, S*out) GEMM
        h = torch.addmm(b.reshape(1, n_s * n_out), x[0], w.permute(1, 0, 2).reshape(n_in, n_s * n_out))
        return h.reshape(x.shape[1], n_s, n_out).transpose(0, 1)
    return torch.baddbmm(b[:, None, :], x, w)


class MaskedCoupling(nn.Module):
    """RealNVP-type coupling layer on a vector z (dim d), as used by MNF.

    z' = m*z + (1-m) * (z*g + (1-g)*mu),  g = sigmoid(W_g h), mu = W_mu h, h = tanh(W_h (m*z));
    log|det dz'/dz| = sum (1-m) log g. ``mask`` is a fixed 0/1 vector (buffer).
    """

    def __init__(self, dim: int, hidden: int, mask: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mask", mask.float())
        self.h = nn.Linear(dim, hidden)
        self.mu = nn.Linear(hidden, dim)
        self.g = nn.Linear(hidden, dim)
        nn.init.zeros_(self.mu.weight)
        nn.init.zeros_(self.mu.bias)
        nn.init.zeros_(self.g.weight)
        nn.init.constant_(self.g.bias, 3.0)  # start near the identity (g ~ 0.95)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # z (..., d) -> z' (..., d), logdet (...)
        h = torch.tanh(self.h(z * self.mask))
        g = torch.sigmoid(self.g(h))
        mu = self.mu(h)
        inv = 1.0 - self.mask
        z_new = self.mask * z + inv * (z * g + (1.0 - g) * mu)
        logdet = torch.sum(inv * torch.log(g), dim=-1)
        return z_new, logdet


class CouplingFlow(nn.Module):
    """K coupling layers with alternating checkerboard masks."""

    def __init__(self, dim: int, n_flows: int, hidden: int) -> None:
        super().__init__()
        base = (torch.arange(dim) % 2).float()
        self.layers = nn.ModuleList(
            MaskedCoupling(dim, hidden, base if k % 2 == 0 else 1.0 - base) for k in range(n_flows)
        )

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logdet = torch.zeros(z.shape[:-1], dtype=z.dtype, device=z.device)
        for layer in self.layers:
            z, ld = layer(z)
            logdet = logdet + ld
        return z, logdet


class MNFLinear(nn.Module):
    """Dense layer with multiplicative normalising flows (Louizos & Welling 2017).

    Parameters
    ----------
    in_features, out_features : int
    n_flows : int
        Coupling layers of q(z) and of the auxiliary r(z|W) (authors' code: 2; paper: 50).
    flow_hidden : int
        Hidden units of each coupling layer.
    prior_var : float
        Variance of the Gaussian weight prior p(W) = N(0, prior_var).
    """

    def __init__(
        self, in_features: int, out_features: int, n_flows: int = 2, flow_hidden: int = 50, prior_var: float = 1.0
    ) -> None:
        super().__init__()
        if n_flows < 0 or flow_hidden <= 0 or prior_var <= 0:
            raise ConfigError(
                "n_flows", "need n_flows >= 0, flow_hidden > 0, prior_var > 0", value=(n_flows, flow_hidden, prior_var)
            )
        self.in_features, self.out_features, self.prior_var = in_features, out_features, float(prior_var)
        self.w_mu = nn.Parameter(torch.empty(in_features, out_features))
        nn.init.kaiming_normal_(self.w_mu, nonlinearity="leaky_relu")
        self.w_logvar = nn.Parameter(torch.full((in_features, out_features), -9.0))
        self.b_mu = nn.Parameter(torch.zeros(out_features))
        self.b_logvar = nn.Parameter(torch.full((out_features,), -9.0))
        self.z_mu = nn.Parameter(1.0 + 0.01 * torch.randn(in_features))
        self.z_logvar = nn.Parameter(torch.full((in_features,), -9.0))
        self.q_flow = CouplingFlow(in_features, n_flows, flow_hidden)
        self.r_flow = CouplingFlow(in_features, n_flows, flow_hidden)
        self.r_c = nn.Parameter(0.1 * torch.randn(in_features))
        self.r_b1 = nn.Parameter(0.1 * torch.randn(in_features))
        self.r_b2 = nn.Parameter(0.1 * torch.randn(in_features))

    def sample_z(self, shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw z_K of shape (*shape, in) and log q(z_K) of shape shape."""
        eps = torch.randn(*shape, self.in_features, device=self.z_mu.device, dtype=self.z_mu.dtype)
        z0 = self.z_mu + torch.exp(0.5 * self.z_logvar) * eps
        logq0 = -0.5 * torch.sum(_LOG2PI + self.z_logvar + eps**2, dim=-1)
        zk, logdet = self.q_flow(z0)
        return zk, logq0 - logdet

    def sample_weights(self, n_samples: int) -> tuple[torch.Tensor, torch.Tensor]:
        """W ~ q(W) = q(W|z) q(z): (S, in, out) and bias (S, out)."""
        z, _ = self.sample_z((n_samples,))  # (S, in)
        w = z[:, :, None] * self.w_mu + torch.exp(0.5 * self.w_logvar) * torch.randn(
            n_samples, *self.w_mu.shape, device=z.device, dtype=z.dtype
        )
        b = self.b_mu + torch.exp(0.5 * self.b_logvar) * torch.randn(
            n_samples, self.out_features, device=z.device, dtype=z.dtype
        )
        return w, b

    def forward(self, x: torch.Tensor, n_samples: int | None = None) -> torch.Tensor:
        # x (B, in) -> (B, out): local reparameterisation; x (S|1, B, in) -> (S, B, out): sampled weights
        if x.ndim == 3:
            return apply_sampled(x, *self.sample_weights(_noise_shape(x, n_samples)[0]))
        z, _ = self.sample_z(_noise_shape(x, n_samples))
        mean = (x * z) @ self.w_mu + self.b_mu
        var = (x * x) @ self.w_logvar.exp() + self.b_logvar.exp()
        eps = torch.randn(mean.shape, device=mean.device, dtype=mean.dtype)
        return mean + var.sqrt() * eps

    def kl(self) -> torch.Tensor:
        """One-sample estimate of the MNF KL bound (scalar; expectation >= 0)."""
        z, logq = self.sample_z((1,))
        z = z[0]
        m_tilde = z[:, None] * self.w_mu  # (in, out)
        v_tilde = self.w_logvar.exp()
        kl_w = _gauss_kl(m_tilde, self.w_logvar, self.prior_var) + _gauss_kl(self.b_mu, self.b_logvar, self.prior_var)
        # auxiliary r(z|W), W ~ q(W|z) drawn through c^T W (local reparameterisation)
        cw_mu = self.r_c @ m_tilde  # (out,)
        cw_var = (self.r_c**2) @ v_tilde
        cw = torch.tanh(cw_mu + cw_var.sqrt() * torch.randn_like(cw_mu))
        mu_r = (cw[:, None] * self.r_b1[None, :]).mean(0)  # (in,)
        logvar_r = (cw[:, None] * self.r_b2[None, :]).mean(0)
        zr, logdet_r = self.r_flow(z)
        logr = -0.5 * torch.sum(_LOG2PI + logvar_r + (zr - mu_r) ** 2 / logvar_r.exp()) + logdet_r
        return kl_w + logq[0] - logr


class FlipoutLinear(nn.Module):
    """Mean-field Gaussian dense layer with flipout noise (Wen et al. 2018).

    W = mu + sigma * eps (eps shared by the batch), decorrelated across examples by random
    signs: y = x mu + ((x * s_in) (sigma * eps)) * s_out + b. sigma = softplus(rho).
    """

    def __init__(self, in_features: int, out_features: int, prior_var: float = 1.0) -> None:
        super().__init__()
        self.prior_var = float(prior_var)
        self.w_mu = nn.Parameter(torch.empty(in_features, out_features))
        nn.init.kaiming_normal_(self.w_mu, nonlinearity="leaky_relu")
        self.w_rho = nn.Parameter(torch.full((in_features, out_features), -6.0))
        self.b = nn.Parameter(torch.zeros(out_features))

    def sample_weights(self, n_samples: int) -> tuple[torch.Tensor, torch.Tensor]:
        """W ~ q(W): (S, in, out) and the (deterministic) bias (S, out)."""
        sigma = F.softplus(self.w_rho)
        w = self.w_mu + sigma * torch.randn(n_samples, *sigma.shape, device=sigma.device, dtype=sigma.dtype)
        return w, self.b.expand(n_samples, -1)

    def forward(self, x: torch.Tensor, n_samples: int | None = None) -> torch.Tensor:
        # x (B, in) -> (B, out): flipout; x (S|1, B, in) -> (S, B, out): sampled weights
        if x.ndim == 3:
            return apply_sampled(x, *self.sample_weights(_noise_shape(x, n_samples)[0]))
        if x.ndim != 2:
            raise ConfigError("x", "input must be (B, in) or (S, B, in)", value=tuple(x.shape))
        delta = F.softplus(self.w_rho) * torch.randn_like(self.w_rho)  # (in, out), shared
        s_in = torch.randint(0, 2, x.shape, device=x.device).to(x.dtype) * 2 - 1
        pert = (x * s_in) @ delta
        s_out = torch.randint(0, 2, pert.shape, device=x.device).to(x.dtype) * 2 - 1
        return x @ self.w_mu + self.b + pert * s_out

    def kl(self) -> torch.Tensor:
        """Closed-form KL(q(W) || N(0, prior_var)) (>= 0; bias is deterministic)."""
        sigma = F.softplus(self.w_rho)
        return _gauss_kl(self.w_mu, 2.0 * torch.log(sigma), self.prior_var)


class MCDropoutLinear(nn.Module):
    """Dense layer with dropout on its input that stays on at prediction (Gal & Ghahramani 2015).

    ``kl()`` returns the L2 term of the dropout variational objective,
    (1 - p) / 2 * ||W||^2 (prior precision 1), so the same KL weight switch applies.
    """

    def __init__(self, in_features: int, out_features: int, p: float = 0.1) -> None:
        super().__init__()
        if not 0.0 < p < 1.0:
            raise ConfigError("dropout_p", "MC-dropout rate out of range", value=p, allowed="(0, 1)")
        self.p = float(p)
        self.linear = nn.Linear(in_features, out_features)

    def sample_weights(self, n_samples: int) -> tuple[torch.Tensor, torch.Tensor]:
        """One thinned network per pass: W = mask * W^T / (1 - p), (S, in, out); bias (S, out)."""
        w = self.linear.weight.t()
        keep = torch.rand(n_samples, w.shape[0], 1, device=w.device) >= self.p
        return keep.to(w.dtype) * w / (1.0 - self.p), self.linear.bias.expand(n_samples, -1)

    def forward(self, x: torch.Tensor, n_samples: int | None = None) -> torch.Tensor:
        # x (B, in): per-example masks; x (S|1, B, in) -> (S, B, out): one mask per pass
        if x.ndim == 3:
            return apply_sampled(x, *self.sample_weights(_noise_shape(x, n_samples)[0]))
        return self.linear(F.dropout(x, self.p, training=True))

    def kl(self) -> torch.Tensor:
        return 0.5 * (1.0 - self.p) * torch.sum(self.linear.weight**2)


__all__ = ["apply_sampled", "MNFLinear", "FlipoutLinear", "MCDropoutLinear", "MaskedCoupling", "CouplingFlow"]
