"""HMAT, hierarchical multi-attention transfer (Gou, Sun, Yu, Wan, Tao, ACM TOMM 20(2) 2023,
"Hierarchical Multi-Attention Transfer for Knowledge Distillation", doi 10.1145/3568679).

The abstract's idea: different kinds of attention carry the knowledge of different depths, so
transfer *position* attention at the low level, *activation* attention at the mid and high
levels and *channel* attention at the high level. Our reading (shared/METHODS.md; the paper
gives no code, so the equations are ours). With X the B×C×N flattening of a stage map and
x̂ denoting l2-normalisation along the named axis:

    position   X = vec(pool_{≤16×16}(F^low))                B×C×N, N = h·w ≤ 256
               P = softmax_row(X̂_cᵀ X̂_c / τ)               B×N×N  (X̂_c: each position unit-length over channels)
    activation a(F) = l2norm(vec(mean_c F²))                 B×HW   (AT, ``at.py``), on F^mid and F^high
    channel    X = vec(F^high), student first through r      B×C×N  (r: training-only 1×1 conv-BN, C_s→C_t)
               G = softmax_row(X̂_n X̂_nᵀ / τ)               B×C×C  (X̂_n: each channel unit-length over positions)

    L_HMAT = λ_p·d(P_s, P_t) + β·s·Σ_{l∈{mid,high}} mean_{b,hw}(a(F_s^l) − a(F_t^l))² + λ_c·d(G_s, G_t)

    s: the position scale of ``at.py`` (the AT term's published mean made size-independent;
    1 with ``positions: mean``); d_mse below is size-independent by construction

    d_mse(A_s, A_t) = mean_{b,i,j}(n·A_s − n·A_t)²           n = the row length (N or C)
    d_kl(A_s, A_t)  = mean_{b,i} Σ_j A_t,ij·log(A_t,ij / A_s,ij)

Where this is our reading rather than the paper's:
  * Both affinities are Gram matrices of l2-normalised vectors (cosine similarities), so the
    softmax sees values in [-1/τ, 1/τ] whatever the feature scale of each network; raw products
    (X Xᵀ, as in DANet's channel attention) would saturate differently for student and teacher.
  * d_mse is measured in units of the uniform row (n·A): softmax rows over N=256 positions have
    entries near 1/256, so a plain MSE would shrink as 1/N² and λ_p would depend on the input size.
  * The low-level map is adaptive-average-pooled to at most ``max_side``×``max_side`` (and to the
    smaller of the student's and teacher's sizes) before the N×N affinity: memory stays bounded.
  * Stages with different spatial sizes are pooled to the smaller one (as ``at.py``); the channel
    adapter is built only when the channel counts differ, so a student equal to its teacher
    gives L = 0.
  * KD is not part of HMAT's loss here (w_kd=0, as AT), so ``hmat-activation`` is AT on two stages.

Memory of the position term, per batch of B (float32, N = h·w after pooling): autograd keeps
≈ 2·B·N²·4 bytes for the backward (the student's softmax and, with d_mse, the difference; with
d_kl the log-softmax and the teacher's probabilities), and the teacher's similarity and softmax
add ≈ 2·B·N²·4 transiently. For 32×32 inputs to a CIFAR ResNet the low stage is 32×32, pooled to
16×16, so N = 256: measured (``position_term_saved_bytes``) 35 MiB kept at B = 64 and 70 MiB at
B = 128. Unpooled (N = 1024) it would be 16× that: 520 MiB kept at B = 64, 1.0 GiB at B = 128.

Defaults: β = 1000 (AT's weight, METHODS.md); λ_p = 1000 and λ_c = 300 make each term start at
the size of the activation term (≈ 34 = 1000 × 0.034) for a fresh resnet8 student of the resnet56
teacher on 16×16 Fashion-MNIST (measured: d_mse 0.035 position, 0.116 channel at τ = 1);
``benchmarks/distill_methods.py`` sweeps each ×0.1 and ×10. w_ce = 1, w_kd = 0, w_feat = 1
(the λs and β carry the weights).
"""

from __future__ import annotations


import torch
import torch.nn.functional as F
from torch import nn

from pipeline.distill.at import at_distance, match_spatial, positions_scale
from pipeline.distill.base import DistillLoss
from pipeline.distill.options import StageRef
from pipeline.errors import PipelineError



