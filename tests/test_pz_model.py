"""The p(z) network: shapes, the physics posterior at initialisation, independent members, targets."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from csstz.errors import ConfigError  # noqa: E402
from csstz.models.pz import PzNet, ensemble_loss, soft_target  # noqa: E402

K = 96


def _net(**kw):
    torch.manual_seed(0)
    return PzNet(K, n_curves=2, n_scalars=3, members=3, hidden=8, stride=4, dilations=(1, 2), **kw)


def test_untrained_network_is_the_physics_posterior():
    """g = 0 and a = b = 1 at initialisation: logits = curve 0 + log n(z) for every member."""
    lp = torch.log(torch.linspace(0.5, 1.5, K))
    net = _net(log_prior=lp)
    c = -torch.rand(5, 2, K) * 30
    s = torch.randn(5, 3)
    out = net(c, s)
    assert out.shape == (5, 3, K)
    np.testing.assert_allclose(out.detach().numpy(), (c[:, :1] + lp).expand(5, 3, K).numpy(), atol=1e-5)


def test_members_are_independent():
    """Grouped convolutions: changing member 0's weights leaves members 1 and 2 unchanged."""
    net = _net()
    with torch.no_grad():
        net.out.weight.normal_()  # make the correction non-zero
    c, s = -torch.rand(4, 2, K) * 10, torch.randn(4, 3)
    before = net(c, s).detach()
    h = net.stem.weight.shape[0] // 3
    with torch.no_grad():
        net.stem.weight[:h] += 1.0
    after = net(c, s).detach()
    assert not torch.allclose(before[:, 0], after[:, 0])
    assert torch.equal(before[:, 1:], after[:, 1:])


def test_soft_target_peaks_at_the_truth_and_sums_to_one():
    grid = torch.linspace(0, np.log(2.6), K)
    z = torch.tensor([0.3, 1.1])
    t = soft_target(z, grid, float(grid[1] - grid[0]))
    np.testing.assert_allclose(t.sum(1).numpy(), 1.0, rtol=1e-6)
    peak = grid[t.argmax(1)]
    assert torch.all(torch.abs(peak - torch.log1p(z)) <= (grid[1] - grid[0]))


def test_training_lowers_the_loss_on_a_learnable_shift():
    """The physics curve peaks 6 bins off the truth; the network learns to move it back."""
    torch.manual_seed(1)
    grid = torch.linspace(0, 1.0, K)
    net = _net()
    opt = torch.optim.Adam(net.parameters(), 3e-3)
    losses = []
    for step in range(150):
        idx = torch.randint(10, K - 10, (32,))
        z = torch.expm1(grid[idx])
        c0 = -0.5 * ((torch.arange(K)[None, :] - (idx[:, None] + 6)) / 2.0) ** 2
        c = torch.stack([c0, torch.zeros_like(c0)], 1)
        loss = ensemble_loss(net(c, torch.zeros(32, 3)), soft_target(z, grid, float(grid[1] - grid[0])))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert np.mean(losses[-20:]) < 0.7 * np.mean(losses[:5])


def test_bad_settings_name_the_field():
    with pytest.raises(ConfigError, match="kernel"):
        PzNet(K, 2, 3, kernel=4)
    with pytest.raises(ConfigError, match="log_prior"):
        PzNet(K, 2, 3, log_prior=torch.zeros(K + 1))
    net = _net()
    with pytest.raises(ConfigError, match="curves"):
        net(torch.zeros(2, 2, K + 1), torch.zeros(2, 3))
