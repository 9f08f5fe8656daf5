"""The report's measured rows and machines as pydantic models: where each number was taken and how well it is known.

Part of report.json's layout (``pipeline.report.model.Report`` holds them): the machines of
``environment``, the accuracy chain, the latency rows (also written by the board runner, stdlib only,
and checked against ``$defs/LatencyRow``) and the per-layer int8 error of the export stage.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from pipeline.target import TARGETS

# what a latency row's artifact may be: an export format, or a target's vendor compiler's output (a board runs it)
_ARTIFACT_KEYS = ", ".join(["onnx", "tflite_int8", "…", *sorted({r.compiler.output_format for r in TARGETS.values() if r.compiler})])

Scalar = str | int | float | bool | None
Fraction = float | None


class Closed(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Machine(Closed):
    name: str
    cpu: str | None
    cores: int | None = None
    usable_cores: int | None = None
    memory_mb: int | None = None
    arch: str | None = None
    os: str | None = None
    kernel: str | None = None
    container: bool | None = None
    runtimes: dict[str, str] = {}
    tools: dict[str, str] = {}
    coral_usb: list[str] | None = None
    results_file: str | None = Field(None, description="device results file this machine's rows came from")
    target: str | None = Field(None, description="the target whose bundle this device ran")


class Environment(Closed):
    host: Machine
    devices: list[Machine]


class ModelSummary(Closed):
    arch: str | None = None
    params: int | None
    macs: int | None
    file: str | None = None
    size_bytes: int | None = None
    error: str | None = None


class AccuracyRow(Closed):
    stage: str = Field(description="teacher_fp32, student_fp32, student_fakequant, student_qat_fp32, or an export format key")
    label: str
    model: Literal["teacher", "student"]
    artifact: str
    engine: str | None = None
    parent: str | None = Field(None, description="the stage this one was made from: where a drop happened")
    top1: float | None = Field(ge=0, le=1)
    top1_ci95: list[float] | None = Field(None, description="Wilson 95 % interval of top1 on these images", min_length=2, max_length=2)
    images: int = Field(ge=0)
    agreement: dict[str, Fraction] = Field(description="fraction of images whose top-1 equals that of the named stage")
    drop_vs_parent_pts: float | None = None
    drop_vs_teacher_pts: float | None = None
    error: str | None


class LatencyStats(Closed):
    mean: float = Field(ge=0)
    std: float = Field(ge=0)
    min: float = Field(ge=0)
    max: float = Field(ge=0)
    p50: float = Field(ge=0)
    p90: float = Field(ge=0)
    p99: float = Field(ge=0)


class LatencyPrecision(Closed):
    """How well a row's p50 and p90 are known: distribution-free 95 % intervals (``pipeline.benchmark.latency``)."""

    confidence: float = Field(gt=0, lt=1)
    target_pct: float | None = Field(description="the ± % asked for (benchmark.precision_pct); null: the fixed rule")
    p50_low: float | None = Field(description="ms; null: too few runs for this side of the interval")
    p50_high: float | None
    p50_half_width_pct: float | None = Field(description="larger side of the interval over p50, %")
    p90_low: float | None
    p90_high: float | None
    p90_half_width_pct: float | None
    half_width_pct: float | None = Field(description="the larger of the two half-widths, %")
    reached: bool | None = Field(description="half_width_pct ≤ target_pct; null under the fixed rule")
    stopped_by: Literal["precision", "max_seconds", "fixed"] | None = None


class Delegate(Closed):
    library: str | None = None
    device: str | None = None
    installed: list[str] = []
    explicit_library: bool | None = None
    loaded: bool | None = None


LATENCY_ROW_RAN = {  # JSON Schema twin of LatencyRow._ran: a row without an error carries its numbers
    "if": {"properties": {"error": {"type": "null"}}},
    "then": {"required": ["latency_ms", "runs"], "properties": {"latency_ms": {"$ref": "#/$defs/LatencyStats"}}},
}


class LatencyRow(Closed):
    where: Literal["host", "device"]
    device: str = Field(description="machine name: environment.host.name or a devices[].name")
    model: Literal["teacher", "student"]
    artifact: str = Field(description=f"'pytorch' or an export format key ({_ARTIFACT_KEYS})")
    format: str | None = None
    file: str | None = None
    engine: str | None = Field(None, description="runtime that executed it, with version")
    engine_info: dict[str, Scalar] = Field({}, description="the runtime's settings: OpenVINO precision hint, TFLite delegates, I/O dtypes")
    threads: int = Field(ge=0, description="as asked; 0 = all cores")
    threads_used: int | None = Field(None, ge=1)
    deploy: bool = False
    error: str | None
    init_ms: float | None = None
    first_ms: float | None = None
    warmup: int | None = None
    runs: int | None = None
    measured_s: float | None = None
    latency_ms: LatencyStats | None = Field(None, description="the engine call alone on a prepared input")
    e2e_latency_ms: LatencyStats | None = Field(None, description="one whole predict call")
    latency_precision: LatencyPrecision | None = Field(None, description="of latency_ms: intervals and why timing stopped")
    e2e_latency_precision: LatencyPrecision | None = None
    timed: Literal["invoke", "predict"] | None = None
    rss_before_mb: float | None = None
    rss_delta_mb: float | None = None
    memory_method: str | None = None
    size_bytes: int | None = None
    params: int | None = None
    macs: int | None = None
    accuracy: float | None = Field(None, ge=0, le=1, description="top-1 on this machine's images")
    accuracy_ci95: list[float] | None = Field(None, min_length=2, max_length=2, description="Wilson 95 % interval of accuracy")
    images: int | None = None
    speedup_vs_teacher: float | None = None
    host_accuracy: float | None = Field(None, description="device rows: the host's top-1 on the same sample")
    host_reference: str | None = Field(None, description="device rows: the host artifact host_accuracy is of")
    agreement_with_host: float | None = Field(None, description="device rows: fraction of images answered as the host did")
    delegate: Delegate | None = None

    @model_validator(mode="after")
    def _ran(self) -> LatencyRow:
        if self.error is None and (self.latency_ms is None or self.runs is None):
            raise ValueError(f"{self.where} {self.device} {self.artifact} threads={self.threads}: no error but no latency_ms/runs")
        return self


