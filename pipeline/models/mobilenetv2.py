"""MobileNetV2 (Sandler et al., CVPR 2018) in the CIFAR form RepDistiller takes from RCO (Jin et al. 2019).

RepDistiller's "MobileNetV2" row is ``mobile_half``: width multiplier 0.5, expansion 6. Layout
(t expansion, c channels, n blocks, s stride of the first block):

    stem conv3×3 s2 → 32w
    (1,16,1,1) (t,24,2,1) (t,32,3,2) (t,64,4,2) (t,96,3,1) (t,160,3,2) (t,320,1,1)   = ``blocks.0..6``
    conv1×1 → 1280 (1280w when w > 1) → global average pool → linear

Unlike torchvision, every inverted residual keeps its 1×1 expansion, even at t=1 (as RCO/RepDistiller,
so parameter counts match theirs). ReLU throughout, as theirs.

Stages (RepDistiller's f1..f4) are the outputs of ``blocks.1, blocks.2, blocks.4, blocks.6``: strides
2, 4, 8, 16 (B×24w×16×16 … B×320w×2×2 at 32×32). Stride-2 3×3 convs with padding 1 never shrink a
map below 1×1, so any input works; 8×8 digits give stages of 4, 2, 1, 1.
"""

from __future__ import annotations

from torch import nn

# (channels, blocks, stride of the first block); the first group expands by 1, the others by ``expand_ratio``
SETTINGS = ((16, 1, 1), (24, 2, 1), (32, 3, 2), (64, 4, 2), (96, 3, 1), (160, 3, 2), (320, 1, 1))


def conv_bn_relu(c_in: int, c_out: int, k: int, stride: int = 1, groups: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]


class InvertedResidual(nn.Module):
    """1×1 expand-BN-ReLU → 3×3 depthwise-BN-ReLU → 1×1 project-BN (linear bottleneck), plus x when shapes allow."""

    def __init__(self, c_in: int, c_out: int, stride: int, expand_ratio: int):
        super().__init__()
        hidden = c_in * expand_ratio
        self.residual = stride == 1 and c_in == c_out
        self.conv = nn.Sequential(
            *conv_bn_relu(c_in, hidden, 1),
            *conv_bn_relu(hidden, hidden, 3, stride, groups=hidden),
            nn.Conv2d(hidden, c_out, 1, bias=False),
            nn.BatchNorm2d(c_out),
        )

    def forward(self, x):
        return x + self.conv(x) if self.residual else self.conv(x)


class MobileNetV2(nn.Module):
    def __init__(self, width_mult: float = 1.0, expand_ratio: int = 6, num_classes: int = 10, in_channels: int = 3):
        super().__init__()
        c = int(32 * width_mult)
        self.conv1 = nn.Sequential(*conv_bn_relu(in_channels, c, 3, 2))
        self.blocks = nn.ModuleList()
        for i, (ch, n, s) in enumerate(SETTINGS):
            t = 1 if i == 0 else expand_ratio
            out = int(ch * width_mult)
            group = []
            for j in range(n):
                group.append(InvertedResidual(c, out, s if j == 0 else 1, t))
                c = out
            self.blocks.append(nn.Sequential(*group))
        last = int(1280 * width_mult) if width_mult > 1.0 else 1280
        self.conv2 = nn.Sequential(*conv_bn_relu(c, last, 1))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(last, num_classes)
        self.stage_names = ["blocks.1", "blocks.2", "blocks.4", "blocks.6"]
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        x = self.conv1(x)
        for group in self.blocks:
            x = group(x)
        return self.fc(self.pool(self.conv2(x)).flatten(1))


def mobilenetv2(width_mult: float = 1.0, **kw) -> MobileNetV2:
    """``width_mult=0.5`` is RepDistiller's ``mobile_half``."""
    return MobileNetV2(width_mult, **kw)
