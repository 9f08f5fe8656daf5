"""Any timm model by name (``timm:tf_mobilenetv3_small_minimal_100``), randomly initialised.

Built with ``timm.create_model(name, pretrained=False, num_classes=…, in_chans=…, exportable=True)``:
nothing is downloaded (weights come from a local file, see ``pipeline/models/weights.py``), and
``exportable`` makes timm pick native activations that export to plain ONNX. Stage taps come from
timm's own ``feature_info`` (module paths with their reduction): for each reduction from 4 on, the
last module at that reduction, i.e. the backbone's outputs at strides 4, 8, 16, 32, as for
torchvision models.

timm fuses BN and activation into one ``BatchNormAct2d`` and pads TF-style "same" convolutions in
Python (``Conv2dSame``). Both trace badly with torch.fx, which QAT (conv-BN fusion) and AMA rely on:
the traced BN keeps its training flag forever, and the padding's arithmetic is control flow. So
``plain_torch_layers`` rewrites them, same numbers, as ``nn.Sequential`` of torch.nn leaves
(BatchNorm2d, activation; "same" pad, Conv2d), and ``model.key_map`` records how timm's own
state_dict keys move (``bn1.weight`` → ``bn1.0.weight``), so timm weight files still load.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import torch
from torch import nn

from pipeline.errors import PipelineError

EXAMPLES = ("tf_mobilenetv3_small_minimal_100", "tf_efficientnet_lite0", "mobilenetv3_small_100", "resnet18")


@lru_cache(maxsize=1)
def names() -> frozenset[str]:
    import timm

    return frozenset(timm.list_models())


def base_name(name: str) -> str:
    """``mobilenetv3_small_100.lamb_in1k`` → ``mobilenetv3_small_100`` (a pretrained tag names weights, not an architecture)."""
    return name.split(".", 1)[0]


def build(name: str, num_classes: int, in_channels: int = 3, **kwargs: Any) -> nn.Module:
    """``timm.create_model`` for ``num_classes`` and ``in_channels`` (name already checked); taps from ``feature_info``."""
    import timm

    if kwargs.get("pretrained"):
        raise PipelineError(f"timm:{name}: arch_args.pretrained is not supported (no downloads); set the checkpoint key instead")
    kwargs.pop("pretrained", None)
    try:
        model = timm.create_model(base_name(name), pretrained=False, num_classes=num_classes, in_chans=in_channels,
                                  exportable=True, **kwargs)
    except (TypeError, ValueError, AssertionError) as exc:
        raise PipelineError(f"timm:{name}: bad arch_args {kwargs} ({' '.join(str(exc).split())[:160]})") from None
    model.key_map = plain_torch_layers(model)
    model.stage_names = stage_names(model)
    return model


@torch.fx.wrap
def pad_same(x: torch.Tensor, kernel: list[int], stride: list[int], dilation: list[int]) -> torch.Tensor:
    """TF "same" padding for this input size (timm's); wrapped so FX records one call instead of its arithmetic."""
    from timm.layers.padding import pad_same as timm_pad_same

    return timm_pad_same(x, kernel, stride, dilation)


class SamePad(nn.Module):
    """The input padding of a timm ``Conv2dSame``, computed from the input size at run time (exports as ONNX Pad)."""

    def __init__(self, kernel: tuple[int, int], stride: tuple[int, int], dilation: tuple[int, int]):
        super().__init__()
        self.kernel, self.stride, self.dilation = list(kernel), list(stride), list(dilation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pad_same(x, self.kernel, self.stride, self.dilation)


def plain_torch_layers(model: nn.Module) -> dict[str, str]:
    """Replace ``BatchNormAct2d`` by ``Sequential(BatchNorm2d[, drop][, act])`` and ``Conv2dSame`` by
    ``Sequential(SamePad, Conv2d)`` in place (same parameters, same function); returns old key → new key."""
    from timm.layers import BatchNormAct2d
    from timm.layers.conv2d_same import Conv2dSame

    key_map: dict[str, str] = {}
    for path, module in list(model.named_modules()):
        if type(module) is BatchNormAct2d:
            bn = nn.BatchNorm2d(module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats)
            parts = [bn] + [m for m in (module.drop, module.act) if not isinstance(m, nn.Identity)]
        elif type(module) is Conv2dSame:
            bn = nn.Conv2d(module.in_channels, module.out_channels, module.kernel_size, module.stride, 0, module.dilation,
                           module.groups, module.bias is not None)
            parts = [SamePad(module.kernel_size, module.stride, module.dilation), bn]
        else:
            continue
        bn.load_state_dict(module.state_dict())
        replacement = nn.Sequential(*parts).train(module.training)
        index = parts.index(bn)
        key_map.update({f"{path}.{k}": f"{path}.{index}.{k}" for k in module.state_dict()})
        parent, _, child = path.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, replacement)
    return key_map


def stage_names(model: nn.Module) -> list[str]:
    """The last ``feature_info`` module at each reduction ≥ 4, in forward order ([] when timm records none)."""
    info = getattr(model, "feature_info", None) or []
    last_at: dict[int, str] = {}
    for entry in info:
        if entry.get("reduction", 0) >= 4 and entry.get("module"):
            last_at[entry["reduction"]] = entry["module"]
    modules = dict(model.named_modules())
    return [path for path in last_at.values() if path in modules]


def classifier_paths(model: nn.Module) -> list[str]:
    """Module paths of the classification head, as timm records them (``pretrained_cfg['classifier']``)."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    head = cfg.get("classifier")
    paths = [head] if isinstance(head, str) else list(head or [])
    modules = dict(model.named_modules())
    return [p for p in paths if p in modules]
