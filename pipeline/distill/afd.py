"""Attention-based feature distillation, AFD (Ji, Heo, Park, AAAI 2021, "Show, Attend and Distill:
Knowledge Distillation via Attention-based Feature Matching"; code: clovaai/attention-feature-distillation).

Every teacher stage n asks, per sample, which student stages m should imitate it:

    q_n     = BN(W_q^n · gap(F_t^n))                                       B×d   (d = 128)
    k_m     = ReLU(BN(W_k^m · gap(F_s^m)))                                 B×d
    k_{m,n} = BN(W_b · k_m)[n-th d-slice]                                  B×d   (one bilinear map for all m)
    α_{n,m} = softmax_m((k_{m,n}·q_n + p_t^n·p_s^m) / √d)                  B×N×M  (p: learned stage embeddings)
    v_t^n   = l2norm(vec(mean_c (F_t^n)²))                                 B×(H_n·W_n)
    v_s^{m→n} = l2norm(vec(pool_{H_n×W_n}(mean_c (F_s^m)²)))               B×(H_n·W_n)
    L_AFD   = Σ_n mean_b Σ_m α_{n,m}·mean_hw(v_s^{m→n} − v_t^n)²

as in the authors' code, times the position scale of ``at.py`` (``positions: mean`` drops it). Defaults follow its ``main.py``: w_ce=1, KD α=0.9 with T=4, β=w_feat=200.
Where we differ: the authors tap every residual block (27 for resnet56); we tap the stages the
pipeline names (``model.stage_names`` or ``student.stages`` / ``teacher.stages`` in the config),
which may list block paths too. All projections and embeddings are attributes of this loss, so
they are trained with the student and dropped at export. RTK (``rtk.py``) builds on this family.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.distill.at import positions_scale
from pipeline.distill.base import DistillLoss


def energy_map(feat: torch.Tensor) -> torch.Tensor:
    """mean_c F²: B×C×H×W → B×1×H×W, the un-normalised attention map (cheap to pool: one channel)."""
    return feat.pow(2).mean(dim=1, keepdim=True)


def pooled_attention(energy: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Adaptive-average-pool a B×1×H×W energy map to ``size``, then l2-normalise: B×(h·w).

    Pooling a smaller map to a larger size repeats cells (the authors' ``AdaptiveAvgPool2d``).
    """
    if tuple(energy.shape[-2:]) != tuple(size):
        energy = F.adaptive_avg_pool2d(energy, size)
    return F.normalize(energy.flatten(1), dim=1)


class BatchNorm1dAnyBatch(nn.BatchNorm1d):
    """BatchNorm1d that normalises a training batch of one sample (the loader's last batch can
    be one) with the running statistics instead of failing: one sample has no batch variance."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and x.shape[0] == 1:
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)
        return super().forward(x)


def projection(c_in: int, d: int, relu: bool = False) -> nn.Sequential:
    """Linear → BN (→ ReLU): a global-pooled feature (B×c_in) to a query or key (B×d)."""
    layers: list[nn.Module] = [nn.Linear(c_in, d), BatchNorm1dAnyBatch(d)]
    if relu:
        layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def global_pool(feat: torch.Tensor) -> torch.Tensor:
    return feat.mean(dim=(2, 3))


class AFDLoss(DistillLoss):
    """L_AFD = Σ_n mean_b Σ_m α_{n,m}·mean_hw(v_s^{m→n} − v_t^n)², α = softmax over student stages
    of teacher-query · student-key (module docstring). Defaults w_ce=1, w_kd=0.9, w_feat=200."""

    name = "afd"
    zero_when_identical = False  # the attention starts random: off-diagonal pairs carry weight

    def __init__(self, options, student, teacher):
        super().__init__(options, student, teacher)
        d, n_t, n_s = options.dim, len(teacher.stage_shapes), len(student.stage_shapes)
        self.query = nn.ModuleList(projection(c, d) for c, *_ in teacher.stage_shapes)
        self.key = nn.ModuleList(projection(c, d, relu=True) for c, *_ in student.stage_shapes)
        self.bilinear = projection(d, d * n_t)
        self.p_t = nn.Parameter(nn.init.xavier_normal_(torch.empty(n_t, d)))
        self.p_s = nn.Parameter(nn.init.xavier_normal_(torch.empty(n_s, d)))
        self.scale = positions_scale(options, student)

    def attention(self, student: list[torch.Tensor], teacher: list[torch.Tensor]) -> torch.Tensor:
        """α: B×N×M, each teacher stage's weights over the student stages."""
        b, n_t, n_s, d = student[0].shape[0], len(teacher), len(student), self.options.dim
        q = torch.stack([proj(global_pool(f)) for proj, f in zip(self.query, teacher)], dim=1)  # B×N×d
        k = torch.stack([proj(global_pool(f)) for proj, f in zip(self.key, student)], dim=1)  # B×M×d
        k = self.bilinear(k.reshape(b * n_s, d)).view(b, n_s, n_t, d)  # B×M×N×d
        logits = torch.einsum("bmnd,bnd->bnm", k, q) + self.p_t @ self.p_s.t()
        return F.softmax(logits / math.sqrt(d), dim=2)

    def forward(self, student, teacher, targets):
        fs, ft = student.stages, teacher.stages
        alpha = self.attention(fs, ft)
        es = [energy_map(f) for f in fs]
        loss = fs[0].new_zeros(())
        for n, f_t in enumerate(ft):
            size = tuple(f_t.shape[-2:])
            v_t = pooled_attention(energy_map(f_t), size)  # B×HW
            v_s = torch.stack([pooled_attention(e, size) for e in es], dim=1)  # B×M×HW
            diff = (v_s - v_t.unsqueeze(1)).pow(2).mean(dim=2)  # B×M
            loss = loss + (alpha[:, n] * diff).sum(dim=1).mean()
        return self.scale * loss
