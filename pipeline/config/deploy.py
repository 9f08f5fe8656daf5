"""The sections that ship the model: export formats, the target, the benchmark's gates and settings, the report."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from pipeline.benchmark import MAX_MIN_SECONDS, MAX_RUNS
from pipeline.config.base import NonNegative, Section, unknown_name as _unknown

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
    # nncf.quantize_with_accuracy_control (layers reverted to float until it keeps 99 %), kept when better beyond doubt
    # (paired 95 % interval above 0, pipeline/decision.py); off: plain int8 only
    openvino_accuracy_control: Literal["auto", "off"] = "auto"
    # who makes tflite_int8: onnx2tf (from student.onnx) or litert-torch (from the PyTorch weights, in its own venv named
    # by PIPELINE_LITERT_PYTHON; int8 I/O only); auto: both where litert-torch can run, litert-torch kept only when its
    # int8 top-1 on the validation split is higher beyond doubt (paired 95 % interval above 0), else onnx2tf (recorded why)
    tflite_converter: Literal["auto", "onnx2tf", "litert_torch"] = "auto"
    # auto: when onnx2tf's tflite_int8 keeps < 99 % of tflite_fp32's top-1 on the validation split, convert again calibrated
    # on 4× the images and, where the target runs both weight schemes (TargetRules.other_weight_scheme), with the other one;
    # the best try is kept if its int8 is better there beyond doubt (pipeline/export/tflite_recalibration.py); off: never
    tflite_recalibration: Literal["auto", "off"] = "auto"
    # layers every int8 artifact leaves in float (pipeline/export/keep_float.py): node-name regexes as the per-layer
    # report names them, or auto (the fewest layers that bring int8 to 99 % of fp32 on validation, shipped when better
    # than all-int8 beyond doubt); integer-only
    # targets (Edge TPU) refuse it
    keep_float: list[str] | Literal["auto"] = []

    @field_validator("keep_float", mode="before")
    @classmethod
    def _list_or_auto(cls, v: Any) -> Any:
        if isinstance(v, str) and v != "auto":
            raise ValueError(f"{v!r}: give a list of node-name patterns (e.g. [stage0]) or auto")
        return v

    @field_validator("keep_float")
    @classmethod
    def _patterns_compile(cls, v: list[str] | str) -> list[str] | str:
        import re

        for i, pattern in enumerate([] if v == "auto" else v):
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"[{i}] {pattern!r} is not a regular expression ({exc}); give node-name patterns as "
                                 "layer_error.json names them, or auto") from None
        return v

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
