"""Typed run configuration: one section per stage, unknown keys rejected.

A recipe is YAML validated by these models. Errors come out as one line that names the
file, the key path and what is allowed, e.g.
``edge_tpu.yaml: distill.method: unknown 'rtkk' (known: at, fitnet, kd, none)``.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pipeline.benchmark import MAX_MIN_SECONDS, MAX_RUNS
from pipeline.errors import PipelineError

TARGETS_DIR = Path(__file__).resolve().parent.parent / "targets"
MAX_IMAGE_SIZE = 1024  # a larger square is a typo (a 10⁶ side asked numpy for terabytes), not a model input
NonNegative = Annotated[int, Field(ge=0)]


class Section(BaseModel):
    # nan/inf refused for every float key: a nan learning rate or momentum trains to nan without a word
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    # keys that decide where or how fast a stage runs, not what it computes: kept out of cache keys
    not_in_cache_key: ClassVar[frozenset[str]] = frozenset()

    def cache_fields(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude=set(self.not_in_cache_key))


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


class ExportConfig(Section):
    formats: list[str] = ["onnx", "tflite_fp32", "tflite_int8", "openvino_fp32", "openvino_int8"]  # keys of export.formats.FORMATS
    opset: int = Field(17, ge=13, le=20)
    # which student weights are exported: auto = the QAT stage's guard decides (QAT unless its int8 is
    # worse than PTQ of the distilled weights on the validation split); qat / distill force one
    source: Literal["auto", "qat", "distill"] = "auto"
    # fp32 artifacts must reproduce the PyTorch logits: max |Δlogit| ≤ fp32_rtol × max(1, max |logit|)
    fp32_rtol: float = Field(1e-3, gt=0, lt=1)
    teacher_onnx: bool = True  # also export the teacher to ONNX: the same-runtime latency baseline
    # int8 vs fp32 tensor by tensor on this many calibration images, layer_error.json beside each int8 model:
    # tflite_int8 vs tflite_fp32, openvino_int8 (as deployed) vs student.onnx; 0 = off
    layer_error_images: int = Field(32, ge=0, le=1024)
    # auto: when NNCF's plain int8 IR keeps < 99 % of fp32 top-1 on the validation split, redo it with
    # nncf.quantize_with_accuracy_control (layers reverted to float until it keeps 99 %); off: plain int8 only
    openvino_accuracy_control: Literal["auto", "off"] = "auto"
    # who makes tflite_int8: onnx2tf (from student.onnx) or litert-torch (from the PyTorch weights, in its own venv named
    # by PIPELINE_LITERT_PYTHON; int8 I/O only); auto: both where litert-torch can run, the one with the higher int8
    # top-1 on the validation split kept (a tie keeps onnx2tf), onnx2tf alone where it cannot (recorded why)
    tflite_converter: Literal["auto", "onnx2tf", "litert_torch"] = "auto"
    # auto: when onnx2tf's tflite_int8 keeps < 99 % of tflite_fp32's top-1 on the validation split, convert again calibrated
    # on 4× the images and keep it if its int8 scores higher there (pipeline/export/tflite_recalibration.py); off: never
    tflite_recalibration: Literal["auto", "off"] = "auto"

    @field_validator("formats")
    @classmethod
    def _known_formats(cls, v: list[str]) -> list[str]:
        from pipeline.formats import FORMATS, format_keys  # the table of formats: stdlib only

        for key in v:
            if key in FORMATS and not FORMATS[key].exported:  # the compiled model: a later stage makes it
                raise ValueError(f"'{key}' ({FORMATS[key].label}) is made after export, from {FORMATS[key].source}: "
                                 f"list {FORMATS[key].source}")
            if key not in FORMATS:
                raise ValueError(_unknown(key, format_keys(exported=True)))
        return v


class TargetConfig(Section):
    name: str = "edge_tpu"  # a rules module in pipeline/target/
    compiler: Literal["auto", "off"] = "auto"  # call the vendor compiler when it is on PATH
    check_before_training: bool = True

    @field_validator("name")
    @classmethod
    def _known_target(cls, v: str) -> str:
        from pipeline.target import TARGETS

        if v not in TARGETS:
            raise ValueError(_unknown(v, TARGETS))
        return v


class Gates(Section):
    """Limits on the deploy artifact; each name says what it compares (``pipeline/benchmark/gates.py`` evaluates them)."""

    max_drop_vs_teacher: float | None = Field(None, description="deploy artifact vs the fp32 teacher (top-1 pts)")
    max_drop_vs_distilled_fp32: float | None = Field(
        None, description="deploy artifact vs the distilled fp32 student: QAT + conversion (top-1 pts)")
    max_conversion_drop: float | None = Field(
        None, description="deploy artifact vs the fp32 model of the same weights: conversion only (top-1 pts)")
    max_p90_latency_ms: float | None = Field(None, description="deploy artifact p90 latency, on the target device when measured (ms)")
    min_speedup_vs_teacher: float | None = Field(None, description="teacher p50 / deploy artifact p50, same machine and threads")

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data: Any) -> Any:
        for old in set(data) & set(RENAMED_GATES) if isinstance(data, dict) else ():
            raise ValueError(f"{old} was renamed: {RENAMED_GATES[old][1]}")
        return data


# gate names no longer read -> (the gate that computes the same thing, what to write instead); a recipe that
# uses one gets a one-line error, not a silent alias; an old run's results are read under the new name
RENAMED_GATES = {
    "max_int8_drop_vs_fp32": ("max_drop_vs_distilled_fp32",
                              "it compared the deploy artifact with the distilled fp32 student, so QAT's loss was "
                              "charged to int8; use max_drop_vs_distilled_fp32 for that same check, or max_conversion_drop "
                              "for int8 vs the fp32 model of the same weights"),
}


class BenchmarkConfig(Section):
    """How the benchmark stage times and scores; the timing method is ``pipeline/benchmark/latency.py``'s docstring."""

    threads: list[NonNegative] = Field([1, 0], min_length=1)  # 0 = all cores
    warmup: int = Field(10, ge=0, le=MAX_RUNS)
    min_runs: int = Field(25, gt=0, le=MAX_RUNS)  # timed calls before the stopping rule is asked
    # and at least this long (1.0 with precision_pct null: the old fixed rule)
    min_seconds: float = Field(0.0, ge=0, le=MAX_MIN_SECONDS, allow_inf_nan=False)
    # stop once p50 and p90 are known to ±this % (95 % confidence); null: stop at min_runs and min_seconds
    precision_pct: float | None = Field(3.0, gt=0, le=100, allow_inf_nan=False)
    max_seconds: float = Field(0.5, gt=0, le=MAX_MIN_SECONDS, allow_inf_nan=False)  # the cap per timed phase, precision reached or not
    # which artifacts are timed: all | deploy (the target's deploy artifact, and the teacher when a latency gate needs it);
    # every artifact is still scored for accuracy
    timed: Literal["all", "deploy"] = "all"
    max_images: int | None = Field(None, gt=0)  # accuracy on at most this many test images
    gates: Gates = Gates()
    # files to measure instead of a run's own exports (.onnx, .tflite, OpenVINO .xml): python -m pipeline benchmark
    artifacts: list[str] = []


