"""report.json as pydantic models: one source for the report's layout, its validation and its JSON Schema.

``build_report`` assembles a dict and passes it through ``Report`` (a field missing, misspelt or
of the wrong type is a bug caught where the report is written, not by a consumer), and
``json_schema()`` generates the JSON Schema (draft 2020-12) that is written beside every
report.json (``report.schema.json``, named by its ``$schema`` key). Every object of the layout
is closed (``additionalProperties: false``); maps keyed by names (``models``, ``agreement``,
runtime versions, an engine's settings) have closed or scalar values. The embedded ``config``
is described by ``pipeline.config.Config``'s own schema.

Host side only (pydantic): the board-side runner writes rows in this layout with the standard
library alone, and ``tests/test_device_runner.py`` validates them against ``$defs/LatencyRow``.
Bump ``schema.SCHEMA_VERSION`` when a field is renamed or removed or changes meaning.
"""

from __future__ import annotations

import functools
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pipeline.config import Gates
from pipeline.errors import PipelineError
from pipeline.report.model_rows import (LATENCY_ROW_RAN, AccuracyRow, Closed, DecisionRow, Environment, LatencyRow,
                                        LayerErrorInfo, ModelSummary, Scalar, WhereInfo)
from pipeline.report.schema import SCHEMA_FILE, SCHEMA_ID, SCHEMA_VERSION

Status = Literal["PASS", "FAIL", "NOT MEASURED"]
CheckStatus = Literal["PASS", "FAIL", "NOT RUN"]
GateName = Literal[tuple(Gates.model_fields)]  # the config's gate names are the one list


class RunInfo(Closed):
    name: str
    command: Literal["run", "export", "benchmark"] = Field(
        "run", description="run: trained here; export: a given model, no teacher, nothing trained; benchmark: given artifacts")
    folder: str | None = Field(None, description="the run folder, as the report was written from it")
    config_hash: str | None = Field(None, description="first 12 hex digits of the hash of the resolved config without name and runs_dir")
    target: str
    accelerator: str | None = Field(None, description="the target's accelerator (Edge TPU, Intel NPU); null for a CPU target")
    deploy_artifact: str = Field(description="export format key of the artifact the target deploys")
    export_source: str | None = Field(None, description="which student weights were exported: qat or distill")
    export_source_reason: str | None = Field(None, description="why those weights (the export stage's words)")
    gate_threads: int | None = Field(None, description="thread count (as asked, 0 = all cores) of the host rows the gates read")


class DataInfo(Closed):
    dataset: str | None = None
    split: str
    images: int = Field(ge=0)
    num_classes: int | None = None
    input_shape: list[int] | None = None


class Settings(Closed):
    batch: Literal[1]
    warmup: int = Field(ge=0)
    min_runs: int = Field(ge=1)
    min_seconds: float = Field(ge=0)
    precision_pct: float | None = Field(None, gt=0, description="target ± % of p50 and p90; null: the fixed rule (min_runs, min_seconds)")
    max_seconds: float | None = Field(None, gt=0, description="cap on each timed phase")
    confidence: float | None = Field(None, gt=0, lt=1, description="of the latency intervals")
    timed: Literal["all", "deploy"] = Field("all", description="which artifacts were timed (benchmark.timed)")
    threads: list[int]
    max_images: int | None = None
    timer: str | None = None
    method: str | None = None


class Gate(Closed):
    name: GateName
    limit: float
    value: float | None
    status: Status
    passed: bool | None = Field(description="null when not measured")
    where: Literal["host", "device"] | None = None
    device: str | None = None
    message: str


class Check(Closed):
    kind: Literal["export fidelity", "op check", "target check", "compiler", "target device", "device run"]
    subject: str = Field(description="the artifact or device checked")
    status: Literal["PASS", "FAIL", "NOT RUN"]
    deploy: bool = Field(description="about the deploy artifact: a FAIL fails the verdict")
    message: str


class CompilerInfo(Closed):
    name: str
    ran: bool
    compiled: bool
    status: str
    version: str | None = None
    ops_total: int | None = None
    ops_mapped: int | None = Field(None, description="ops the compiler put on the accelerator")
    subgraphs: int | None = None
    on_chip_bytes_used: int | None = None
    off_chip_bytes: int | None = None
    agrees_with_check: bool | None = None


class TargetInfo(Closed):
    name: str
    accelerator: str | None = None
    artifact: str | None = None
    file: str | None = None
    checker: str | None = None
    verdict: str | None = None
    passed: bool | None = None
    summary: str | None = None
    compiler: CompilerInfo | None = None
    device: str | None = Field(None, description="the runtime device (CPU, NPU)")
    device_available: bool | None = None
    device_note: str | None = None
    details: dict[str, Scalar] = Field({}, description="the target stage's other headline numbers (ops, memory)")


