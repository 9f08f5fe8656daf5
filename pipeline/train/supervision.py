"""How a frozen teacher supervises a training student, in the distill and QAT stages alike.

The teacher is frozen and in eval mode. Its forward is made cheaper (``supervising_teacher``,
``TeacherForward``): conv-BN folded, channels-last, bf16 autocast where the device runs bf16
natively; its outputs reach the losses in fp32. Both stages weigh its logits with ``kd_loss``.
This sits below both stages, so neither imports the other.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.models.conv_bn import fold_batchnorm
from pipeline.train.distributed import current, resolve_precision


def freeze(model: nn.Module) -> nn.Module:
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


@dataclass(frozen=True)
class TeacherForward:
    """How a frozen teacher's forward runs under a training step: no grad, its own precision (not the
    student's), channels-last input where asked; outputs come back as given (callers take ``.float()``)."""

    precision: str = "fp32"
    channels_last: bool = False

    def __call__(self, forward: Callable[[torch.Tensor], Any], x: torch.Tensor) -> Any:
        with torch.no_grad(), current().autocast(self.precision):
            return forward(x.contiguous(memory_format=torch.channels_last) if self.channels_last else x)


def supervising_teacher(teacher: nn.Module, cfg) -> tuple[nn.Module, TeacherForward, dict[str, Any]]:
    """A copy of the frozen ``teacher`` for supervising (``cfg``: distill/qat's teacher_* keys), how to
    run it, and what was applied. The teacher itself is left as it is: teacher-side phases that train
    on it (AMA's tail copy, MHKD's heads) and its reported accuracy use the plain fp32 model."""
    fast = copy.deepcopy(teacher).eval()
    record: dict[str, Any] = {"teacher_bn_folded": 0}
    if cfg.teacher_fold_bn:
        try:
            record["teacher_bn_folded"] = fold_batchnorm(fast)
        except Exception as exc:  # torch.fx cannot trace every model; folding is only a speed-up
            record["teacher_fold_bn_skipped"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
    if cfg.teacher_channels_last:
        fast = fast.to(memory_format=torch.channels_last)
    run = TeacherForward(resolve_precision(cfg.teacher_precision, current().device), cfg.teacher_channels_last)
    record.update(teacher_precision=run.precision, teacher_channels_last=run.channels_last)
    return fast, run, record


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """KD_T = T²·KL(softmax(z_t/T) ‖ softmax(z_s/T)), mean over the batch. Logits are B×K
    (Hinton, Vinyals, Dean 2015, "Distilling the Knowledge in a Neural Network").

    The T² keeps the gradient scale comparable to CE when T changes (Hinton §2).
    """
    t = temperature
    log_p_s = F.log_softmax(student_logits / t, dim=1)
    log_p_t = F.log_softmax(teacher_logits / t, dim=1)
    return F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True) * t * t
