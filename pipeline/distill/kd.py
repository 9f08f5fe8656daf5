"""Classic logit distillation (Hinton, Vinyals, Dean 2015, "Distilling the Knowledge in a Neural Network")."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pipeline.distill.base import DistillLoss


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """KD_T = T²·KL(softmax(z_t/T) ‖ softmax(z_s/T)), mean over the batch. Logits are B×K.

    The T² keeps the gradient scale comparable to CE when T changes (Hinton §2).
    """
    t = temperature
    log_p_s = F.log_softmax(student_logits / t, dim=1)
    log_p_t = F.log_softmax(teacher_logits / t, dim=1)
    return F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True) * t * t


class KDLoss(DistillLoss):
    """Logit KD alone: the trainer's w_kd·KD_T term does the work, L_method is 0.

    Defaults T=4, w_ce=0.1, w_kd=0.9 as in RepDistiller / mdistiller.
    """

    name = "kd"
    needs_features = False

    def forward(self, student, teacher, targets):
        return student.logits.new_zeros(())


class NoDistillLoss(DistillLoss):
    """The student trained alone on labels (the baseline every method must beat)."""

    name = "none"
    needs_features = False

    def forward(self, student, teacher, targets):
        return student.logits.new_zeros(())
