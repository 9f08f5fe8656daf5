"""The distillation step: L = w_ce·CE(z_s, y) + w_kd·KD_T(z_s, z_t) + w_feat·L_method.

The teacher is frozen and in eval mode; only the student and the loss's own training-only
modules receive gradients. Time spent in the teacher's forward is measured, since methods
such as AMA claim to make it cheaper.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.distill.base import DistillLoss
from pipeline.distill.kd import kd_loss
from pipeline.models.taps import FeatureTaps, ModelIO


@dataclass
class LossWeights:
    w_ce: float
    w_kd: float
    w_feat: float
    temperature: float

    @classmethod
    def resolve(cls, cfg, loss_cls: type[DistillLoss]) -> LossWeights:
        """The config's weights where given, else the method's published defaults."""
        pick = lambda k: getattr(cfg, k) if getattr(cfg, k) is not None else loss_cls.defaults[k]  # noqa: E731
        return cls(pick("w_ce"), pick("w_kd"), pick("w_feat"), cfg.temperature)


def freeze(model: nn.Module) -> nn.Module:
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


@dataclass
class DistillStep:
    student_taps: FeatureTaps
    teacher_taps: FeatureTaps
    criterion: DistillLoss
    weights: LossWeights
    teacher_seconds: float = 0.0
    batches: int = 0
    parts: dict[str, float] = field(default_factory=lambda: {"ce": 0.0, "kd": 0.0, "feat": 0.0})

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        w = self.weights
        teacher: ModelIO | None = None
        if w.w_kd or w.w_feat:  # the student trained alone (method none) never pays for a teacher forward
            t0 = time.perf_counter()
            with torch.no_grad():
                teacher = self.criterion.teacher_forward(self.teacher_taps, x)
            self.teacher_seconds += time.perf_counter() - t0
        self.batches += 1
        student = self.student_taps.run(x)
        ce = F.cross_entropy(student.logits, y)
        loss = w.w_ce * ce
        if w.w_kd:
            kd = kd_loss(student.logits, teacher.logits, w.temperature)
            loss = loss + w.w_kd * kd
            self.parts["kd"] += float(kd.detach())
        if w.w_feat:
            feat = self.criterion(student, teacher, y)
            loss = loss + w.w_feat * feat
            self.parts["feat"] += float(feat.detach())
        self.parts["ce"] += float(ce.detach())
        return loss, student.logits

    @property
    def teacher_ms_per_batch(self) -> float:
        return 1000.0 * self.teacher_seconds / max(self.batches, 1)
