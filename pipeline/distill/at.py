"""Attention transfer (Zagoruyko & Komodakis, ICLR 2017, "Paying More Attention to Attention")."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from typing import Literal

from pydantic import BaseModel, ConfigDict

from pipeline.distill.base import DistillLoss


def attention_map(feat: torch.Tensor) -> torch.Tensor:
    """a(F) = l2norm(vec(mean_c F²)): B×C×H×W → B×(H·W), each row unit length."""
    return F.normalize(feat.pow(2).mean(dim=1).flatten(1), dim=1)


def match_spatial(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Adaptive-average-pool the larger of two B×C×H×W maps to the other's H×W."""
    ha, wa = a.shape[-2:]
    hb, wb = b.shape[-2:]
    if (ha, wa) == (hb, wb):
        return a, b
    if ha * wa > hb * wb:
        return F.adaptive_avg_pool2d(a, (hb, wb)), b
    return a, F.adaptive_avg_pool2d(b, (ha, wa))


def at_distance(fs: torch.Tensor, ft: torch.Tensor) -> torch.Tensor:
    """mean_{b,hw}(a(F_s) − a(F_t))² after pooling the larger map to the smaller size."""
    fs, ft = match_spatial(fs, ft)
    return (attention_map(fs) - attention_map(ft)).pow(2).mean()


class ATOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    # "all": every paired stage, as RepDistiller's feat[1:-1] (the residual groups, neither the
    # stem nor the pooled vector); "middle": all but the deepest pair
    pairs: Literal["all", "middle"] = "all"


class ATLoss(DistillLoss):
    """L_AT = Σ_i mean_{b,hw}(a(F_s^i) − a(F_t^i))² over paired stages.

    Stages are paired from the last backwards, so a 3-stage student and 4-stage teacher pair
    (s1,t2), (s2,t3), (s3,t4). Defaults w_feat=1000, w_ce=1, w_kd=0 and all residual groups
    (paper / RepDistiller).
    """

    name = "at"
    Options = ATOptions
    defaults = {"w_ce": 1.0, "w_kd": 0.0, "w_feat": 1000.0}

    def forward(self, student, teacher, targets):
        pairs = paired_stages(student.stages, teacher.stages)
        if self.options.pairs == "middle" and len(pairs) > 1:
            pairs = pairs[:-1]
        return sum(at_distance(fs, ft) for fs, ft in pairs)


def paired_stages(student: list[torch.Tensor], teacher: list[torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Pair stages from the deepest backwards: deep features are the ones both models share in meaning."""
    n = min(len(student), len(teacher))
    return list(zip(student[-n:], teacher[-n:]))
