"""RTK, representative teacher keys (Yang, Kao, Huang, arXiv 2206.12788).

AFD (``afd.py``) lets each teacher stage attend over all student stages. RTK turns the question
round: each student stage m is a query over the teacher stages n, and only the *representative*
keys are kept, so the student stops being pulled toward teacher stages that say little about it
(the abstract's "filter out useless information"). We know the paper from its abstract only and
no official code exists, so the equations below are our reading (shared/METHODS.md):

    α_{m,n} = softmax_n(s_{m,n})                                         B×M×N, per sample
    R(m)    = top-k of α_{m,·}  ∩  {n : α_{m,n} ≥ τ}                      (the best key is always kept)
    α̃_{m,n} = α_{m,n}·[n ∈ R(m)] / Σ_{n'∈R(m)} α_{m,n'}                 renormalised
    a↓      = l2norm(vec(pool_{h×w}(mean_c F²)))                          (h, w) = the smaller of the pair's sizes
    D_{m,n} = mean_hw(a↓(F_s^m) − a↓(F_t^n))²
    L_RTK   = s·Σ_m mean_b Σ_{n∈R(m)} α̃_{m,n}·D_{m,n}                   s: the position scale of ``at.py``

Two forms of the score s (``form``):
  learned: s_{m,n} = q_m·k_n/√d, q_m = BN(W_q^m·gap(F_s^m)), k_n = BN(W_k^n·gap(F_t^n)), d=128;
           the projections are trained with the student through L_RTK (as AFD's are) and
           live in this loss, so they are dropped at export.
  cosine:  s_{m,n} = cos(a↓(F_s^m), a↓(F_t^n)) / t (t = ``cosine_temperature``): no parameters.
           The score is a selection rule, so it is detached: the student learns from D only.
           The temperature is ours: cosines of AT maps sit close together (all in [0, 1]), so
           softmax at t=1 would weigh every key almost equally. Caveat: pooling smooths, so a
           pair compared at a coarse size scores higher; this form leans toward deep teacher keys.
k = N with τ unset is plain (unfiltered) attention: the ablation that isolates the filtering.
The energy map is pooled before normalising (as AFD's code does) rather than the features,
so pooling costs one channel. Defaults w_ce=1, w_kd=0.9 (T=4), w_feat=200, as AFD.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.distill.afd import energy_map, global_pool, pooled_attention, projection
from pipeline.distill.at import positions_scale
from pipeline.distill.base import DistillLoss
from pipeline.errors import PipelineError


def representative_weights(scores: torch.Tensor, k: int | None, tau: float | None) -> torch.Tensor:
    """α̃ from scores B×M×N: softmax over keys, keep top-k ∩ {α ≥ τ} (and always the best), renormalise."""
    alpha = F.softmax(scores, dim=-1)
    keep = torch.ones_like(alpha, dtype=torch.bool)
    if k is not None and k < alpha.shape[-1]:
        keep = torch.zeros_like(keep).scatter_(-1, alpha.topk(k, dim=-1).indices, True)
    if tau is not None:
        keep &= alpha >= tau
    keep.scatter_(-1, alpha.argmax(dim=-1, keepdim=True), True)
    kept = alpha * keep
    return kept / kept.sum(dim=-1, keepdim=True)


def pairwise_maps(student: list[torch.Tensor], teacher: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """For every (student stage m, teacher stage n): D_{m,n} and cos_{m,n} of the AT maps pooled to
    the pair's smaller size. Returns two B×M×N tensors."""
    es, et = [energy_map(f) for f in student], [energy_map(f) for f in teacher]
    dist, cos = [], []
    for e_s in es:
        row_d, row_c = [], []
        for e_t in et:
            size = (min(e_s.shape[-2], e_t.shape[-2]), min(e_s.shape[-1], e_t.shape[-1]))
            a_s, a_t = pooled_attention(e_s, size), pooled_attention(e_t, size)
            row_d.append((a_s - a_t).pow(2).mean(dim=1))
            row_c.append((a_s * a_t).sum(dim=1))
        dist.append(torch.stack(row_d, dim=1))
        cos.append(torch.stack(row_c, dim=1))
    return torch.stack(dist, dim=1), torch.stack(cos, dim=1)


class RTKLoss(DistillLoss):
    """L_RTK = Σ_m mean_b Σ_{n∈R(m)} α̃_{m,n}·mean_hw(a↓(F_s^m) − a↓(F_t^n))²: student-stage queries
    over teacher-stage keys, only the representative keys kept (module docstring). Defaults
    w_ce=1, w_kd=0.9, w_feat=200; options form (learned | cosine), k=2, tau=None."""

    name = "rtk"
    # D_{m,n} > 0 off the diagonal even for identical models; only k=1 with the cosine form
    # (whose best key for stage m is stage m itself) gives exactly 0
    zero_when_identical = False

    def __init__(self, options, student, teacher):
        super().__init__(options, student, teacher)
        n_t = len(teacher.stage_shapes)
        if options.k is not None and options.k > n_t:
            raise PipelineError(
                f"distill.options.k: {options.k} keys asked for but the teacher has {n_t} stages; "
                f"use k ≤ {n_t} (k: null keeps every key)"
            )
        self.scale = positions_scale(options, student)
        if options.form == "learned":
            d = options.dim
            self.query = nn.ModuleList(projection(c, d) for c, *_ in student.stage_shapes)
            self.key = nn.ModuleList(projection(c, d) for c, *_ in teacher.stage_shapes)

    def scores(self, student: list[torch.Tensor], teacher: list[torch.Tensor], cos: torch.Tensor) -> torch.Tensor:
        """s: B×M×N, each student stage's score for every teacher stage."""
        if self.options.form == "cosine":
            return cos.detach() / self.options.cosine_temperature
        q = torch.stack([proj(global_pool(f)) for proj, f in zip(self.query, student)], dim=1)  # B×M×d
        k = torch.stack([proj(global_pool(f)) for proj, f in zip(self.key, teacher)], dim=1)  # B×N×d
        return q @ k.transpose(1, 2) / math.sqrt(self.options.dim)

    def forward(self, student, teacher, targets):
        fs, ft = student.stages, teacher.stages
        dist, cos = pairwise_maps(fs, ft)
        weights = representative_weights(self.scores(fs, ft, cos), self.options.k, self.options.tau)
        return self.scale * (weights * dist).sum(dim=2).mean(dim=0).sum()
