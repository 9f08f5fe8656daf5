"""CIFAR-style VGG with BatchNorm (Simonyan & Zisserman 2015) as RepDistiller builds it: vgg8…19.

Five conv-BN-ReLU blocks; 2×2 max-pooling after each of the first three (and after the fourth
for inputs of 64 px and more), then global average pooling and one linear layer. ``block1..4``
are the stages the losses tap (RepDistiller's f1…f4: the block outputs after their ReLU).
vgg13 → MobileNetV2 is one of RepDistiller's cross-architecture pairs (shared/METHODS.md).
"""

from __future__ import annotations

from torch import nn

CONFIGS: dict[int, list[list[int]]] = {
    8: [[64], [128], [256], [512], [512]],
    11: [[64], [128], [256, 256], [512, 512], [512, 512]],
    13: [[64, 64], [128, 128], [256, 256], [512, 512], [512, 512]],
    16: [[64, 64], [128, 128], [256, 256, 256], [512, 512, 512], [512, 512, 512]],
    19: [[64, 64], [128, 128], [256, 256, 256, 256], [512, 512, 512, 512], [512, 512, 512, 512]],
}


def _block(c_in: int, widths: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for w in widths:
        layers += [nn.Conv2d(c_in, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU(inplace=False)]
        c_in = w
    return nn.Sequential(*layers)


class CifarVGG(nn.Module):
    def __init__(self, depth: int, num_classes: int = 10, in_channels: int = 3):
        super().__init__()
        if depth not in CONFIGS:
            raise ValueError(f"VGG depth must be one of {sorted(CONFIGS)}, got {depth}")
        cfg = CONFIGS[depth]
        widths = [in_channels] + [b[-1] for b in cfg]
        self.block0, self.block1, self.block2, self.block3, self.block4 = (
            _block(widths[i], cfg[i]) for i in range(5)
        )
        self.pool = nn.MaxPool2d(2, 2)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(cfg[-1][-1], num_classes)
        self.stage_names = ["block1", "block2", "block3", "block4"]

    def forward(self, x):
        large = x.shape[-1] >= 64
        x = self.pool(self.block0(x))
        x = self.pool(self.block1(x))
        x = self.pool(self.block2(x))
        x = self.block3(x)
        if large:
            x = self.pool(x)
        x = self.block4(x)
        return self.classifier(self.gap(x).flatten(1))


def vgg(depth: int, **kw) -> CifarVGG:
    return CifarVGG(depth, **kw)