class ReportConfig(Section):
    formats: list[Literal["json", "md", "html"]] = ["json", "md", "html"]


class Config(Section):
    name: str = "run"
    runs_dir: str = "runs"
    data: DataConfig = DataConfig()
    train: TrainConfig = TrainConfig()
    teacher: TeacherConfig = TeacherConfig()
    student: StudentConfig = StudentConfig()
    distill: DistillConfig = DistillConfig()
    qat: QATConfig = QATConfig()
    export: ExportConfig = ExportConfig()
    target: TargetConfig = TargetConfig()
    benchmark: BenchmarkConfig = BenchmarkConfig()
    report: ReportConfig = ReportConfig()

    @field_validator("name")
    @classmethod
    def _plain_folder_name(cls, v: str) -> str:
        """The run is written to runs_dir/<name>: '' would write into runs_dir itself, '../x' outside it."""
        if not v or v.startswith(".") or any(c in v for c in "/\\") or not v.isprintable():
            raise ValueError(f"{v!r} must be a plain folder name (no '/', not empty, not starting with '.'): "
                             "the run is written to runs_dir/<name>")
        return v

    @model_validator(mode="after")
    def _threads_this_machine_has(self) -> "Config":
        """A thread count above the cores this process may use (or the target board's, for a recipe measured there
        too) oversubscribes the CPU: the latency says nothing, and 10⁶ threads stall the runtime."""
        from pipeline.runtimes.base import all_cores  # numpy only
        from pipeline.target import TARGETS

        cores, board = all_cores(), TARGETS[self.target.name].threads
        limit = max(cores, board)
        if over := [t for t in self.benchmark.threads if t > limit]:
            where = f"the {cores} cores this process may use" + (f" and the {board} of target {self.target.name}" if board > cores else "")
            raise ValueError(f"benchmark.threads: {over[0]} is more than {where}; give at most {limit}, or 0 for all cores")
        return self

    @property
    def run_dir(self) -> Path:
        return Path(self.runs_dir) / self.name


