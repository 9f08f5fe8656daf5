"""Stage features collected by forward hooks on named modules, so any model can be distilled.

Zoo models name their stages (``model.stage_names``); for other models the config lists
module paths (``student.stages``). A loss never reaches into a model: it receives a
``ModelIO`` with the logits and the tapped stage outputs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from pipeline.errors import PipelineError


@dataclass
class ModelIO:
    """One forward pass as a loss sees it: logits (B×K) and stage features, in stage order."""

    logits: torch.Tensor
    feats: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def stages(self) -> list[torch.Tensor]:
        return list(self.feats.values())


@dataclass(frozen=True)
class ModelInfo:
    """What a loss needs to size its training-only modules: stage names and shapes (C, H, W), and
    the input shape (C, H, W) they were probed at (feature losses scale with the input's area)."""

    stage_names: tuple[str, ...]
    stage_shapes: tuple[tuple[int, ...], ...]
    num_classes: int
    input_shape: tuple[int, ...]


def stage_names_of(model: nn.Module, override: list[str] | None = None) -> list[str]:
    names = list(override) if override else list(getattr(model, "stage_names", []))
    if not names:
        raise PipelineError(f"{type(model).__name__}: no stages to tap; list module paths under 'stages' in the config")
    known = dict(model.named_modules())
    for n in names:
        if n not in known:
            raise PipelineError(f"{type(model).__name__}: no module '{n}' to tap (stages)")
    return names


class FeatureTaps:
    """Forward hooks on the named modules; ``run(x)`` returns a ModelIO.

    Hooks stay registered for the object's life; call ``remove()`` (or use as a context
    manager) before exporting the model.
    """

    def __init__(self, model: nn.Module, names: list[str]):
        self.model = model
        self.names = list(names)
        self._out: dict[str, torch.Tensor] = {}
        modules = dict(model.named_modules())
        self._handles = [modules[n].register_forward_hook(self._hook(n)) for n in self.names]

    def _hook(self, name: str):
        def save(_module, _inputs, output):
            self._out[name] = output

        return save

    def run(self, x: torch.Tensor) -> ModelIO:
        self._out = {}
        logits = self.model(x)
        return ModelIO(logits=logits, feats={n: self._out[n] for n in self.names})

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def __enter__(self) -> FeatureTaps:
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


@torch.no_grad()
def probe(model: nn.Module, names: list[str], input_shape: tuple[int, ...], num_classes: int) -> ModelInfo:
    """Run one dummy batch to learn each stage's (C, H, W): losses size their adapters from it."""
    was_training = model.training
    model.eval()
    param = next(model.parameters(), None)  # the dummy batch goes where the model is (a GPU in training)
    with FeatureTaps(model, names) as taps:
        io = taps.run(torch.zeros(2, *input_shape, device=param.device if param is not None else None))
    model.train(was_training)
    return ModelInfo(tuple(names), tuple(tuple(f.shape[1:]) for f in io.stages), num_classes, tuple(input_shape))
