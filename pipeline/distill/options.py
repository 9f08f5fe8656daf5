"""Each distillation method's ``distill.options`` (pydantic, no torch): what config validation checks.

Kept apart from the losses so that validating a config, or ``python -m pipeline show``, needs no
torch; each loss reads its options from the validated model. Unknown keys are rejected.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


# unknown keys rejected, nan/inf refused (a nan weight trains to nan without a word)
STRICT = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class NoOptions(BaseModel):
    model_config = STRICT


class PositionsOptions(BaseModel):
    """How a loss over attention maps averages over positions (module docstring); AT, AFD, RTK and
    HMAT's options extend this."""

    model_config = STRICT
    positions: Literal["reference", "mean"] = "reference"
    reference_size: int = Field(32, ge=1)  # the input side the published weights were tuned at


class ATOptions(PositionsOptions):
    # "all": every paired stage, as RepDistiller's feat[1:-1] (the residual groups, neither the
    # stem nor the pooled vector); "middle": all but the deepest pair
    pairs: Literal["all", "middle"] = "all"


class AFDOptions(PositionsOptions):
    dim: int = Field(128, ge=1)  # query/key width d


class AMAOptions(BaseModel):
    model_config = STRICT
    after: int = -2  # k: index into the teacher's stages; the module reads this stage's output
    replaces: int = Field(1, ge=1)  # r: teacher stages k+1 … k+r the module replaces
    student_stage: int | None = None  # m: stage A is shaped like; None = aligned from the end with t_{k+r}
    width: int | None = Field(None, ge=1)  # A's channels; None = the student stage's
    blocks: int = Field(2, ge=1)  # conv3×3-BN-ReLU blocks in A
    head: Literal["teacher", "new"] = "teacher"  # classify A's output with the teacher's remaining layers, or a new pool+linear
    tune_tail: bool = True  # fine-tune (a copy of) the teacher's remaining layers with A
    epochs: int = Field(3, ge=0)  # adaptation epochs
    lr: float = Field(0.05, gt=0)
    seed: int = 0  # the adaptation's own init and batch order (not the student's)


class FitNetOptions(BaseModel):
    model_config = STRICT
    student_stage: int = -2  # index into the student's stages (the hint layer)
    teacher_stage: int = -2  # index into the teacher's stages (the guided layer)


StageRef = int | str  # an index into the tapped stages (negative allowed) or a stage name


class HMATOptions(PositionsOptions):
    position: bool = True  # λ_p term on the low stage
    activation: bool = True  # β term on the mid and high stages
    channel: bool = True  # λ_c term on the high stage
    # a tenth of the published 1000 / 1000 / 300, which drowned the labels at 16×16 (hmat row of
    # benchmarks/distill_methods.py: below the student alone); the published values are options
    lambda_p: float = Field(100.0, ge=0)
    beta: float = Field(100.0, ge=0)
    lambda_c: float = Field(30.0, ge=0)
    position_loss: Literal["mse", "kl"] = "mse"
    channel_loss: Literal["mse", "kl"] = "mse"
    temperature: float = Field(1.0, gt=0)  # τ of both affinity softmaxes
    max_side: int = Field(16, ge=1)  # the low map is pooled to at most max_side × max_side
    # (low, mid, high); None = first, middle (n // 2), last of the tapped stages
    student_stages: tuple[StageRef, StageRef, StageRef] | None = None
    teacher_stages: tuple[StageRef, StageRef, StageRef] | None = None

    @model_validator(mode="after")
    def _some_term(self) -> HMATOptions:
        if not (self.position or self.activation or self.channel):
            raise ValueError("hmat: switch on at least one of position, activation, channel")
        return self


class ICCOptions(BaseModel):
    model_config = STRICT
    lambda_s: float = Field(1.0, ge=0)  # weight of the correlation-matching term
    temperature: float = Field(4.0, gt=0)  # T of P = softmax(z/T)


class MHKDOptions(BaseModel):
    model_config = STRICT
    beta: float = Field(0.5, ge=0)  # weight of each head's KD + CE
    temperature: float = Field(4.0, gt=0)  # T of the heads' KD
    student_stages: list[int] | None = None  # indices of student stages with a head; None = all but the last
    teacher_stages: list[int] | None = None  # the teacher stage paired with each; None = aligned from the end
    width: int | None = Field(None, ge=1)  # conv channels of every head; None = its stage's channels
    hidden: int = Field(128, ge=1)  # FC hidden units of every head
    epochs: int = Field(3, ge=0)  # teacher-head training epochs
    lr: float = Field(0.05, gt=0)
    seed: int = 0  # the teacher phase's own init and batch order (not the student's)

    @model_validator(mode="after")
    def _pairs(self) -> MHKDOptions:
        for key in ("student_stages", "teacher_stages"):
            v = getattr(self, key)
            if v is not None and (not v or len(set(v)) != len(v)):
                raise ValueError(f"{key}: needs at least one stage and no repeats, got {v}")
        s, t = self.student_stages, self.teacher_stages
        if s is not None and t is not None and len(s) != len(t):
            raise ValueError(f"student_stages {s} and teacher_stages {t} pair one to one: give lists of equal length")
        return self


class RTKOptions(PositionsOptions):
    form: Literal["learned", "cosine"] = "learned"
    k: int | None = Field(2, ge=1)  # keep at most k keys per query; None = no cap
    tau: float | None = Field(None, gt=0, le=1)  # and only keys with α ≥ τ; None = no threshold
    dim: int = Field(128, ge=1)  # learned form: query/key width d
    cosine_temperature: float = Field(0.1, gt=0)  # cosine form: α = softmax_n(cos / t)