class LayerErrorRow(Closed):
    """One quantised tensor of an int8 artifact against its fp32 twin (``pipeline.export.layer_error``)."""

    name: str
    op: str
    shape: list[int]
    index: int = Field(description="the writing op's position in execution order, -1 for the graph input")
    sqnr_db: float | None = Field(description="10·log10(Σ fp32² / Σ (fp32 − int8)²), capped at 999; None: fp32 all zeros")
    rel_error: float | None
    cosine: float | None
    clipped: float = Field(description="share of fp32 values outside the int8 tensor's range")
    scale: float | None = Field(description="the int8 tensor's (first) scale; None for a float output compared too")
    zero_point: int | None


class LayerErrorInfo(Closed):
    """The export stage's per-layer int8 error: the worst layers, the full list in ``file`` beside the artifact."""

    file: str
    artifact: str
    reference: str
    images: int
    layers: int | None = None
    worst: dict[str, Scalar] | None = None
    top: int | None = None
    records: list[LayerErrorRow] = []
    error: str | None = Field(None, description="why no numbers were computed")


class OpTimeOp(Closed):
    node: str = Field(description="the engine's node name (a fused kernel: a Convolution with its activation)")
    op_type: str
    ms: float = Field(description="median per inference over the profiled runs")
    share: float = Field(description="of the profiled total")


class OpTimeTable(Closed):
    """``pipeline.runtimes.op_time``'s table of one artifact, as the benchmark stage and a board's runner write it."""

    measured: bool
    engine: str | None = None
    reason: str | None = Field(None, description="why not measured")
    runs: int | None = None
    total_ms: float | None = None
    ops: list[OpTimeOp] = []


class WhereRow(Closed):
    """One graph node of an int8 artifact: its int8 error beside its engine time."""

    node: str = Field(description="the layer's name (the ONNX node), or the engine's node where it matched none")
    op_type: str
    sqnr_db: float | None = Field(description="of its worst quantised tensor; None: not measured for this node")
    clipped: float | None
    ms: float | None = Field(description="summed engine ops that ran as this node; None: none timed as it")
    time_share: float | None = Field(description="of the profiled total, in [0, 1]")
    kept_float: bool | None = Field(description="kept in float by the export; None: not recorded")
    engine_nodes: list[str] = Field([], description="the engine nodes whose time is ms")


class WhereInfo(Closed):
    """Where accuracy and time go in one int8 artifact; each column says where it came from, or why it is empty."""

    artifact: str
    sqnr_file: str | None = None
    sqnr_missing: str | None = Field(None, description="why no SQNR")
    time_where: Literal["host", "device"] | None = None
    time_machine: str | None = Field(None, description="the machine whose per-op profile ms is")
    time_engine: str | None = None
    time_runs: int | None = None
    total_ms: float | None = None
    time_missing: str | None = Field(None, description="why no ms (NOT MEASURED, with the engine's reason)")
    kept_source: str | None = None
    kept_missing: str | None = Field(None, description="why kept_float is unknown")
    rows: list[WhereRow]


class DecisionRow(Closed):
    """One automatic int8 choice the run made, with the paired 95 % interval it rested on (``pipeline/decision.py``'s
    ``decision`` record, copied as recorded)."""

    choice: str = Field(description="which automatic choice: QAT guard, TFLite converter, keep_float auto (onnx_int8), …")
    recorded_in: str = Field(description="its record in the stage metrics: qat.guard, export.keep_float.onnx_int8, …")
    artifact: str | None = Field(description="the format key it acts on; null for the QAT guard (the weights)")
    outcome: str = Field(description="what was adopted or kept")
    reason: str | None = Field(description="the choice's own reason, as recorded")
    images: int = Field(ge=0, description="images both models were scored on")
    one_image_pts: float | None = Field(description="what one image is worth, top-1 points")
    difference_pts: float | None = Field(description="top-1 of the complex choice minus the simpler one's (QAT int8 minus "
                                                     "PTQ int8 for the guard), points; null: the two were not compared")
    ci95_pts: list[float] | None = Field(min_length=2, max_length=2, description="paired 95 % interval of difference_pts")
    split: str = Field(description="the split the choice was judged on")
    supported: bool = Field(description="the interval lies above 0: the complex choice is better beyond doubt")
    note: str | None = Field(None, description="set when the split had fewer than 500 images")