def position_similarity(feat: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
    """X̂_cᵀX̂_c: cosine similarity of every pair of positions, B×C×H×W → B×N×N (N = h·w).

    ``size`` pools the map first (adaptive average); a position whose feature vector is all
    zero (dead ReLUs) gets similarity 0 to everything, not NaN.
    """
    if size is not None and tuple(feat.shape[-2:]) != tuple(size):
        feat = F.adaptive_avg_pool2d(feat, size)
    x = F.normalize(feat.flatten(2), dim=1)  # B×C×N, unit over channels
    return x.transpose(1, 2) @ x


def channel_similarity(feat: torch.Tensor) -> torch.Tensor:
    """X̂_nX̂_nᵀ: cosine similarity of every pair of channels, B×C×H×W → B×C×C."""
    x = F.normalize(feat.flatten(2), dim=2)  # B×C×N, unit over positions
    return x @ x.transpose(1, 2)


def position_attention(feat: torch.Tensor, size: tuple[int, int] | None = None, temperature: float = 1.0) -> torch.Tensor:
    """P = softmax_row(X̂_cᵀX̂_c / τ): B×N×N, each row a distribution over positions."""
    return F.softmax(position_similarity(feat, size) / temperature, dim=-1)


def channel_attention(feat: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """G = softmax_row(X̂_nX̂_nᵀ / τ): B×C×C, each row a distribution over channels."""
    return F.softmax(channel_similarity(feat) / temperature, dim=-1)


def attention_distance(sim_s: torch.Tensor, sim_t: torch.Tensor, temperature: float, kind: str) -> torch.Tensor:
    """d(softmax(sim_s/τ), softmax(sim_t/τ)) for B×n×n similarities: ``mse`` in units of the
    uniform row (mean of (n·A_s − n·A_t)²) or ``kl`` (row-wise KL(A_t ‖ A_s), mean over b and rows)."""
    # B·n² elements per call (n = 256 positions: 8M at B = 128), so every elementwise pass counts:
    # no division at τ = 1, softmax rather than exp(log_softmax), and n² applied to the scalar
    if temperature != 1.0:
        sim_s, sim_t = sim_s / temperature, sim_t / temperature
    if kind == "kl":
        log_t = F.log_softmax(sim_t, dim=-1)
        return (log_t.exp() * (log_t - F.log_softmax(sim_s, dim=-1))).sum(dim=-1).mean()
    n = sim_s.shape[-1]
    return n * n * F.mse_loss(F.softmax(sim_s, dim=-1), F.softmax(sim_t, dim=-1))


def pooled_size(fs: torch.Tensor, ft: torch.Tensor, max_side: int) -> tuple[int, int]:
    """The common h×w of a student/teacher pair: the smaller of the two, capped at max_side."""
    return (min(fs.shape[-2], ft.shape[-2], max_side), min(fs.shape[-1], ft.shape[-1], max_side))


def position_term_saved_bytes(fs: torch.Tensor, ft: torch.Tensor, max_side: int = 16, kind: str = "mse") -> int:
    """Bytes autograd keeps for the position term's backward (the memory it adds per batch)."""
    fs = fs.detach().requires_grad_(True)
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        if t.data_ptr() != fs.data_ptr():  # the input map itself is the student's, not extra
            seen[t.data_ptr()] = t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        size = pooled_size(fs, ft, max_side)
        attention_distance(position_similarity(fs, size), position_similarity(ft, size), 1.0, kind)
    return sum(seen.values())


def resolve_stages(refs: tuple[StageRef, ...] | None, names: tuple[str, ...], key: str) -> tuple[int, int, int]:
    """(low, mid, high) stage indices from options (indices or names); default first/middle/last."""
    n = len(names)
    if refs is None:
        return 0, n // 2, n - 1
    out = []
    for r in refs:
        if isinstance(r, str):
            if r not in names:
                raise PipelineError(f"distill.options.{key}: no stage '{r}' (stages: {', '.join(names)})")
            out.append(names.index(r))
        elif -n <= r < n:
            out.append(r % n)
        else:
            raise PipelineError(f"distill.options.{key}: {r} is out of range for {n} stages ({', '.join(names)})")
    return tuple(out)  # type: ignore[return-value]


def channel_adapter(c_in: int, c_out: int) -> nn.Sequential:
    """Training-only 1×1 conv-BN from the student's high-stage channels to the teacher's."""
    return nn.Sequential(nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out))


class HMATLoss(DistillLoss):
    """L = λ_p·d(P_s, P_t) [low] + β·Σ L_AT [mid, high] + λ_c·d(G_s, G_t) [high]
    (Gou et al., ACM TOMM 2023; our reading, see the module docstring). Each term can be
    switched off (``position``/``activation``/``channel``) for the ablations.
    Defaults: w_ce=1, w_kd=0, w_feat=1; β=1000, λ_p=1000, λ_c=300, τ=1, MSE."""

    name = "hmat"

    def __init__(self, options, student, teacher):
        super().__init__(options, student, teacher)
        self.s_idx = resolve_stages(options.student_stages, student.stage_names, "student_stages")
        self.t_idx = resolve_stages(options.teacher_stages, teacher.stage_names, "teacher_stages")
        c_s = student.stage_shapes[self.s_idx[2]][0]
        c_t = teacher.stage_shapes[self.t_idx[2]][0]
        self.adapter = channel_adapter(c_s, c_t) if options.channel and c_s != c_t else nn.Identity()
        self.scale = positions_scale(options, student)

    def terms(self, student, teacher) -> dict[str, torch.Tensor]:
        """Each switched-on term before its weight: position, activation (Σ over mid, high), channel."""
        o = self.options
        fs, ft = student.stages, teacher.stages
        (s_low, s_mid, s_high), (t_low, t_mid, t_high) = self.s_idx, self.t_idx
        out: dict[str, torch.Tensor] = {}
        if o.position:
            a, b = fs[s_low], ft[t_low]
            size = pooled_size(a, b, o.max_side)
            out["position"] = attention_distance(position_similarity(a, size), position_similarity(b, size), o.temperature, o.position_loss)
        if o.activation:
            pairs = dict.fromkeys([(s_mid, t_mid), (s_high, t_high)])  # one pair when mid is high
            out["activation"] = self.scale * sum(at_distance(fs[i], ft[j]) for i, j in pairs)
        if o.channel:
            a, b = match_spatial(self.adapter(fs[s_high]), ft[t_high])
            out["channel"] = attention_distance(channel_similarity(a), channel_similarity(b), o.temperature, o.channel_loss)
        return out

    def forward(self, student, teacher, targets):
        weight = {"position": self.options.lambda_p, "activation": self.options.beta, "channel": self.options.lambda_c}
        return sum(weight[k] * v for k, v in self.terms(student, teacher).items())
