"""Expressive teacher: inter-class correlation (Tan, Liu, Zhang, Knowledge-Based Systems 218,
2021, "Improving knowledge distillation via an expressive teacher", doi 10.1016/j.knosys.2021.106837).

The abstract: a teacher that captures little of the relations between classes has little to
teach, so (1) train the teacher with an inter-class correlation regulariser that makes its
outputs carry an explicit correlation among classes, and (2) make the student mimic the
teacher's inter-class correlation. Our reading (shared/METHODS.md; the paper gives no code):

    P = softmax(z / T)                            B×K   softened outputs of a batch
    P̂ = P / max(‖P_{:,k}‖₂, ε)                   B×K   each class column unit-length
    C = P̂ᵀ P̂                                     K×K   batch class-correlation matrix

    teacher stage:  L_T = CE(z_t, y) + λ_t·‖C_t − S‖²_F / K²
                    S   = softmax_row(Ŵ Ŵᵀ), Ŵ the l2-normalised rows of the final
                          linear layer's K×D weight, detached (the target, not a path)
    student stage:  L_S = w_ce·CE + w_kd·KD_T(z_s, z_t) + w_feat·λ_s·‖C_s − C_t‖²_F / K²

Where this is our reading rather than the paper's:
  * C is cosine similarity between class columns over the batch: entries in [0, 1] with a
    unit diagonal. ε keeps it finite when a column vanishes (a class whose probability
    underflows to 0 for every sample of the batch); for B = 1 every column is a single
    positive number, so C is the all-ones matrix, finite as well.
  * S is built from the teacher's own classifier weights (its class prototypes), detached, so
    the regulariser shapes the outputs, not the weights it reads. S's rows sum to one while C
    has a unit diagonal, so ‖C_t − S‖² has a floor Σ_k(1 − S_kk)²/K² from the diagonal; that
    part is constant (C_kk ≡ 1), adds no gradient, and only the off-diagonal structure is fit.
  * The student term uses the same T as the option ``temperature`` (default 4 = KD's T).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pipeline.distill.base import DistillLoss

EPS = 1e-8


def class_correlation(logits: torch.Tensor, temperature: float, eps: float = EPS) -> torch.Tensor:
    """C = P̂ᵀP̂ from B×K logits: K×K cosine similarity of the softened class columns of a batch."""
    p = F.softmax(logits / temperature, dim=1)
    p_hat = p / p.norm(dim=0, keepdim=True).clamp_min(eps)
    return p_hat.t() @ p_hat


def class_similarity_target(classifier_weight: torch.Tensor) -> torch.Tensor:
    """S = softmax_row(ŴŴᵀ): K×D classifier weight → K×K, detached (a target, never a path)."""
    w = F.normalize(classifier_weight.detach(), dim=1)
    return F.softmax(w @ w.t(), dim=1)


def correlation_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """‖A − B‖²_F / K² for K×K matrices."""
    return (a - b).pow(2).sum() / a.shape[0] ** 2


def icc_teacher_weight(lambda_t: float, warmup_epochs: int, epoch: int) -> float:
    """λ_t at a 0-based epoch: 0, λ/w, 2λ/w, … over the first w warm-up epochs, then λ_t."""
    return lambda_t if epoch >= warmup_epochs else lambda_t * epoch / warmup_epochs


def icc_teacher_term(logits: torch.Tensor, classifier_weight: torch.Tensor, temperature: float) -> torch.Tensor:
    """‖C_t − S‖²_F / K²: the expressive-teacher regulariser the teacher stage adds as λ_t·term."""
    return correlation_distance(class_correlation(logits, temperature), class_similarity_target(classifier_weight))


class ICCLoss(DistillLoss):
    """L_method = λ_s·‖C_s − C_t‖²_F / K² on top of the trainer's KD (Tan, Liu, Zhang 2021; our
    reading, see the module docstring). Works with any teacher; pair it with
    ``teacher.regularizer: icc`` for the paper's expressive teacher.
    Defaults: KD's w_ce=0.1, w_kd=0.9 (T=4), w_feat=1, λ_s=1, T=4."""

    name = "icc"
    needs_features = False

    def forward(self, student, teacher, targets):
        t = self.options.temperature
        c_t = class_correlation(teacher.logits.detach(), t)
        return self.options.lambda_s * correlation_distance(class_correlation(student.logits, t), c_t)
