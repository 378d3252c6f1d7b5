"""Bayesian layers: MNF KL >= 0, stochastic passes differ, flows invertible-shaped, noise sharing."""

import pytest
import torch

from csstz.errors import ConfigError
from csstz.models.bayesian import CouplingFlow, FlipoutLinear, MCDropoutLinear, MNFLinear


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.mark.parametrize("n_flows", [0, 2, 6])
def test_mnf_kl_nonnegative(n_flows):
    layer = MNFLinear(12, 7, n_flows=n_flows, flow_hidden=10)
    with torch.no_grad():
        kls = torch.stack([layer.kl() for _ in range(400)])
    assert kls.mean() >= 0
    # also after moving the parameters away from their initial values
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(0.3 * torch.randn_like(p))
        kls = torch.stack([layer.kl() for _ in range(400)])
    assert torch.isfinite(kls).all()
    assert kls.mean() >= 0


def test_mnf_kl_grows_with_weight_mean():
    layer = MNFLinear(8, 4, n_flows=2, flow_hidden=8)
    with torch.no_grad():
        k1 = torch.stack([layer.kl() for _ in range(200)]).mean()
        layer.w_mu.mul_(5.0)
        k2 = torch.stack([layer.kl() for _ in range(200)]).mean()
    assert k2 > k1


@pytest.mark.parametrize(
    "make",
    [lambda: MNFLinear(10, 6, flow_hidden=8), lambda: FlipoutLinear(10, 6), lambda: MCDropoutLinear(10, 6, p=0.2)],
)
def test_stochastic_passes_differ(make):
    layer = make()
    if isinstance(layer, MNFLinear):
        with torch.no_grad():
            layer.w_logvar.fill_(-3.0)
            layer.z_logvar.fill_(-3.0)
    if isinstance(layer, FlipoutLinear):
        with torch.no_grad():
            layer.w_rho.fill_(-1.0)
    layer.eval()  # stays stochastic at prediction time
    x = torch.randn(4, 10)
    a, b = layer(x), layer(x)
    assert a.shape == (4, 6)
    assert not torch.allclose(a, b)
    s = layer(x[None], n_samples=5)
    assert s.shape == (5, 4, 6)
    assert not torch.allclose(s[0], s[1])
    assert torch.isfinite(layer.kl())


def test_fixed_seed_reproduces():
    layer = MNFLinear(10, 6, flow_hidden=8)
    x = torch.randn(4, 10)
    torch.manual_seed(3)
    a = layer(x[None], n_samples=3)
    torch.manual_seed(3)
    b = layer(x[None], n_samples=3)
    assert torch.equal(a, b)


def test_coupling_flow_logdet_matches_autograd():
    flow = CouplingFlow(5, 2, hidden=7)
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.5 * torch.randn_like(p))
    z = torch.randn(5)
    jac = torch.autograd.functional.jacobian(lambda v: flow(v)[0], z)
    _, logdet = flow(z)
    assert logdet.item() == pytest.approx(torch.linalg.slogdet(jac)[1].item(), abs=1e-4)


def test_bad_layer_settings():
    with pytest.raises(ConfigError, match="n_flows"):
        MNFLinear(4, 4, n_flows=-1)
    with pytest.raises(ConfigError, match="dropout_p"):
        MCDropoutLinear(4, 4, p=1.5)
