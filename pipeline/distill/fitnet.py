"""FitNets hints (Romero et al., ICLR 2015, "FitNets: Hints for Thin Deep Nets")."""

from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from pipeline.distill.base import DistillLoss


def regressor(c_in: int, c_out: int) -> nn.Sequential:
    """Training-only conv-BN-ReLU mapping the student's stage to the teacher's channel count."""
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class FitNetLoss(DistillLoss):
    """L_FitNet = mean(r(F_s^m) − F_t^n)², r a training-only regressor; the student map is
    resized to the teacher's H×W when they differ. Default w_feat=100 (RepDistiller), w_ce=1."""

    name = "fitnet"
    zero_when_identical = False  # the regressor starts random

    def __init__(self, options, student, teacher):
        super().__init__(options, student, teacher)
        c_s = student.stage_shapes[options.student_stage][0]
        c_t = teacher.stage_shapes[options.teacher_stage][0]
        self.regressor = regressor(c_s, c_t)

    def forward(self, student, teacher, targets):
        fs = self.regressor(student.stages[self.options.student_stage])
        ft = teacher.stages[self.options.teacher_stage]
        if fs.shape[-2:] != ft.shape[-2:]:
            fs = F.adaptive_avg_pool2d(fs, ft.shape[-2:])
        return F.mse_loss(fs, ft)
