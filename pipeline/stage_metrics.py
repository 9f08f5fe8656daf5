"""Each stage's metrics as a pydantic model: what its manifest's ``metrics`` holds, and what later stages read of it.

A leaf (pydantic only): the run loop, the benchmark, the report and the sweep read another stage's
metrics through these models instead of by string key, and a type checker follows them. The JSON
does not change: a stage's model dumps to the same dict as before the models (fields in the order
the stage writes them, only the keys it set), so runs written earlier still read.

Two kinds. A closed model (``extra="forbid"``) names every key its stage writes: a stage that
returns another key fails the run loop, so a new metric is added here first. An open model
(``OpenMetrics``) is a stage whose metrics carry records that grow with its options (a training
stage's history and loss settings, the export stage's per-format records, the target checker's
counts): it names every key someone else reads and keeps the rest as they are. Every field has a
default, so a manifest from an older version (a key it did not have yet) reads as "not recorded".
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, PrivateAttr, model_validator

Number = int | float  # an int stays an int in the manifest (a float field would write 1 as 1.0)


class StageMetrics(BaseModel):
    """A stage's metrics; closed: every key its stage writes is a field."""

    model_config = ConfigDict(extra="forbid")
    _order: tuple[str, ...] = PrivateAttr(default=())  # the keys in the order the stage gave them

    @model_validator(mode="wrap")
    @classmethod
    def _keep_order(cls, data: Any, handler) -> Any:
        model = handler(data)
        if isinstance(data, dict) and isinstance(model, StageMetrics):
            model._order = tuple(data)
        return model

    def manifest_dict(self) -> dict[str, Any]:
        """The manifest's ``metrics``: only the keys the stage set, in the order it gave them (the run loop prints the
        first four), nested records too (a fidelity row reads as the stage wrote it)."""
        return _in_stage_order(self)

    @classmethod
    def of(cls, metrics: dict[str, Any] | StageMetrics | None) -> Any:
        """``metrics`` (a manifest's dict, or None for a stage that is absent) as this model."""
        return metrics if isinstance(metrics, cls) else cls.model_validate(metrics or {})


