"""Multi-head knowledge distillation (Wang, Lohit, Jones, Fu, arXiv 2012.02911, "Multi-head Knowledge
Distillation for Model Compression").

Auxiliary classifiers after the intermediate stages of both networks turn each stage's features
into class logits, so teacher and student are compared only through logits: their feature shapes
may differ freely. Our reading of the abstract (shared/METHODS.md; no official code exists):

    head(F) = FC(ReLU(FC(GAP(CBR(CBR(F))))))          CBR = conv3×3-BN-ReLU, B×C×H×W → B×K
    teacher phase (teacher frozen):  min_{heads_t}  Σ_i CE(h_t^i, y),  then heads_t frozen
    L = KD_T(z_s, z_t) + Σ_i β·[KD_T(h_s^i, h_t^i) + CE(h_s^i, y)]            β = 0.5, T = 4

h^i = head^i(F^i). The trainer supplies ``w_kd·KD_T(z_s, z_t)`` (defaults w_ce=0, w_kd=1, w_feat=1);
this loss returns the Σ term. Its T is ``options.temperature`` (the trainer's ``distill.temperature``
applies to the final logits; both default to 4). Head widths are our choice (conv channels = the
stage's own, FC hidden 128). Heads are attributes of the loss, never of the student, so they are
dropped at export. The frozen teacher heads run inside ``forward`` under ``no_grad`` (a few small
convs), so the trainer's teacher-forward timing is the plain teacher's.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.distill.base import DistillLoss
from pipeline.distill.teacher_side import (
    accuracies, cache_key, cached_phase, ordered, reset_parameters, train_phase,
)
from pipeline.errors import PipelineError
from pipeline.train.supervision import kd_loss


def aux_head(c_in: int, width: int, hidden: int, num_classes: int) -> nn.Sequential:
    """(conv3×3-BN-ReLU)×2 → global average pool → FC-ReLU-FC: B×C×H×W → B×K."""
    return nn.Sequential(
        nn.Conv2d(c_in, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
        nn.Conv2d(width, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(width, hidden), nn.ReLU(), nn.Linear(hidden, num_classes),
    )


def _resolve(indices: list[int], n: int, key: str, names) -> list[int]:
    bad = [i for i in indices if not -n <= i < n]
    if bad:
        raise PipelineError(f"distill.options.{key}: {bad} out of range for {n} stages ({', '.join(names)})")
    return [i % n for i in indices]


class MHKDLoss(DistillLoss):
    """L_method = Σ_i β·[KD_T(h_s^i, h_t^i) + CE(h_s^i, y)] over auxiliary heads on paired stages;
    the trainer adds KD_T(z_s, z_t). Teacher heads are trained (CE) on the frozen teacher first.

    Wang, Lohit, Jones, Fu, arXiv 2012.02911 (our reading: module docstring). Defaults β=0.5, T=4,
    w_ce=0, w_kd=1, w_feat=1.
    """

    name = "mhkd"
    zero_when_identical = False  # the heads' CE term is never 0, and student heads start random

    def __init__(self, options, student, teacher):
        super().__init__(options, student, teacher)
        n_s, n_t = len(student.stage_shapes), len(teacher.stage_shapes)
        s_idx = _resolve(options.student_stages if options.student_stages is not None else list(range(n_s - 1)),
                         n_s, "student_stages", student.stage_names)
        if not s_idx:
            raise PipelineError(f"distill.options.student_stages: the student has one stage "
                                f"({student.stage_names[0]}), so no intermediate stage for a head; list one")
        if options.teacher_stages is not None:
            t_idx = _resolve(options.teacher_stages, n_t, "teacher_stages", teacher.stage_names)
        else:
            t_idx = [i - n_s + n_t for i in s_idx]
            if min(t_idx) < 0:
                raise PipelineError(f"distill.options.teacher_stages: the teacher has fewer stages ({n_t}) than "
                                    f"the student ({n_s}); list the teacher stage for each student head")
        if len(t_idx) != len(s_idx):
            raise PipelineError(f"distill.options.teacher_stages: {len(t_idx)} teacher stage(s) for {len(s_idx)} student heads")
        self.pairs = [(student.stage_names[i], teacher.stage_names[j]) for i, j in zip(s_idx, t_idx)]

        def head(shape):
            return aux_head(shape[0], options.width or shape[0], options.hidden, student.num_classes)

        self.student_heads = nn.ModuleList(head(student.stage_shapes[i]) for i in s_idx)
        self.teacher_heads = nn.ModuleList(head(teacher.stage_shapes[j]) for j in t_idx)
        self._frozen = False

    def prepare_teacher(self, teacher, teacher_taps, train_loader, cache_dir):
        """Train the teacher's heads with CE on its frozen features (or load them), then freeze them."""
        teacher.eval()
        phase_options = self.options.model_dump(mode="json", exclude={"beta", "temperature", "student_stages", "teacher_stages"})
        key = cache_key(self.name, phase_options, teacher, train_loader,  # β, T only weigh the student's loss
                        teacher_stages=[t for _, t in self.pairs], teacher_shapes=self.teacher_info.stage_shapes)
        path = Path(cache_dir) / self.name / f"{key[:20]}.pt"
        metrics = cached_phase(path, self.teacher_heads, lambda: self._train_teacher_heads(teacher, teacher_taps, train_loader))
        self.teacher_heads.requires_grad_(False)
        self.teacher_heads.eval()
        self._frozen = True
        return metrics

    def _teacher_head_logits(self, teacher_taps, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        with torch.no_grad():
            io = teacher_taps.run(x)
        return io.logits, [h(io.feats[t]) for h, (_, t) in zip(self.teacher_heads, self.pairs)]

    def _train_teacher_heads(self, teacher, teacher_taps, train_loader) -> dict:
        for i, h in enumerate(self.teacher_heads):
            reset_parameters(h, self.options.seed + i)

        def ce(x, y, _position):
            heads = self._teacher_head_logits(teacher_taps, x)[1]
            return sum(F.cross_entropy(z, y) for z in heads), heads[-1]  # the deepest head's accuracy is fit's train_acc

        seconds = train_phase([self.teacher_heads], ce, train_loader, self.options.seed, self.options.epochs, self.options.lr,
                              "mhkd teacher heads")
        self.teacher_heads.eval()

        def all_logits(x):
            z, heads = self._teacher_head_logits(teacher_taps, x)
            return [z, *heads]

        teacher_acc, *head_accs = accuracies(all_logits, ordered(train_loader))
        return {
            "teacher_train_acc": teacher_acc,
            **{f"head_{t}_train_acc": acc for (_, t), acc in zip(self.pairs, head_accs)},
            "heads_seconds": seconds,
            "heads_epochs": self.options.epochs,
            "head_params": sum(p.numel() for p in self.teacher_heads.parameters()),
        }

    def train(self, mode: bool = True):
        super().train(mode)
        if self._frozen:
            self.teacher_heads.eval()  # trained once on the teacher, then fixed
        return self

    def forward(self, student, teacher, targets):
        total = student.logits.new_zeros(())
        for hs, ht, (s, t) in zip(self.student_heads, self.teacher_heads, self.pairs):
            zs = hs(student.feats[s])
            with torch.no_grad():
                zt = ht(teacher.feats[t])
            total = total + kd_loss(zs, zt, self.options.temperature) + F.cross_entropy(zs, targets)
        return self.options.beta * total
