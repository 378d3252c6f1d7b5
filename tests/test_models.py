"""ResNet1d and heads: shapes for several input lengths, bad config, frozen backbone."""

import pytest
import torch

from csstz.errors import ConfigError
from csstz.models.factory import build_bnn, build_cnn
from csstz.models.heads import SIGMA_FLOOR, BayesianHead
from csstz.models.resnet1d import AUTHORS_WIDTHS, ResNet1d
from csstz.train.config import TrainConfig

TINY = TrainConfig(widths=(4, 4, 8, 8, 8, 8, 16, 16), stem_channels=8, head_hidden=(16, 8), flow_hidden=8)


@pytest.mark.parametrize("length", [926, 600, 1362, 101, 33])
def test_cnn_output_shape_any_length(length):
    net = build_cnn(TINY.to_dict()).eval()
    x = torch.randn(3, 2, length)
    assert net(x).shape == (3,)
    assert net.features(x).shape == (3, 16)


def test_authors_widths_parameter_count():
    net = ResNet1d(widths=AUTHORS_WIDTHS)
    n = sum(p.numel() for p in net.parameters())
    assert net.n_features == 512
    assert 8.0e6 < n < 9.5e6  # 8 blocks of k=7 convolutions 64..512 wide


def test_z_init_sets_output_bias():
    net = ResNet1d(widths=(4,) * 8, stem_channels=4, z_init=0.7, dropout=0.0).eval()
    with torch.no_grad():
        net.out.weight.zero_()
    assert torch.allclose(net(torch.randn(2, 2, 64)), torch.full((2,), 0.7))


@pytest.mark.parametrize(
    "kw, field", [({"widths": (4, 0)}, "widths"), ({"kernel": 4}, "kernel"), ({"dropout": 1.0}, "dropout")]
)
def test_bad_network_config(kw, field):
    with pytest.raises(ConfigError, match=field):
        ResNet1d(**kw)


def test_wrong_input_shape():
    net = build_cnn(TINY.to_dict())
    with pytest.raises(ConfigError, match="x"):
        net(torch.randn(3, 926))


@pytest.mark.parametrize("kind", ["mnf", "flipout", "mcdropout"])
@pytest.mark.parametrize("length", [926, 300])
def test_bnn_shapes_and_positive_width(kind, length):
    bnn = build_bnn(TINY.replace(head=kind).to_dict()).eval()
    mu, sigma = bnn(torch.randn(5, 2, length))
    assert mu.shape == sigma.shape == (5,)
    assert torch.all(sigma >= SIGMA_FLOOR)
    feats = bnn.backbone(torch.randn(5, 2, length))
    mu_s, sig_s = bnn.head_forward(feats[None], n_samples=7)
    assert mu_s.shape == sig_s.shape == (7, 5)


def test_frozen_backbone_stays_in_eval_and_has_no_grad():
    bnn = build_bnn(TINY.to_dict())
    bnn.train()
    assert not bnn.backbone.training and not any(m.training for m in bnn.backbone.modules())
    assert bnn.head.training
    assert all(not p.requires_grad for p in bnn.backbone.parameters())
    assert all(p.requires_grad for p in bnn.head.parameters())


def test_bnn_copies_cnn_weights():
    cnn = build_cnn(TINY.to_dict())
    bnn = build_bnn(TINY.to_dict(), cnn)
    for k, v in cnn.state_dict().items():
        assert torch.equal(bnn.backbone.cnn.state_dict()[k], v)
    assert bnn.backbone.cnn is not cnn


def test_unknown_head():
    with pytest.raises(ConfigError, match="head"):
        BayesianHead(16, kind="laplace")


def test_fused_copy_same_output():
    net = build_cnn(TINY.to_dict())
    net.train()
    for _ in range(3):  # move the BatchNorm running statistics away from their initial values
        net(torch.randn(16, 2, 200) * 3 + 1)
    net.eval()
    x = torch.randn(4, 2, 200)
    fused = net.fused_copy()
    assert not any(isinstance(m, torch.nn.BatchNorm1d) for m in fused.modules())
    with torch.no_grad():
        torch.testing.assert_close(fused(x), net(x), rtol=1e-4, atol=1e-5)
