"""Attention transfer (Zagoruyko & Komodakis, ICLR 2017, "Paying More Attention to Attention"),
and the position normalisation every attention-map loss (AT, AFD, RTK, HMAT) shares.

Why a normalisation: an attention map a(F) is unit-length over the H·W positions, so the summed
squared difference Σ_hw(a_s − a_t)² of two maps does not depend on their size, while the
published loss takes the *mean* over positions: at half the input side it is 4× larger, and a
published weight (AT's β = 1000, tuned on 32×32 CIFAR) means a 4× stronger term at 16×16 inputs
and 16× at 8×8. ``positions: reference`` (the default) divides the sum by the number of positions
the stage would have at a ``reference_size``² input instead of by its actual number:

    L_ref = mean_hw(·) · (H_in·W_in) / reference_size²            (H_in×W_in: the network's input)

which equals the published loss exactly at 32×32 inputs, is the same for the same disagreement
at any input size, and keeps the published relative weighting of a network's stages (a deeper,
smaller stage still weighs more per position, as in RepDistiller's CIFAR setting).
``positions: mean`` is the published formula at any size.
"""

from __future__ import annotations


import torch
import torch.nn.functional as F

from pipeline.distill.base import DistillLoss
from pipeline.distill.options import PositionsOptions
from pipeline.models.taps import ModelInfo


def positions_scale(options: PositionsOptions, info: ModelInfo) -> float:
    """The factor on a per-position mean: (H_in·W_in)/reference_size² for ``reference``, 1 for ``mean``."""
    if options.positions == "mean":
        return 1.0
    _, h, w = info.input_shape
    return h * w / options.reference_size**2


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


class ATLoss(DistillLoss):
    """L_AT = s·Σ_i mean_{b,hw}(a(F_s^i) − a(F_t^i))² over paired stages, s = ``positions_scale``
    (1 with ``positions: mean``, the published formula).

    Stages are paired from the last backwards, so a 3-stage student and 4-stage teacher pair
    (s1,t2), (s2,t3), (s3,t4). Defaults w_feat=1000, w_ce=1, w_kd=0 and all residual groups
    (paper / RepDistiller).
    """

    name = "at"

    def __init__(self, options, student, teacher):
        super().__init__(options, student, teacher)
        self.scale = positions_scale(options, student)

    def forward(self, student, teacher, targets):
        pairs = paired_stages(student.stages, teacher.stages)
        if self.options.pairs == "middle" and len(pairs) > 1:
            pairs = pairs[:-1]
        return self.scale * sum(at_distance(fs, ft) for fs, ft in pairs)


def paired_stages(student: list[torch.Tensor], teacher: list[torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Pair stages from the deepest backwards: deep features are the ones both models share in meaning."""
    n = min(len(student), len(teacher))
    return list(zip(student[-n:], teacher[-n:]))
