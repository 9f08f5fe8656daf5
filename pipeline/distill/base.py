"""The one interface every distillation method plugs into.

Total loss (shared/METHODS.md):  L = w_ce·CE(z_s, y) + w_kd·KD_T(z_s, z_t) + w_feat·L_method.
The trainer computes CE and KD; a ``DistillLoss`` returns L_method from the student's and the
teacher's ``ModelIO`` (logits + tapped stage features). Whatever trainable modules a method
needs (regressors, projections, heads) are attributes of the loss, never of the student, so
the exported student is exactly the backbone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import torch
from pydantic import BaseModel
from torch import nn

from pipeline.distill.methods import METHODS
from pipeline.distill.options import NoOptions
from pipeline.models.taps import FeatureTaps, ModelInfo, ModelIO


class DistillLoss(nn.Module):
    """Base class: subclasses set ``name`` and implement ``forward``.

    ``defaults`` (w_ce, w_kd, w_feat: the published ones unless they hurt, ``methods.py``; the config may override each) and
    ``Options`` are read from ``methods.METHODS[name]``, the torch-free table config validation uses.
    ``needs_features`` False means no hooks are built (logit-only methods).
    """

    name: ClassVar[str]
    Options: ClassVar[type[BaseModel]] = NoOptions
    defaults: ClassVar[dict[str, float]] = {"w_ce": 1.0, "w_kd": 0.0, "w_feat": 0.0}
    needs_features: ClassVar[bool] = True
    # False where training-only modules (random at init) make L_method non-zero even for a
    # student identical to its teacher; the contract test checks ≈ 0 only where this is True.
    zero_when_identical: ClassVar[bool] = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:
            method = METHODS[cls.name]
            cls.Options, cls.defaults = method.Options, method.defaults

    def __init__(self, options: BaseModel, student: ModelInfo, teacher: ModelInfo):
        super().__init__()
        self.options = options
        self.student_info = student
        self.teacher_info = teacher

    def prepare_teacher(self, teacher: nn.Module, teacher_taps: FeatureTaps, train_loader, cache_dir: Path) -> dict[str, Any]:
        """Optional teacher-side phase (AMA's adaptation, MHKD's teacher heads), run once before
        the student trains. Implementations cache their result under ``cache_dir`` keyed by what
        shaped it, so several student runs reuse it. Returns metrics to record."""
        return {}

    def teacher_forward(self, teacher_taps: FeatureTaps, x: torch.Tensor) -> ModelIO:
        """The teacher's outputs that supervise the student; a method may replace the teacher's
        forward (AMA runs a shallower adapted teacher)."""
        return teacher_taps.run(x)

    def forward(self, student: ModelIO, teacher: ModelIO, targets: torch.Tensor) -> torch.Tensor:  # noqa: D401
        raise NotImplementedError
