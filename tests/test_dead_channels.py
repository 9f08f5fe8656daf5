"""Dead channels (BN variance ≈ 0) are zeroed before export: outputs unchanged, folded weights no longer huge."""

from __future__ import annotations

import torch
from torch import nn

from pipeline.export.dead_channels import DEAD_VAR, INFLATED, neutralize_dead_channels


class DepthwiseNet(nn.Module):
    """expand conv-BN-ReLU → depthwise conv-BN-ReLU → pool → linear, MobileNetV2's pattern in miniature."""

    def __init__(self):
        super().__init__()
        self.expand = nn.Conv2d(1, 4, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(4)
        self.dw = nn.Conv2d(4, 4, 3, padding=1, groups=4, bias=False)
        self.bn2 = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        x = torch.relu(self.bn1(self.expand(x)))
        x = torch.relu(self.bn2(self.dw(x)))
        return self.fc(x.mean((2, 3)))


def _trained_with_a_dead_channel() -> tuple[DepthwiseNet, torch.Tensor]:
    torch.manual_seed(0)
    net = DepthwiseNet()
    x = torch.rand(64, 1, 6, 6)
    with torch.no_grad():
        net.bn1.bias[2] = -7.9
    net.train()
    for _ in range(400):  # BN statistics converge (momentum 0.1: the initial variance decays as 0.9^n)
        net(x)
    return net.eval(), x


def _folded(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> torch.Tensor:
    return conv.weight * (bn.weight / (bn.running_var + bn.eps).sqrt()).view(-1, 1, 1, 1)


def test_dead_channel_is_found_and_zeroed_with_outputs_unchanged():
    net, x = _trained_with_a_dead_channel()
    assert float(net.bn2.running_var[2]) < 1e-10 <= float(net.bn2.running_var[[0, 1, 3]].min())
    with torch.no_grad():
        before = net(x)
        folded_before = _folded(net.dw, net.bn2).abs().amax((1, 2, 3))
    live_weights = net.dw.weight[[0, 1, 3]].clone()
    found = neutralize_dead_channels(net)
    assert found == {"bn2": 1}
    with torch.no_grad():
        after = net(x)
        folded_after = _folded(net.dw, net.bn2).abs().amax((1, 2, 3))
    torch.testing.assert_close(after, before, atol=1e-6, rtol=0)
    assert folded_before[2] > 30 * folded_before[[0, 1, 3]].max()  # the inflation int8 scales suffered from
    assert folded_after[2] == 0 and torch.equal(net.dw.weight[[0, 1, 3]], live_weights)


def test_a_healthy_model_is_left_alone():
    torch.manual_seed(0)
    net = DepthwiseNet()
    net.train()
    for _ in range(20):
        net(torch.rand(16, 1, 6, 6))
    state = {k: v.clone() for k, v in net.state_dict().items()}
    assert neutralize_dead_channels(net.eval()) == {}
    assert all(torch.equal(state[k], v) for k, v in net.state_dict().items())


def _with_a_rarely_firing_channel() -> tuple[DepthwiseNet, torch.Tensor, torch.Tensor]:
    """Expansion channel 2 fires on one training image in 64 (a bright one): the depthwise BN's variance on it is small
    but not 0, so the dead-variance rule misses it, while the calibration images never fire it."""
    torch.manual_seed(0)
    net = DepthwiseNet()
    x = torch.rand(64, 1, 6, 6)
    x[0] += 40.0
    with torch.no_grad():
        net.expand.weight.fill_(0.5)
        net.bn1.bias[2] = -7.9
    net.train()
    for _ in range(400):
        net(x)
    return net.eval(), x, torch.rand(32, 1, 6, 6)


def test_a_silent_inflated_channel_is_zeroed_given_calibration_images():
    net, _, calibration = _with_a_rarely_firing_channel()
    var = net.bn2.running_var
    assert DEAD_VAR < float(var[2]) and float(var[2]) * 1e3 < float(var[[0, 1, 3]].min())  # not dead, just rare
    with torch.no_grad():
        before = net(calibration)
        folded_before = _folded(net.dw, net.bn2).abs().amax((1, 2, 3))
    assert neutralize_dead_channels(net) == {}  # without images: the variance rule alone misses it
    found = neutralize_dead_channels(net, calibration.numpy())
    assert found == {"bn2": 1}
    with torch.no_grad():
        after = net(calibration)
        folded_after = _folded(net.dw, net.bn2).abs().amax((1, 2, 3))
    torch.testing.assert_close(after, before, atol=1e-6, rtol=0)  # silent there: nothing changes
    assert folded_before[2] > INFLATED * folded_before[[0, 1, 3]].median()
    assert folded_after[2] == 0 and bool((folded_after[[0, 1, 3]] == folded_before[[0, 1, 3]]).all())


def test_a_channel_that_fires_on_one_calibration_image_is_kept():
    net, x, calibration = _with_a_rarely_firing_channel()
    state = {k: v.clone() for k, v in net.state_dict().items()}
    assert neutralize_dead_channels(net, torch.cat([calibration, x[:1]]).numpy()) == {}
    assert all(torch.equal(state[k], v) for k, v in net.state_dict().items())
