"""The model zoo: CIFAR-style backbones from the distillation literature, plus any torchvision model.

``build_model(spec, num_classes, in_channels)`` returns an ``nn.Module`` whose
``stage_names`` lists the modules the distillation losses tap.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Callable

from torch import nn

from pipeline.errors import PipelineError
from pipeline.models.mobilenetv2 import mobilenetv2
from pipeline.models.resnet import resnet
from pipeline.models.shufflenetv2 import shufflenetv2
from pipeline.models.vgg import vgg
from pipeline.models.wrn import wrn

ZOO: dict[str, Callable[..., nn.Module]] = {
    "resnet8": partial(resnet, 8),
    "resnet14": partial(resnet, 14),
    "resnet20": partial(resnet, 20),
    "resnet32": partial(resnet, 32),
    "resnet44": partial(resnet, 44),
    "resnet56": partial(resnet, 56),
    "resnet110": partial(resnet, 110),
    "resnet8x4": partial(resnet, 8, width=4),
    "resnet32x4": partial(resnet, 32, width=4),
    "wrn_16_1": partial(wrn, 16, 1),
    "wrn_16_2": partial(wrn, 16, 2),
    "wrn_40_1": partial(wrn, 40, 1),
    "wrn_40_2": partial(wrn, 40, 2),
    "mobilenetv2": mobilenetv2,  # arch_args: width_mult (1.0), expand_ratio (6)
    "mobile_half": partial(mobilenetv2, 0.5),  # RepDistiller's "MobileNetV2"
    "shufflenetv2": shufflenetv2,  # arch_args: net_size 0.5 / 1.0 / 1.5 / 2.0
    "shufflenetv2_0_5": partial(shufflenetv2, 0.5),
    "shufflenetv2_1_0": partial(shufflenetv2, 1.0),
    "vgg8": partial(vgg, 8),
    "vgg11": partial(vgg, 11),
    "vgg13": partial(vgg, 13),
    "vgg16": partial(vgg, 16),
    "vgg19": partial(vgg, 19),
}


def known_archs() -> list[str]:
    return sorted(ZOO)


def build_model(arch: str, num_classes: int, in_channels: int, arch_args: dict[str, Any] | None = None) -> nn.Module:
    args = dict(arch_args or {})
    if arch.startswith("torchvision:"):
        from pipeline.models.torchvision_models import torchvision_model

        return torchvision_model(arch.split(":", 1)[1], num_classes, in_channels, **args)
    if arch not in ZOO:
        raise PipelineError(f"unknown architecture '{arch}' (known: {', '.join(known_archs())}, torchvision:<name>)")
    try:
        return ZOO[arch](num_classes=num_classes, in_channels=in_channels, **args)
    except TypeError as exc:
        raise PipelineError(f"{arch}: bad arch_args {args} ({exc})") from None


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
