"""ShuffleNetV2 (Ma et al., ECCV 2018) in the CIFAR form RepDistiller uses: ``shufflenetv2_0_5`` … ``_2_0``.

CIFAR form: a 1×1 stem conv (no stride, no max-pool), then three stages (``layer1..3``), each a
stride-2 down block followed by 3, 7, 3 basic blocks, a 1×1 conv to 1024 (2048 at 2.0), global
average pooling and a linear classifier. Stages are at strides 2, 4, 8: B×C×16×16, ×8×8, ×4×4 at
32×32; 4, 2, 1 at 8×8. Any input size runs (a stride-2 3×3 conv with padding 1 maps 1×1 to 1×1),
but below 8×8 the last stage has no spatial extent left.

Export. The Edge TPU has no TRANSPOSE, maps only tensors with at most 3 dims > 1, and its compiler
cuts the graph once, at the first op it cannot map: everything after runs on the CPU. The textbook
shuffle (reshape B×2×C×H×W, swap axes 1-2, reshape back) becomes, after onnx2tf's NCHW→NHWC
conversion, TRANSPOSEs around 5-D tensors, right after the first block. Here the shuffle and the
channel split work channels-last: each half is B×HW×C, stacked on a new last axis to B×HW×C×2 and
reshaped to B×H×W×2C, and the next block slices that channels-last tensor's last axis before any
permute back. onnx2tf (1.29, default flags) then pairs up and drops every permute: measured on
shufflenetv2_0_5 at 1×1×28×28, the float TFLite has only CONV_2D, DEPTHWISE_CONV_2D, PAD, RESHAPE,
CONCATENATION, STRIDED_SLICE, MEAN, FULLY_CONNECTED, no tensor above (1, HW, C, 2), and matches
PyTorch to 1e-7. Slicing the NCHW tensor instead (``x[:, :c]``) costs 39 TRANSPOSEs in that model.
"""

from __future__ import annotations

import torch
from torch import nn

from pipeline.errors import PipelineError

# net_size -> (stage channels, final conv channels); blocks per stage after the down block: 3, 7, 3
CONFIGS: dict[float, tuple[tuple[int, int, int], int]] = {
    0.5: ((48, 96, 192), 1024),
    1.0: ((116, 232, 464), 1024),
    1.5: ((176, 352, 704), 1024),
    2.0: ((224, 488, 976), 2048),
}
BLOCKS = (3, 7, 3)


def channel_shuffle(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Shuffle with 2 groups of the channel concat of two channels-last halves.

    a, b: B×H×W×C (channels last) → B×2C×H×W with out[:, 2i] = a[..., i], out[:, 2i+1] = b[..., i],
    i.e. ``shuffle(cat([a, b], 1), groups=2)`` in NCHW terms. Each half is flattened to B×HW×C,
    stacked on a new last axis (B×HW×C×2) and reshaped to B×H×W×2C: see the module docstring for why.
    """
    n, h, w = a.shape[0], a.shape[1], a.shape[2]
    pair = torch.stack((a.flatten(1, 2), b.flatten(1, 2)), dim=3)
    return to_chw(pair.reshape(n, h, w, -1))


def to_hwc(x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, 2, 3, 1)


def to_chw(x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, 3, 1, 2)


def conv_bn(c_in: int, c_out: int, k: int, stride: int = 1, groups: int = 1, relu: bool = True) -> nn.Sequential:
    layers = [nn.Conv2d(c_in, c_out, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(c_out)]
    return nn.Sequential(*layers, nn.ReLU()) if relu else nn.Sequential(*layers)


class BasicBlock(nn.Module):
    """Split channels in half; one half passes, the other goes 1×1-BN-ReLU, dw3×3-BN, 1×1-BN-ReLU; shuffle."""

    def __init__(self, channels: int):
        super().__init__()
        self.split = channels // 2
        c = channels - self.split
        self.branch = nn.Sequential(conv_bn(c, c, 1), conv_bn(c, c, 3, groups=c, relu=False), conv_bn(c, c, 1))

    def forward(self, x):
        xl = to_hwc(x)  # split on the innermost axis: the permute cancels the shuffle's own (module docstring)
        y = self.branch(to_chw(xl[..., self.split :]))
        return channel_shuffle(xl[..., : self.split], to_hwc(y))


class DownBlock(nn.Module):
    """Both branches see the whole input at stride 2: (dw3×3-BN, 1×1-BN-ReLU) and (1×1-BN-ReLU, dw3×3-BN, 1×1-BN-ReLU)."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        mid = c_out // 2
        self.left = nn.Sequential(conv_bn(c_in, c_in, 3, 2, groups=c_in, relu=False), conv_bn(c_in, mid, 1))
        self.right = nn.Sequential(
            conv_bn(c_in, mid, 1), conv_bn(mid, mid, 3, 2, groups=mid, relu=False), conv_bn(mid, mid, 1)
        )

    def forward(self, x):
        return channel_shuffle(to_hwc(self.left(x)), to_hwc(self.right(x)))


class ShuffleNetV2(nn.Module):
    def __init__(self, net_size: float = 1.0, num_classes: int = 10, in_channels: int = 3):
        super().__init__()
        if float(net_size) not in CONFIGS:
            raise PipelineError(f"shufflenetv2: net_size must be one of {sorted(CONFIGS)}, got {net_size}")
        widths, last = CONFIGS[float(net_size)]
        self.conv1 = conv_bn(in_channels, 24, 1)
        c = 24
        for i, (w, n) in enumerate(zip(widths, BLOCKS), start=1):
            setattr(self, f"layer{i}", nn.Sequential(DownBlock(c, w), *[BasicBlock(w) for _ in range(n)]))
            c = w
        self.conv2 = conv_bn(c, last, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(last, num_classes)
        self.stage_names = ["layer1", "layer2", "layer3"]
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        x = self.layer3(self.layer2(self.layer1(self.conv1(x))))
        return self.fc(self.pool(self.conv2(x)).flatten(1))


def shufflenetv2(net_size: float = 1.0, **kw) -> ShuffleNetV2:
    """``net_size`` 0.5 / 1.0 / 1.5 / 2.0 (channel configurations of the paper's Table 5)."""
    return ShuffleNetV2(net_size, **kw)
