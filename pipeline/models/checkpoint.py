"""Checkpoints that carry their own provenance (nanoGPT's habit): rebuildable from the file alone.

A checkpoint holds the architecture and its arguments, the stage names, the preprocessing,
the class names, the config section that trained it and its metrics, beside the weights.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch
from torch import nn

import pipeline
from pipeline.artifacts import atomic_write_bytes
from pipeline.errors import PipelineError
from pipeline.models.safe_load import check_finite, torch_load

REQUIRED = ("arch", "arch_args", "num_classes", "in_channels", "state_dict")


def save_checkpoint(path: Path, model: nn.Module, meta: dict[str, Any]) -> None:
    """``meta`` needs arch, arch_args, num_classes, in_channels; may add preprocess, class_names, config, metrics…"""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}  # device-free: loads on any machine
    blob = {**meta, "state_dict": state, "pipeline_version": pipeline.__version__}
    blob.setdefault("stage_names", list(getattr(model, "stage_names", [])))
    buf = io.BytesIO()
    torch.save(blob, buf)
    atomic_write_bytes(Path(path), buf.getvalue())


def read_checkpoint(path: Path) -> dict[str, Any]:
    """A pipeline checkpoint's dict (weights and provenance); any other file is one line (``safe_load.torch_load``)."""
    path = Path(path)
    blob = torch_load(path, "checkpoint")
    missing = [k for k in REQUIRED if not isinstance(blob, dict) or k not in blob]
    if missing:
        raise PipelineError(f"{path}: not a pipeline checkpoint (missing {', '.join(missing)})")
    check_provenance(blob, str(path))
    check_finite(blob["state_dict"], str(path))
    return blob


def check_provenance(blob: dict[str, Any], where: str) -> None:
    """Each REQUIRED entry of the type that rebuilds the model: a crafted or damaged file is one line here, not an
    AttributeError in build_model."""
    problems = {
        "arch": not isinstance(blob["arch"], str),
        "arch_args": not isinstance(blob["arch_args"], dict),
        "num_classes": not _positive_int(blob["num_classes"]),
        "in_channels": not _positive_int(blob["in_channels"]),
        "state_dict": not (isinstance(blob["state_dict"], dict) and blob["state_dict"]
                           and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in blob["state_dict"].items())),
    }
    wanted = {"arch": "a model name", "arch_args": "a mapping", "num_classes": "a positive integer",
              "in_channels": "a positive integer", "state_dict": "a non-empty mapping of names to tensors"}
    for key, wrong in problems.items():
        if wrong:
            found = type(blob[key]).__name__ if key == "state_dict" else repr(blob[key])[:60]
            raise PipelineError(f"{where}: not a usable pipeline checkpoint: {key} is {found}, not {wanted[key]}; "
                                "use a checkpoint the pipeline wrote, or a plain state_dict with arch set in the config")


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def load_checkpoint(path: Path) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model from the checkpoint's own architecture record and load its weights (eval mode)."""
    from pipeline.models import build_model

    blob = read_checkpoint(path)
    model = build_model(blob["arch"], blob["num_classes"], blob["in_channels"], blob["arch_args"])
    try:
        model.load_state_dict(blob["state_dict"])
    except RuntimeError as exc:
        first = str(exc).splitlines()[1:2] or [str(exc)]
        raise PipelineError(f"{path}: weights do not fit {blob['arch']} ({first[0].strip()[:160]})") from None
    if blob.get("stage_names"):
        model.stage_names = list(blob["stage_names"])
    model.eval()
    meta = {k: v for k, v in blob.items() if k != "state_dict"}
    return model, meta
