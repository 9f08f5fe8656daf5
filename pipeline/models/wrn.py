"""Wide ResNets (Zagoruyko & Komodakis, BMVC 2016) in the CIFAR form RepDistiller uses: wrn_16_1 … wrn_40_2.

``depth = 6n + 4``: a 3×3 stem, three groups (``block1..3``) of ``n`` pre-activation blocks
(BN-ReLU-conv ×2, 1×1 projection where the shape changes) at widths 16k, 32k, 64k and full, ½, ¼
resolution, then a final BN-ReLU, global average pooling and a linear classifier.

The stage features are the group outputs *before* the final BN-ReLU (RepDistiller's f1..f3), so
they are pre-activation maps: B×16k×H×W, B×32k×H/2×W/2, B×64k×H/4×W/4. Ops: conv, BN, ReLU, add,
average pooling, linear. Any input ≥ 1×1 works (8×8 digits give stages of 8, 4, 2).
"""

from __future__ import annotations

from torch import nn

from pipeline.errors import PipelineError


class PreActBlock(nn.Module):
    """BN-ReLU-conv3×3-BN-ReLU-conv3×3 plus shortcut; the projection sees the activated input (as in WRN)."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in)
        self.relu1 = nn.ReLU()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.relu2 = nn.ReLU()
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.project = c_in != c_out or stride != 1
        self.shortcut = nn.Conv2d(c_in, c_out, 1, stride, bias=False) if self.project else nn.Identity()

    def forward(self, x):
        a = self.relu1(self.bn1(x))
        out = self.conv2(self.relu2(self.bn2(self.conv1(a))))
        return out + self.shortcut(a if self.project else x)


class WideResNet(nn.Module):
    def __init__(self, depth: int, widen_factor: int = 1, num_classes: int = 10, in_channels: int = 3):
        super().__init__()
        if depth < 10 or (depth - 4) % 6:
            raise PipelineError(f"wrn: depth must be 6n+4 with n ≥ 1 (10, 16, 22, 28, 40, …), got {depth}")
        n = (depth - 4) // 6
        widths = (16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor)
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        self.block1 = self._group(widths[0], widths[1], n, 1)
        self.block2 = self._group(widths[1], widths[2], n, 2)
        self.block3 = self._group(widths[2], widths[3], n, 2)
        self.bn1 = nn.BatchNorm2d(widths[3])
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[3], num_classes)
        self.stage_names = ["block1", "block2", "block3"]
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    @staticmethod
    def _group(c_in: int, c_out: int, blocks: int, stride: int) -> nn.Sequential:
        layers = [PreActBlock(c_in, c_out, stride)]
        layers += [PreActBlock(c_out, c_out, 1) for _ in range(blocks - 1)]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.block3(self.block2(self.block1(self.conv1(x))))
        x = self.relu(self.bn1(x))
        return self.fc(self.pool(x).flatten(1))


def wrn(depth: int, widen_factor: int = 1, **kw) -> WideResNet:
    """``wrn(40, 2)`` is WRN-40-2 (2.2 M parameters at 100 classes)."""
    return WideResNet(depth, widen_factor, **kw)