class Headline(Closed):
    """What the first lines of the report say: only what was measured, and where."""

    artifact: str
    file: str | None = None
    size_bytes: int | None = None
    export_source: str | None = None
    export_source_reason: str | None = None
    top1: float | None = Field(None, description="on the host's test split")
    top1_ci95: list[float] | None = None
    top1_images: int | None = None
    val_top1: float | None = Field(None, description="on the validation split (what a search ranks by); see validation")
    val_images: int | None = None
    device: str | None = Field(None, description="the target device whose deploy row the headline reads, if any")
    device_artifact: str | None = None
    device_top1: float | None = None
    device_top1_ci95: list[float] | None = None
    device_images: int | None = None
    device_host_top1: float | None = Field(None, description="the host's top-1 on the device's sample")
    device_agreement: float | None = None
    p50_ms: float | None = None
    p50_half_width_pct: float | None = Field(None, description="of p50_ms: the larger side of its 95 % interval, %")
    latency_where: Literal["host", "device"] | None = None
    latency_machine: str | None = None
    latency_threads: int | None = None
    accelerator: str | None = None
    accelerator_measured: bool = False
    compiler: str = Field(description="whether the vendor compiler ran, and what it mapped")
    op_mapping: str | None = None


class ValidationInfo(Closed):
    """The deploy artifact's top-1 on the validation split: models are ranked on it, the test split is kept for the end."""

    split: Literal["val"] = "val"
    artifact: str
    images: int = Field(ge=0)
    top1: float | None = Field(ge=0, le=1)
    error: str | None = Field(None, description="why there is no top-1 (the artifact failed, an empty split)")


class Verdict(Closed):
    status: Status
    failures: list[str]
    not_measured: list[str]


class Report(Closed):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, title="Edge pipeline benchmark report")

    json_schema_file: str = Field(SCHEMA_FILE, alias="$schema", description="the JSON Schema beside this file")
    schema_id: Literal["edge-pipeline/report"] = Field(SCHEMA_ID, alias="schema")
    schema_version: Literal[2] = SCHEMA_VERSION
    created: str = Field(description="ISO 8601 local time with offset")
    pipeline_version: str
    run: RunInfo
    config: dict[str, Any] | None = Field(None, description="the run's resolved config (pipeline.config.Config)")
    verdict: Verdict
    headline: Headline
    data: DataInfo
    environment: Environment
    settings: Settings
    models: dict[str, ModelSummary]
    accuracy: list[AccuracyRow]
    validation: ValidationInfo | None = Field(None, description="the deploy artifact on the validation split")
    latency: list[LatencyRow]
    gates: list[Gate]
    checks: list[Check]
    decisions: list[DecisionRow] | None = Field(
        None, description="every automatic int8 choice the run recorded (QAT guard, export remedies); null: none ran")
    target: TargetInfo
    layer_error: dict[str, LayerErrorInfo] | None = Field(
        None, description="int8 error per layer of each int8 artifact compared (export stage), by format key")
    where: dict[str, WhereInfo] | None = Field(
        None, description="where accuracy and time go: each int8 artifact's nodes, SQNR beside engine time, by format key")


def to_json(report: dict[str, Any], source: str = "report") -> dict[str, Any]:
    """``report`` checked against ``Report`` and dumped in its field order (JSON types only).

    A field that does not fit is one ``PipelineError`` line naming ``source`` (the file it came from)."""
    return checked(Report, report, source).model_dump(mode="json", by_alias=True)


def checked(model: type[BaseModel], data: dict[str, Any], source: str) -> BaseModel:
    """``model`` built from ``data``, or one line: where, which field, what is wrong, and the schema version read."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise PipelineError(f"{source}: {_first_problem(exc)}; this pipeline reads report schema "
                            f"{SCHEMA_VERSION} (pipeline/report/model.py): write it again with this version") from None


def problem(model: type[BaseModel], data: Any) -> str | None:
    """How ``data`` breaks ``model``, as one line 'field.path: message'; None if it fits."""
    try:
        model.model_validate(data)
    except ValidationError as exc:
        return _first_problem(exc)
    return None


def _first_problem(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"])
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{where}: {err['msg']}{more}"


def json_schema() -> dict[str, Any]:
    """The JSON Schema of report.json, generated from ``Report`` with ``Config``'s schema for ``config``."""
    from pipeline.config import Config

    schema = Report.model_json_schema(by_alias=True, mode="serialization")
    config = Config.model_json_schema(mode="serialization", ref_template="#/$defs/{model}")
    clash = set(schema["$defs"]) & (set(config.get("$defs", {})) | {"Config"})
    assert not clash, f"report and config models share names: {clash}"
    schema["$defs"].update(config.pop("$defs", {}))
    schema["$defs"]["Config"] = config
    schema["$defs"]["LatencyRow"].update(LATENCY_ROW_RAN)
    schema["properties"]["config"] = {"anyOf": [{"$ref": "#/$defs/Config"}, {"type": "null"}],
                                      "description": schema["properties"]["config"].get("description")}
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": f"{SCHEMA_ID}/{SCHEMA_VERSION}", **schema}


def validate_report(report: dict[str, Any]) -> None:
    """Raise ``jsonschema.ValidationError`` if ``report`` does not follow the generated schema (needs jsonschema)."""
    _validator().validate(report)


@functools.cache
def _validator():
    import jsonschema

    schema = json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)  # once: the generated schema is itself valid
    return jsonschema.Draft202012Validator(schema)
