"""Distillation losses by name: ``distill.method`` in the config picks one.

A plain dict (timm's habit), in two halves: ``methods.METHODS`` names each method's loss class,
default weights and options without importing torch (config validation reads it); ``LOSSES``
maps the same names to the loss classes, imported on first use. To add a method, write a
``DistillLoss`` subclass in its own module and add one line to ``METHODS``; the contract tests
pick it up with no test edits.
"""

from __future__ import annotations

import importlib
from typing import Any

from pipeline.distill.methods import METHODS


def _loss_classes() -> dict[str, Any]:
    classes = {}
    for name, method in METHODS.items():
        module, _, cls = method.loss.partition(":")
        classes[name] = getattr(importlib.import_module(module), cls)
    return classes


def __getattr__(name: str) -> Any:
    """``LOSSES`` (name -> DistillLoss subclass), built when first asked for: it imports torch (PEP 562)."""
    if name == "LOSSES":
        globals()["LOSSES"] = losses = _loss_classes()
        return losses
    raise AttributeError(f"module 'pipeline.distill' has no attribute '{name}'")
