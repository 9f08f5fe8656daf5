"""The sections that make the model: data, training settings, teacher, student, distillation and QAT."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from pipeline.config.base import MAX_IMAGE_SIZE, NonNegative, Section, unknown_name as _unknown

class DataConfig(Section):
    """Which dataset, how it is split, and the preprocessing every artifact carries."""

    dataset: str = "digits"
    root: str | None = None  # folder of the files; None = the loader's default location
    image_size: int | None = Field(None, gt=0, le=MAX_IMAGE_SIZE)  # square resize; None keeps the native size
    channels: int | None = None  # 1 or 3; None keeps the native channel count
    mean: list[float] | None = Field(None, min_length=1)  # None = the dataset's own statistics
    std: list[Annotated[float, Field(gt=0)]] | None = Field(None, min_length=1)  # divides: 0 would make inf
    val_fraction: float = Field(0.1, ge=0.0, lt=0.5)
    test_fraction: float = Field(0.2, gt=0.0, lt=0.9)
    max_train: int | None = Field(None, gt=0)  # cap on training images (quick runs)
    max_test: int | None = Field(None, gt=0)
    calibration_size: int = Field(256, gt=0)
    augment: list[Literal["crop", "flip"]] = ["crop"]
    batch_size: int = Field(64, gt=0)  # the global batch: under torchrun each of N processes takes batch_size / N
    workers: int = Field(0, ge=0)  # DataLoader processes decoding image files (image_folder); 0 = in the training process
    seed: int = 0
    not_in_cache_key = frozenset({"workers"})  # augmentation is seeded per image, so results do not depend on it

    @model_validator(mode="after")
    def _some_training_images(self) -> "DataConfig":
        if self.val_fraction + self.test_fraction >= 1:
            raise ValueError(f"val_fraction + test_fraction = {self.val_fraction + self.test_fraction:g} "
                             "leaves no training images; keep their sum below 1")
        return self

    @field_validator("dataset")
    @classmethod
    def _known_dataset(cls, v: str) -> str:
        from pipeline.data.sources import DATASETS

        if v not in DATASETS:
            raise ValueError(_unknown(v, DATASETS))
        return v

    @field_validator("channels")
    @classmethod
    def _channels(cls, v: int | None) -> int | None:
        if v not in (None, 1, 3):
            raise ValueError(f"must be 1 or 3, got {v}")
        return v


class TrainConfig(Section):
    """Where and in what precision every training stage (teacher, distill, QAT) runs.

    The same recipe runs in one process or under ``torchrun --nproc_per_node=N`` (data-parallel,
    see pipeline/train/distributed.py). The device and the process-group timeout decide where,
    not what: they stay out of cache keys, as does the world size.
    """

    device: str = "auto"  # auto (CUDA when available) | cpu | cuda | cuda:N
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"  # autocast for the training steps; fp16 adds a gradient scaler
    sync_bn: bool = False  # under torchrun: BatchNorm statistics over the global batch (CUDA only)
    timeout_s: float = Field(1800.0, gt=0)  # a rank waiting longer than this on the others fails the run
    not_in_cache_key = frozenset({"device", "timeout_s"})

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", v):
            raise ValueError(f"'{v}' is not a device (auto, cpu, cuda or cuda:N)")
        return v


class ScheduleConfig(Section):
    """Optimiser and schedule, shared by the teacher, distill and QAT stages."""

    epochs: int = Field(30, ge=0)
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float = Field(0.05, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)  # 1 or more never forgets a gradient: the weights run away
    weight_decay: float = Field(5e-4, ge=0)
    schedule: Literal["cosine", "step", "constant"] = "cosine"
    milestones: list[NonNegative] = []  # for schedule: step, epochs at which lr ×= gamma
    gamma: float = Field(0.1, gt=0, le=1)
    # re-estimate BN running statistics on training images after training: auto = when a BN layer's
    # momentum is below PyTorch's 0.1 (torchvision's MobileNetV3 uses 0.01); see train/bn_recalibration.py
    recalibrate_bn: Literal["auto", "on", "off"] = "auto"


class ModelSpec(Section):
    """An architecture from the zoo (or `torchvision:<name>`, `timm:<name>`) and its arguments."""

    arch: str
    arch_args: dict[str, Any] = {}
    stages: list[str] | None = None  # module paths tapped as stage features; None = the zoo's
    # weights to start from: a pipeline checkpoint, a state_dict (torch.save(model.state_dict())),
    # a training script's dict holding one, or .safetensors; all but the first need `arch` set
    checkpoint: str | None = None
    head: Literal["keep", "reset"] = "keep"  # reset: re-initialise the classifier (another class count)

    @field_validator("arch")
    @classmethod
    def _known_arch(cls, v: str) -> str:
        from pipeline.models import arch_problem

        if problem := arch_problem(v):
            raise ValueError(problem)
        return v


class ICCRegularizer(Section):
    """The expressive teacher's regulariser (pipeline/distill/icc.py): weight, T, and the fraction of the
    teacher's epochs over which its weight ramps linearly from 0 (the teacher first learns the classes,
    then their relations; a fraction, so one default fits a 15- and a 240-epoch schedule)."""

    lambda_t: float = Field(1.0, ge=0)
    temperature: float = Field(4.0, gt=0)
    warmup_fraction: float = Field(0.0, ge=0, lt=1)


class FrozenTeacherConfig(Section):
    """How the frozen teacher's forward runs while it supervises (distill, QAT): cheaper, same answers.

    Measured in benchmarks/train_throughput.py (issue 17): conv-BN folding, channels-last and bf16
    autocast make the teacher's forward several times cheaper with top-1 unchanged within noise.
    """

    teacher_precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"  # auto: bf16 where the device runs it natively, else fp32
    teacher_channels_last: bool = True
    teacher_fold_bn: bool = True  # fold each conv's BatchNorm into its weights (the teacher is frozen, in eval mode)


class TeacherConfig(ModelSpec, ScheduleConfig):
    """Trained from scratch, or loaded from ``checkpoint``: used as is, fine-tuned when ``epochs`` is set > 0."""

    arch: str = "resnet20"
    regularizer: Literal["none", "icc"] = "none"
    icc: ICCRegularizer = ICCRegularizer()

    @model_validator(mode="before")
    @classmethod
    def _checkpoint_is_used_as_is(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("checkpoint") and "epochs" not in data:
            return {**data, "epochs": 0}
        return data


class StudentConfig(ModelSpec):
    arch: str = "resnet8"


class DistillConfig(ScheduleConfig, FrozenTeacherConfig):
    method: str = "kd"
    options: dict[str, Any] = {}  # method-specific, validated by the method's own Options
    w_ce: float | None = Field(None, ge=0)  # None = the method's default (filled in by validate_config)
    w_kd: float | None = Field(None, ge=0)
    w_feat: float | None = Field(None, ge=0)
    temperature: float = Field(4.0, gt=0)
    seeds: list[int] = [0]
    # Logit-only methods (kd, icc) reuse the frozen teacher's logits: each augmented view of an image,
    # and the teacher's logits for it, serve up to ``teacher_reuse`` epochs. The schedule has
    # ceil(epochs / teacher_reuse) views; epoch e replays view e mod views (the same shards, order and
    # augmentation), and the teacher runs on the first pass over each view only. 1: a new view every
    # epoch and the teacher every step (feature methods always). Measured in train_throughput.py.
    teacher_reuse: int = Field(4, ge=1)

    @field_validator("method")
    @classmethod
    def _known_method(cls, v: str) -> str:
        from pipeline.distill.methods import METHODS  # names only: no torch

        if v not in METHODS:
            raise ValueError(_unknown(v, METHODS))
        return v

    @field_validator("seeds")
    @classmethod
    def _some_seed(cls, v: list[int]) -> list[int]:
        if not v:
            raise ValueError("needs at least one seed")
        if dup := sorted({s for s in v if v.count(s) > 1}):
            raise ValueError(f"seed {dup[0]} is given twice: each seed trains one student, a repeat trains the same one "
                             "again; list each seed once")
        return v


class QATConfig(ScheduleConfig, FrozenTeacherConfig):
    enabled: bool = True
    epochs: int = Field(3, ge=0)
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float = Field(0.005, gt=0)
    kd: bool = True  # keep the fp32 teacher supervising during QAT
    w_kd: float = Field(0.9, ge=0)
    w_ce: float = Field(0.1, ge=0)
    temperature: float = Field(4.0, gt=0)
    # None (default): BN keeps batch statistics to the end, as NNCF and TF-MOT train; the fused forward
    # still quantises the conv weight folded with the running statistics, i.e. what is deployed.
    # An epoch N: BN statistics freeze from epoch N on, and the learning rate is multiplied by
    # ``lr_after_bn_freeze``: frozen BN raises the loss curvature ~30× (pipeline/qat/stage.py), and at
    # the unscaled rate SGD diverges.
    freeze_bn_epoch: int | None = Field(None, ge=0)
    lr_after_bn_freeze: float = Field(0.1, gt=0, le=1)
    # from this epoch on, quantisation ranges stop moving (≥ 1: the ranges must have seen data first)
    freeze_observer_epoch: int | None = Field(2, ge=1)
    # The guard: QAT weights are exported only if their int8 (as the export path calibrates them) is not
    # worse on the validation split than PTQ int8 of the distilled weights by more than this many points.
    guard_tolerance: float = Field(0.5, ge=0)
