"""Any torchvision classification model by name (``torchvision:mobilenet_v3_small``), randomly initialised.

No weights can be downloaded here, so ``weights`` is always None: train it as the teacher, or load
a checkpoint. ``in_channels != 3`` replaces the first conv (same kernel, stride, padding) and keeps
everything else. Stage names are set for the common families so feature-based losses work out of
the box; other families get none, and the config must list module paths under ``stages``.

Stage rule for families built as one sequential trunk (MobileNet, EfficientNet, ConvNeXt, VGG,
DenseNet, MnasNet, RegNet): probe the trunk once at 64×64 and take, for each resolution from stride 4
on, the last child at that resolution: the backbone's outputs at strides 4, 8, 16, 32, as ResNet's
``layer1..4``.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import torch
from torch import nn

from pipeline.errors import PipelineError

# family prefix -> sequential trunk whose children the resolution rule walks
TRUNKS = {
    "mobilenet_v2": "features",
    "mobilenet_v3": "features",
    "efficientnet": "features",
    "convnext": "features",
    "vgg": "features",
    "densenet": "features",
    "mnasnet": "layers",
    "regnet": "trunk_output",
}
PROBE_SIZE = 64


EXAMPLES = ("resnet18", "mobilenet_v2", "mobilenet_v3_small", "efficientnet_b0")


@lru_cache(maxsize=1)
def names() -> frozenset[str]:
    import torchvision

    return frozenset(torchvision.models.list_models(module=torchvision.models))


def build(name: str, num_classes: int, in_channels: int = 3, **kwargs: Any) -> nn.Module:
    """The model ``torchvision.models.get_model(name)`` builds, for ``num_classes`` and ``in_channels`` (name already checked)."""
    import torchvision

    if "weights" in kwargs:
        raise PipelineError(f"torchvision:{name}: arch_args.weights is not supported (no downloads); set the checkpoint key instead")
    if name in ("googlenet", "inception_v3"):
        kwargs.setdefault("aux_logits", False)  # aux heads return a tuple in training; the trainer wants logits
        kwargs.setdefault("init_weights", True)
    try:
        model = torchvision.models.get_model(name, weights=None, num_classes=num_classes, **kwargs)
    except (TypeError, ValueError) as exc:
        raise PipelineError(f"torchvision:{name}: bad arch_args {kwargs} ({exc})") from None
    if in_channels != 3:
        replace_first_conv(model, in_channels)
    model.stage_names = default_stage_names(name, model, in_channels)
    return model


def replace_first_conv(model: nn.Module, in_channels: int) -> None:
    """Swap the first Conv2d for one reading ``in_channels``; kernel, stride, padding, width stay."""
    path, conv = next((n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d))
    new = nn.Conv2d(
        in_channels,
        conv.out_channels,
        conv.kernel_size,
        conv.stride,
        conv.padding,
        conv.dilation,
        groups=1,
        bias=conv.bias is not None,
        padding_mode=conv.padding_mode,
    )
    nn.init.kaiming_normal_(new.weight, mode="fan_out", nonlinearity="relu")
    if new.bias is not None:
        nn.init.zeros_(new.bias)
    parent, _, child = path.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, new)


def default_stage_names(name: str, model: nn.Module, in_channels: int) -> list[str]:
    """Module paths of the stage outputs for known families; [] otherwise (the config's ``stages`` decides)."""
    if all(isinstance(getattr(model, f"layer{i}", None), nn.Module) for i in range(1, 5)):
        return ["layer1", "layer2", "layer3", "layer4"]  # resnet, resnext, wide_resnet
    if name.startswith("shufflenet_v2"):
        return ["stage2", "stage3", "stage4"]
    trunk = next((TRUNKS[p] for p in TRUNKS if name.startswith(p)), None)
    if trunk is None or not isinstance(getattr(model, trunk, None), nn.Sequential):
        return []
    return last_child_per_resolution(model, trunk, in_channels)


@torch.no_grad()
def last_child_per_resolution(model: nn.Module, trunk: str, in_channels: int) -> list[str]:
    """One 64×64 forward with hooks on the trunk's children (the whole model runs, so stems outside the trunk count)."""
    sizes: dict[str, int] = {}
    hooks = [
        module.register_forward_hook(lambda _m, _i, out, path=f"{trunk}.{child}": sizes.__setitem__(path, out.shape[-1]))
        for child, module in getattr(model, trunk).named_children()
    ]
    was_training = model.training
    try:
        model.eval()
        model(torch.zeros(1, in_channels, PROBE_SIZE, PROBE_SIZE))
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    last_at: dict[int, str] = {}
    for path, size in sizes.items():  # children in forward order; later ones at the same resolution win
        last_at[size] = path
    return [path for size, path in last_at.items() if size <= PROBE_SIZE // 4]
