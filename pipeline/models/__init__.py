"""The model zoo: CIFAR-style backbones from the distillation literature, plus any torchvision or timm model.

``build_model(arch, num_classes, in_channels)`` returns an ``nn.Module`` whose
``stage_names`` lists the modules the distillation losses tap. ``arch`` is a zoo name or
``<library>:<name>`` for a library in ``LIBRARIES``.
"""

from __future__ import annotations

import difflib
import importlib
from types import ModuleType
from typing import TYPE_CHECKING, Any, Callable

from pipeline.errors import PipelineError

if TYPE_CHECKING:
    from torch import nn


def _builder(module: str, *args: Any, **kwargs: Any) -> Callable[..., nn.Module]:
    """``pipeline.models.<module>.<module>(*args, **kwargs, ...)``, imported when called: the zoo's names
    (what config validation checks) need no torch."""

    def build(**more: Any) -> nn.Module:
        return getattr(importlib.import_module(f"pipeline.models.{module}"), module)(*args, **kwargs, **more)

    return build


ZOO: dict[str, Callable[..., nn.Module]] = {
    "resnet8": _builder("resnet", 8),
    "resnet14": _builder("resnet", 14),
    "resnet20": _builder("resnet", 20),
    "resnet32": _builder("resnet", 32),
    "resnet44": _builder("resnet", 44),
    "resnet56": _builder("resnet", 56),
    "resnet110": _builder("resnet", 110),
    "resnet8x4": _builder("resnet", 8, width=4),
    "resnet32x4": _builder("resnet", 32, width=4),
    "wrn_16_1": _builder("wrn", 16, 1),
    "wrn_16_2": _builder("wrn", 16, 2),
    "wrn_40_1": _builder("wrn", 40, 1),
    "wrn_40_2": _builder("wrn", 40, 2),
    "mobilenetv2": _builder("mobilenetv2"),  # arch_args: width_mult (1.0), expand_ratio (6)
    "mobile_half": _builder("mobilenetv2", 0.5),  # RepDistiller's "MobileNetV2"
    "shufflenetv2": _builder("shufflenetv2"),  # arch_args: net_size 0.5 / 1.0 / 1.5 / 2.0
    "shufflenetv2_0_5": _builder("shufflenetv2", 0.5),
    "shufflenetv2_1_0": _builder("shufflenetv2", 1.0),
    "vgg8": _builder("vgg", 8),
    "vgg11": _builder("vgg", 11),
    "vgg13": _builder("vgg", 13),
    "vgg16": _builder("vgg", 16),
    "vgg19": _builder("vgg", 19),
}


# library prefix -> module with names() (what it can build), build(name, num_classes, in_channels, **args)
# and EXAMPLES; imported only when an arch names it
LIBRARIES: dict[str, str] = {
    "timm": "pipeline.models.timm_models",
    "torchvision": "pipeline.models.torchvision_models",
}


def known_archs() -> list[str]:
    return sorted(ZOO)


def library(prefix: str) -> ModuleType:
    return importlib.import_module(LIBRARIES[prefix])


def arch_problem(arch: str) -> str | None:
    """Why ``arch`` names no buildable model (one line with close matches), or None.

    A library name is checked against that library's own list (a pretrained tag such as
    ``.lamb_in1k`` is ignored), so ``timm:resnet18`` is never answered with a zoo name."""
    prefix, sep, name = arch.partition(":")
    if sep:
        if prefix not in LIBRARIES:
            close = difflib.get_close_matches(prefix, sorted(LIBRARIES), n=1)
            hint = f"; did you mean '{close[0]}:{name}'?" if close else ""
            return f"unknown model library '{prefix}:' (known: {', '.join(f'{p}:<name>' for p in sorted(LIBRARIES))}){hint}"
        lib = library(prefix)
        known = lib.names()
        if name.split(".", 1)[0] in known:
            return None
        close = difflib.get_close_matches(name, sorted(known), n=3)
        hint = f"did you mean {', '.join(f'{prefix}:{c}' for c in close)}? " if close else f"e.g. {', '.join(lib.EXAMPLES)}; "
        return f"unknown {prefix} model '{name}' ({hint}{len(known)} {prefix} models)"
    if arch in ZOO:
        return None
    in_libraries = [f"{p}:{arch}" for p in sorted(LIBRARIES) if arch in library(p).names()]
    close = in_libraries or difflib.get_close_matches(arch, known_archs(), n=1)
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    libraries = ", ".join(f"{p}:<name>" for p in sorted(LIBRARIES))
    return f"unknown '{arch}' (known: {', '.join(known_archs())}, {libraries}){hint}"


MAX_PARAMETERS = 1_000_000_000  # 4 GB of float32 weights (16 GB to train): far past any edge model or its teacher
PLAIN_SHAPES = (1000, 4)  # at most this many classes and input channels, no arch_args: an architecture's usual size


def build_model(arch: str, num_classes: int, in_channels: int, arch_args: dict[str, Any] | None = None) -> nn.Module:
    """The model, built on the CPU; arch_args or shapes out of the ordinary are first built on the meta device
    (no memory) and refused above ``MAX_PARAMETERS``, so `width: 1000` or a million classes is one line, not an OOM."""
    if not isinstance(arch, str):
        raise PipelineError(f"arch {arch!r}: not a model name (a string such as resnet8 or timm:mobilenetv3_small_100)")
    args = dict(arch_args or {})
    if problem := arch_problem(arch):
        raise PipelineError(problem)
    if args or num_classes > PLAIN_SHAPES[0] or in_channels > PLAIN_SHAPES[1]:
        import torch

        try:
            with torch.device("meta"):
                size = count_parameters(_build(arch, num_classes, in_channels, args))
        except PipelineError:
            raise
        except Exception:  # noqa: BLE001  a builder that needs real tensors (.item()): no estimate, the real build decides
            size = 0
        if size > MAX_PARAMETERS:
            raise PipelineError(f"{arch} with arch_args {args}, {num_classes} classes and {in_channels} input channels has "
                                f"{size / 1e9:.1f} billion parameters ({size * 4 / 2**30:.0f} GiB of float32 weights), more "
                                f"than the {MAX_PARAMETERS / 1e9:g} billion this pipeline builds; check arch_args and the class count")
    return _build(arch, num_classes, in_channels, args)


def _build(arch: str, num_classes: int, in_channels: int, args: dict[str, Any]) -> nn.Module:
    prefix, sep, name = arch.partition(":")
    if sep:
        return library(prefix).build(name, num_classes, in_channels, **args)
    try:
        return ZOO[arch](num_classes=num_classes, in_channels=in_channels, **args)
    except TypeError as exc:
        raise PipelineError(f"{arch}: bad arch_args {args} ({exc})") from None


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