def _in_stage_order(value: Any) -> Any:
    """``value`` as JSON-able data: a metrics model as the dict it was made from (set keys only, in that order)."""
    if isinstance(value, StageMetrics):
        dumped = value.model_dump(exclude_unset=True)
        keys = [k for k in value._order if k in dumped] + [k for k in dumped if k not in value._order]
        return {k: _in_stage_order(getattr(value, k)) for k in keys}
    if isinstance(value, BaseModel):
        return value.model_dump()
    if isinstance(value, dict):
        return {k: _in_stage_order(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_in_stage_order(v) for v in value]
    return value


class OpenMetrics(StageMetrics):
    """A stage's metrics whose further keys vary with its options: the named fields are what other code reads."""

    model_config = ConfigDict(extra="allow")


class DataMetrics(StageMetrics):
    dataset: str | None = None
    train: int | None = None
    val: int | None = None
    test: int | None = None
    calibration: int | None = None
    input_shape: list[int] | None = None
    calibration_sha256: str | None = None
    skipped_images: int | None = None  # an image folder: files that could not be read
    skipped_outside_root: int | None = None  # an image folder: links leading out of it, not followed


class TeacherMetrics(OpenMetrics):
    test_acc: float | None = None
    val_acc: float | None = None  # the sweep's reference top-1 for the teacher


class DistillMetrics(OpenMetrics):
    method: str | None = None
    test_acc: float | None = None
    val_acc_mean: float | None = None
    seeds: list[dict[str, Any]] = []


class QatMetrics(OpenMetrics):
    enabled: bool | None = None  # False: no fake-quant model to score
    fp32_acc: float | None = None
    fakequant_accuracy: float | None = None
    guard: dict[str, Any] | None = None


class StudentMetrics(StageMetrics):
    """``python -m pipeline export MODEL``: the given model, scored as it came."""

    format: str | None = None
    test_acc: float | None = None
    arch: str | None = None
    params: int | None = None
    source_checkpoint: dict[str, Any] | None = None


class OpCheck(OpenMetrics):
    """The full-integer op check of an int8 artifact."""

    passed: bool | None = None
    problems: list[str] | None = None
    op_counts: dict[str, int] | None = None
    io_dtype: str | None = None


class Fidelity(OpenMetrics):
    """An artifact against the PyTorch model it was exported from, on the test images."""

    passed: bool | None = None
    message: str | None = None
    precision: str | None = None
    accuracy: float | None = None
    reference_accuracy: float | None = None
    agreement: float | None = None
    max_abs_logit_diff: float | None = None
    images: int | None = None
    op_check: OpCheck | None = None


class ExportMetrics(OpenMetrics):
    """The export stage's (or, for ``python -m pipeline benchmark``, the given artifacts')."""

    source: str | None = None  # which weights were exported: qat | distill | student | given
    source_reason: str | None = None
    fidelity: dict[str, Fidelity] | None = None
    teacher_onnx: Fidelity | None = None
    layer_error: dict[str, Any] | None = None  # by format key (older runs: one TFLite summary, unkeyed)
    # the int8 remedies' records, each with its ``decision`` where it was automatic (pipeline/export/stage.py REMEDIES)
    keep_float: dict[str, Any] | None = None  # by format key: its record
    openvino_accuracy_control: dict[str, Any] | None = None
    tflite_converter: dict[str, Any] | None = None
    tflite_recalibration: dict[str, Any] | None = None


class ArtifactsMetrics(StageMetrics):
    """``python -m pipeline benchmark ARTIFACT…``: the given files in the export stage's place."""

    artifacts: int | None = None
    formats: list[str] = []
    files: dict[str, str] = {}
    source: str | None = None
    source_reason: str | None = None


class CompileResult(BaseModel):
    """What a vendor compiler made of the deploy artifact, under vendor-neutral names: a target's compiler returns it
    (``pipeline.target.rules.VendorCompiler``) and the target stage's metrics carry it as ``compiler_result``.

    ``status`` is "compiled", "failed: …" or why it did not run ("not compiled: … not found"); a compiler that ran
    has a ``log`` (its printout, kept in the stage folder) and whatever its log says; a field the log does not give
    stays None. ``ops_mapped`` ran on the accelerator, ``ops_cpu`` on the host CPU.
    """

    model_config = ConfigDict(frozen=True, extra="ignore")  # a manifest's extra keys (older versions) are dropped

    status: str
    compiled: bool
    model: str | None = None  # the compiled file's name in the target stage folder
    log: str | None = None  # the compiler's printout in the target stage folder; None = it did not run
    input_model: str | None = None
    input_bytes: int | None = None
    output_model: str | None = None
    output_bytes: int | None = None
    on_chip_bytes_used: int | None = None
    on_chip_bytes_remaining: int | None = None
    off_chip_bytes: int | None = None
    subgraphs: int | None = None
    ops_total: int | None = None
    ops_mapped: int | None = None
    ops_cpu: int | None = None
    operation_log: str | None = None
    version: str | None = None
    compile_ms: float | None = None
    operators: list[dict[str, Any]] = []  # per op type: op, count, status, mapped
    errors: list[str] = []

    @property
    def ran(self) -> bool:
        return self.log is not None

    def as_dict(self) -> dict[str, Any]:
        """The JSON the target stage's metrics carry as ``compiler_result`` (for a compiler that ran)."""
        return self.model_dump()

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CompileResult:
        return cls.model_validate(data)


class TargetMetrics(OpenMetrics):
    """The target check, the vendor compiler and the runtime device; the checker's headline counts are extra keys
    (the report lists them as ``details``)."""

    name: str | None = None  # set by the benchmark stage when it copies these into its results
    verdict: str | None = None
    passed: bool | None = None
    summary: str | None = None
    artifact: str | None = None
    file: str | None = None
    compiler: str | None = None  # the compiler's status line
    compiled: bool | None = None
    compiler_result: CompileResult | None = None
    compiler_agrees: bool | None = None
    device: str | None = None
    device_available: bool | None = None
    device_note: str | None = None
    check: dict[str, Any] | None = None  # the checker's whole record


class BenchmarkMetrics(StageMetrics):
    deploy_accuracy: float | None = None
    teacher_accuracy: float | None = None
    deploy_p50_ms: float | None = None
    gates_failed: int | None = None
    deploy_val_top1: float | None = None  # what a student search ranks by
    val_images: int | None = None
    accuracy: dict[str, float | None] = {}
    failed_rows: int | None = None
    gates: list[dict[str, Any]] = []
    op_time_ms: dict[str, float | None] = {}  # int8 artifact -> its ops' summed time (None: not profiled, op_time.json says why)


class ReportMetrics(StageMetrics):
    verdict: str | None = None  # PASS | FAIL | NOT MEASURED: FAIL exits 3 once the report is written
    gates_failed: int | None = None
    rows: int | None = None
    devices: int | None = None
    files: list[str] = []
    failures: list[str] = []


METRICS: dict[str, type[StageMetrics]] = {
    "data": DataMetrics, "teacher": TeacherMetrics, "distill": DistillMetrics, "qat": QatMetrics,
    "student": StudentMetrics, "export": ExportMetrics, "artifacts": ArtifactsMetrics, "target": TargetMetrics,
    "benchmark": BenchmarkMetrics, "report": ReportMetrics,
}


def manifest_metrics(stage: str, result: StageMetrics | dict[str, Any] | None) -> dict[str, Any]:
    """What a stage returned, checked against its model, as its manifest stores it.

    A dict is validated (a closed model's unknown key or a wrong type raises here, at the stage that wrote it) and
    kept as it is, in the stage's own key order."""
    model = METRICS.get(stage)
    if isinstance(result, StageMetrics):
        if model is not None and not isinstance(result, model):
            raise TypeError(f"stage {stage} returned {type(result).__name__}, not {model.__name__}")
        return result.manifest_dict()
    metrics = dict(result or {})
    if model is not None:
        model.model_validate(metrics)
    return metrics
