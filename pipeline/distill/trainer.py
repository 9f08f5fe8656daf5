"""The distillation step: L = w_ce·CE(z_s, y) + w_kd·KD_T(z_s, z_t) + w_feat·L_method.

The teacher is frozen and in eval mode; only the student and the loss's own training-only
modules receive gradients. Time spent in the teacher's forward is measured, since methods
such as AMA claim to make it cheaper. The frozen teacher runs through the cheaper copy and
``TeacherForward`` of ``pipeline/train/supervision.py`` (shared with QAT). Where the loss needs
only the teacher's logits, training replays a few augmented views of each image and the teacher's
logits from the first pass over each view are reused (``reused_teacher``, ``ReusedTeacherLogits``),
keyed by the position ``fit`` hands the step.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn.functional as F

from pipeline.distill.base import DistillLoss
from pipeline.models.taps import FeatureTaps, ModelIO
from pipeline.train.spec import Position
from pipeline.train.supervision import TeacherForward, kd_loss


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


REUSE_BUDGET_BYTES = 2 << 30  # the most memory reused teacher logits may take on one rank


@dataclass
class ReusedTeacherLogits:
    """The frozen teacher's outputs per (view, batch) of ``fit``'s replayed epochs: computed the first
    time a position comes round, then looked up (the same images, augmented the same way). A step
    outside a replayed cycle (``position`` None) always computes."""

    store: dict[tuple[int, int], ModelIO] = field(default_factory=dict)
    computed: int = 0
    reused: int = 0

    def __call__(self, compute: Callable[[], ModelIO], position: Position | None) -> ModelIO:
        if position is None:
            return compute()
        if position in self.store:
            self.reused += 1
            return self.store[position]
        self.computed += 1
        out = self.store[position] = compute()
        return out

    def record(self) -> dict[str, int]:
        return {"teacher_batches_computed": self.computed, "teacher_batches_reused": self.reused}


def reused_teacher(cfg, loss_cls: type[DistillLoss], weights: LossWeights, images: int, classes: int) -> tuple[int | None, dict[str, Any]]:
    """How many views ``fit`` replays so that the distill step reuses the teacher's logits
    (``cfg.teacher_reuse``; ``images`` per rank, ``classes`` logits each), or None and why not."""
    views = math.ceil(cfg.epochs / cfg.teacher_reuse)
    if views >= cfg.epochs or not (weights.w_kd or weights.w_feat):  # nothing replays, or no teacher at all
        return None, {"teacher_views": None}
    why_not, need = None, views * images * classes * 4  # bytes of fp32 logits
    if loss_cls.needs_features:
        why_not = f"{loss_cls.name} compares intermediate features: the teacher runs every step, each epoch a new view"
    elif need > REUSE_BUDGET_BYTES:
        why_not = (f"the teacher's logits of {views} views would take {need / 2**30:.1f} GiB per process "
                   f"(over {REUSE_BUDGET_BYTES / 2**30:.0f}): the teacher runs every step; raise distill.teacher_reuse")
    if why_not:
        return None, {"teacher_views": None, "teacher_reuse_not_used": why_not}
    return views, {"teacher_views": views, "teacher_reuse": cfg.teacher_reuse}


def _fp32(io: ModelIO) -> ModelIO:
    return ModelIO(io.logits.float(), {k: v.float() for k, v in io.feats.items()})


def _wait(x: torch.Tensor) -> None:
    """Block until queued GPU work is done, so wall-clock timings are the work's."""
    if x.is_cuda:
        torch.cuda.synchronize(x.device)


@dataclass
class DistillStep:
    student_taps: FeatureTaps
    teacher_taps: FeatureTaps
    criterion: DistillLoss
    weights: LossWeights
    teacher_run: TeacherForward = TeacherForward()
    reuse: ReusedTeacherLogits | None = None  # set where the teacher's logits are reused over replayed views
    teacher_seconds: float = 0.0
    batches: int = 0
    parts: dict[str, float] = field(default_factory=lambda: {"ce": 0.0, "kd": 0.0, "feat": 0.0})

    def __call__(self, x: torch.Tensor, y: torch.Tensor, position: Position | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        w = self.weights
        teacher: ModelIO | None = None
        if w.w_kd or w.w_feat:  # the student trained alone (method none) never pays for a teacher forward
            _wait(x)
            t0 = time.perf_counter()
            compute = lambda: _fp32(self.teacher_run(lambda xt: self.criterion.teacher_forward(self.teacher_taps, xt), x))  # noqa: E731
            teacher = self.reuse(compute, position) if self.reuse is not None else compute()
            _wait(x)
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
