"""Classic logit distillation (Hinton, Vinyals, Dean 2015, "Distilling the Knowledge in a Neural Network").

The KD term itself (``kd_loss``) is in ``pipeline/train/supervision.py``: QAT weighs it too."""

from __future__ import annotations

from pipeline.distill.base import DistillLoss


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
