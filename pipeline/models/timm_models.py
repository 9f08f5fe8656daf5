"""Any timm model by name (``timm:tf_mobilenetv3_small_minimal_100``), randomly initialised.

Built with ``timm.create_model(name, pretrained=False, num_classes=…, in_chans=…, exportable=True)``:
nothing is downloaded (weights come from a local checkpoint, see ``pipeline/models/checkpoint.py``),
and ``exportable`` makes timm pick layers that trace to plain ONNX (static "same" padding, native
activations). Stage taps come from timm's own ``feature_info`` (module paths with their reduction):
for each reduction from 4 on, the last module at that reduction, i.e. the backbone's outputs at
strides 4, 8, 16, 32, as for torchvision models.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

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
    model.stage_names = stage_names(model)
    return model


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
