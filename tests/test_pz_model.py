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


def test_ungrouped_stem_equals_each_member_reading_its_own_copy():
    """The stem runs as one ungrouped convolution (0.8.0); it must equal 0.7's grouped stem over M copies of the
    input, with the same weights (so runs saved by 0.7 predict as they were trained)."""
    from torch.nn import functional as F

    net = _net()
    with torch.no_grad():
        net.out.weight.normal_()
    c, s = -torch.rand(4, 2, K) * 30, torch.randn(4, 3)
    x = torch.cat([c, s[:, :, None].expand(4, 3, K)], dim=1)
    x = torch.cat([torch.tanh(x[:, :1] / 20.0), x[:, 1:]], dim=1).repeat(1, net.members, 1)
    g = net.out(net.blocks(F.gelu(net.stem(x))))  # net.stem: the grouped module, as 0.7 applied it
    ref = net.a[None, :, None] * c[:, :1] + F.interpolate(g, size=K, mode="linear", align_corners=False)
    ref = ref + net.b[None, :, None] * net.log_prior
    np.testing.assert_allclose(net(c, s).detach().numpy(), ref.detach().numpy(), rtol=1e-5, atol=1e-4)


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
        losses.append(float(loss.detach()))
    assert np.mean(losses[-20:]) < 0.7 * np.mean(losses[:5])


def test_bad_settings_name_the_field():
    with pytest.raises(ConfigError, match="kernel"):
        PzNet(K, 2, 3, kernel=4)
    with pytest.raises(ConfigError, match="log_prior"):
        PzNet(K, 2, 3, log_prior=torch.zeros(K + 1))
    net = _net()
    with pytest.raises(ConfigError, match="curves"):
        net(torch.zeros(2, 2, K + 1), torch.zeros(2, 3))


def test_feature_density_flags_inputs_unlike_the_training_ones():
    """The Gaussian of the pooled features: training spectra sit at the chi2 mean distance (F), spectra of
    another kind lie far outside; an unfitted density gives distance 0."""
    from csstz.train.pz_stage import Batch, fit_feature_density

    torch.manual_seed(0)
    net = PzNet(64, 2, n_scalars=1, members=2, hidden=4, stride=4)
    for p in net.out.parameters():  # a trained-looking network: non-zero output layer
        torch.nn.init.normal_(p, std=0.1)
    grid = torch.linspace(0.0, 1.0, 64)

    def spectra(n, width, seed):
        g = torch.Generator().manual_seed(seed)
        centre = torch.rand(n, 1, generator=g)
        peak = -0.5 * ((grid[None] - centre) / width) ** 2
        c = torch.stack([peak - peak.amax(1, keepdim=True), torch.tanh(peak / 5)], 1)
        return Batch(c.numpy().astype(np.float32), torch.rand(n, 1, generator=g).numpy().astype(np.float32), None)

    train = [spectra(400, 0.05, s) for s in range(3)]
    with torch.no_grad():
        _, f = net.forward_features(torch.from_numpy(train[0].curves), torch.from_numpy(train[0].scalars))
    n_feat = f.shape[1]
    assert n_feat == 2 * 3 * 2 * 4
    assert torch.all(net.feature_distance(f) == 0)  # not fitted yet
    info = fit_feature_density(net, train)
    assert info["covariance"] == "full" and info["n_spectra"] == 1200
    same = spectra(400, 0.05, 99)
    other = spectra(400, 0.25, 98)  # broad peaks: another kind of curve
    with torch.no_grad():
        d_same = net.feature_distance(
            net.forward_features(torch.from_numpy(same.curves), torch.from_numpy(same.scalars))[1]
        )
        d_other = net.feature_distance(
            net.forward_features(torch.from_numpy(other.curves), torch.from_numpy(other.scalars))[1]
        )
    # ~F: chi2 with F degrees of freedom, less any rank lost
    assert 0.5 * n_feat < float(d_same.median()) < 1.5 * n_feat
    assert float((d_other > torch.quantile(d_same, 0.96)).double().mean()) > 0.9
    # too few spectra for a full covariance: the diagonal
    assert fit_feature_density(net, [spectra(60, 0.05, 5)])["covariance"] == "diagonal"


@pytest.mark.parametrize("patience", [1, 2])
def test_early_stopping_waits_for_the_midpoint_of_the_schedule(patience):
    """With a frozen network (lr = 1e-12) the validation loss never improves: patience counts only evaluations
    after the one-cycle schedule's midpoint, none from before (so training ends ``patience`` evaluations after it),
    never while the learning rate is near its peak."""
    from csstz.config import PzConfig
    from csstz.train.pz_stage import Batch, fit_network

    grid = np.linspace(0.0, 1.0, K)
    rng = np.random.default_rng(0)

    def batch(n):
        idx = rng.integers(10, K - 10, n)
        c0 = -0.5 * ((np.arange(K)[None, :] - idx[:, None]) / 2.0) ** 2
        curves = np.stack([c0, np.tanh(c0 / 20)], 1).astype(np.float32)
        return Batch(curves, np.zeros((n, 3), np.float32), np.expm1(grid[idx]))

    def endless():
        while True:
            yield batch(32)

    cfg = PzConfig(lr=1e-12, weight_decay=0.0, batch_size=32, max_samples=3200, eval_every=320, patience=patience)
    res = fit_network(_net(), endless(), [batch(64)], grid, cfg)
    # evaluations every 320 samples; the first one past the midpoint (1,600) is at 1,920
    assert res["samples_seen"] == 1920 + (patience - 1) * cfg.eval_every
    assert res["best_samples"] == 0  # nothing improved: the initial (physics) state is kept