def _unknown(value: str, known) -> str:
    names = sorted(known)
    close = difflib.get_close_matches(value, names, n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return f"unknown '{value}' (known: {', '.join(names)}){hint}"


def resolve_recipe(name: str | Path) -> Path:
    """A path as given, else a ready recipe of that name in targets/ (so `edge_tpu.yaml` works anywhere)."""
    path = Path(name)
    if path.is_file():
        return path
    for candidate in (TARGETS_DIR / path.name, TARGETS_DIR / f"{path.name}.yaml"):
        if candidate.is_file():
            return candidate
    recipes = sorted(p.name for p in TARGETS_DIR.glob("*.yaml"))
    raise PipelineError(f"{name}: no such file here or in targets/ (recipes: {', '.join(recipes)})")


def load_config(name: str | Path, overrides: dict[str, Any] | None = None) -> Config:
    """Read, merge overrides into, and validate a recipe; any problem becomes one PipelineError line."""
    path = resolve_recipe(name)
    raw = read_yaml(path)
    if not isinstance(raw, dict):
        raise PipelineError(f"{path.name}: expected a mapping of sections at the top level")
    raw.setdefault("name", path.stem)
    for dotted, value in (overrides or {}).items():
        _set_dotted(raw, dotted, value)
    return validate_config(raw, source=path.name)


def read_yaml(path: Path) -> Any:
    """A YAML file as plain data (safe loader, duplicate keys refused); any problem is one line naming the file."""
    try:
        return recipe_yaml(path.read_bytes().decode("utf-8")) or {}
    except UnicodeDecodeError as exc:
        raise PipelineError(f"{path.name}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}); "
                            "save it as UTF-8") from None
    except OSError as exc:
        raise PipelineError(f"{path}: cannot read it ({exc.strerror})") from None
    except RecursionError:
        raise PipelineError(f"{path.name}: nested too deeply to be a recipe; a recipe is sections of keys and short lists") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise PipelineError(f"{path.name}:{where} not valid YAML ({getattr(exc, 'problem', exc)})") from None


def recipe_yaml(text: str) -> Any:
    """YAML as a recipe (or a --set value) is read: safe tags only, no key twice, aliases within a budget."""
    return yaml.load(text, Loader=_UniqueKeyLoader)


def validate_config(raw: dict[str, Any], source: str = "<config>") -> Config:
    try:
        cfg = Config.model_validate(raw)
    except ValidationError as exc:
        raise PipelineError(f"{source}: {_one_line(exc, Config)}") from None
    from pipeline.distill.methods import METHODS  # options and default weights: no torch

    method = METHODS[cfg.distill.method]
    options_model = method.Options
    if cfg.distill.options and not options_model.model_fields:
        raise PipelineError(f"{source}: distill.options: method '{cfg.distill.method}' takes no options "
                            f"(got {', '.join(sorted(cfg.distill.options))}); remove them")
    try:
        options = options_model.model_validate(cfg.distill.options)
    except ValidationError as exc:
        raise PipelineError(f"{source}: distill.options.{_one_line(exc, options_model)}") from None
    # store every option and loss weight with its default filled in, so a changed default changes the cache key
    weights = {k: v if (v := getattr(cfg.distill, k)) is not None else method.defaults[k]
               for k in ("w_ce", "w_kd", "w_feat")}
    distill = cfg.distill.model_copy(update={"options": options.model_dump(mode="json"), **weights})
    for section in ("teacher", "student"):
        spec = getattr(cfg, section)
        if not (section == "teacher" and cfg.teacher.checkpoint):  # a checkpoint brings its own architecture
            _check_model_spec(spec, section, source)
    return cfg.model_copy(update={"distill": distill})


def _check_model_spec(spec: ModelSpec, section: str, source: str) -> None:
    """Build the model once when arch_args or stages are given, so a bad argument or a stage that is not a
    module stops here, naming the file and key, instead of after the teacher has trained."""
    if not (spec.arch_args or spec.stages):
        return
    from pipeline.models import build_model

    try:
        model = build_model(spec.arch, 10, 3, spec.arch_args)
    except PipelineError as exc:
        raise PipelineError(f"{source}: {section}.arch_args: {exc}") from None
    modules = [name for name, _ in model.named_modules() if name]
    for stage in spec.stages or []:
        if stage not in modules:
            close = difflib.get_close_matches(stage, modules, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else f" (top-level modules: {', '.join(n for n in modules if '.' not in n)})"
            raise PipelineError(f"{source}: {section}.stages: {spec.arch} has no module '{stage}'{hint}")


def _one_line(exc: ValidationError, root: type[BaseModel]) -> str:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"])
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        parent, key = loc.rpartition(".")[::2]
        model = _model_at(root, parent)
        allowed = sorted(model.model_fields) if model else []
        close = difflib.get_close_matches(key, allowed, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        return f"{loc}: unknown key (allowed: {', '.join(allowed)}){hint}"
    if err["type"] == "finite_number":
        return f"{loc}: {err['input']!r} is not a finite number; give one (nan and inf are refused)"
    if err["type"] in ("literal_error", "enum"):
        return f"{loc}: {err['input']!r} is not allowed ({msg.removeprefix('Input should be ')})"
    return f"{loc}: {msg}" if loc else msg


def _model_at(root: type[BaseModel], dotted: str) -> type[BaseModel] | None:
    model = root
    for part in filter(None, dotted.split(".")):
        field = model.model_fields.get(part)
        if field is None or not (isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)):
            return None
        model = field.annotation
    return model


def _set_dotted(raw: dict, dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = raw
    for i, p in enumerate(parents):
        if node.get(p) is None:  # absent, or an empty section (`distill:` with nothing under it)
            node[p] = {}
        node = node[p]
        if not isinstance(node, dict):
            raise PipelineError(f"--set {dotted}: {'.'.join(parents[: i + 1])} is a value ({node!r}), not a section")
    node[leaf] = value


MAX_YAML_VALUES = 100_000  # values in a recipe once its aliases are expanded; a recipe has a few hundred


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.safe_load, except that a key given twice in one mapping is an error: PyYAML keeps the last one,
    so a second `distill:` section would silently replace the first. And aliases may not expand past
    ``MAX_YAML_VALUES``: PyYAML shares an aliased node, but validating or dumping the recipe expands it, so
    nine nested lists of ten aliases ("billion laughs") would hang the tool."""

    def compose_document(self):
        node = super().compose_document()
        _expanded_size(node, {}, set())
        return node

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, Any] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, (str, int, float, bool)) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key '{key}', first at line {seen[key].line + 1}: merge the two", key_node.start_mark)
            seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep)


def _expanded_size(node, sizes: dict[int, int], open_: set[int]) -> int:
    """How many values ``node`` stands for with every alias written out; past the budget (or an alias inside
    itself), a YAML error naming the node's line."""
    key = id(node)
    if key in sizes:
        return sizes[key]
    if key in open_:
        raise yaml.composer.ComposerError(None, None, "an alias refers to a node that contains it; write the values out",
                                          node.start_mark)
    open_.add(key)
    children = node.value if isinstance(node, yaml.SequenceNode) else (
        [n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode) else [])
    total = 1
    for child in children:
        total += _expanded_size(child, sizes, open_)
        if total > MAX_YAML_VALUES:
            raise yaml.composer.ComposerError(
                None, None, f"its aliases expand to more than {MAX_YAML_VALUES} values (an alias bomb?); "
                "write the values out or use fewer nested aliases", node.start_mark)
    open_.discard(key)
    sizes[key] = total
    return total
