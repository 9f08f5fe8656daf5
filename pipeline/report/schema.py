"""The report's JSON layout, versioned: what a product team stores and compares across runs and devices.

Standard library only (no numpy, no torch): the on-device runner writes rows in this layout on
boards, and ``report.schema.json`` beside this file is the formal JSON Schema (draft 2020-12)
the tests validate every written report against.

``report.json`` (``schema_version`` 1)::

    schema, schema_version, created, pipeline_version
    run          {name, target, deploy_artifact, export_source, gate_threads}
    data         {dataset, split, images, num_classes, input_shape}
    environment  {host: {name, cpu, cores, usable_cores, memory_mb, arch, os, kernel, runtimes, tools},
                  devices: [{name, cpu, …, results_file}]}          # one per merged device results file
    settings     {batch, warmup, min_runs, min_seconds, threads, max_images, timer, method}
    models       {teacher|student: {arch, params, macs, file, size_bytes}}
    accuracy     [AccuracyRow]   # the stage chain: teacher → student fp32 → fake-quant → each artifact
    latency      [LatencyRow]    # one per (where, device, model, artifact, threads)
    gates        [{name, limit, value, passed, message}]
    target       {name, verdict, …}  # the target stage's metrics (e.g. Edge TPU mapped/unmapped ops)

A LatencyRow is keyed by ``where`` ("host" | "device"), ``device`` (a name), ``model``
("teacher" | "student"), ``artifact`` ("pytorch" or an export format key) and ``threads`` (as
asked, 0 = all cores). ``error`` is null when it ran. Times are milliseconds, sizes bytes,
accuracy a fraction in [0, 1]; accuracy differences are in percentage points. Device results
files (``pipeline.device``) carry rows in this same shape, with ``where: "device"``; extra keys
in a row are allowed and kept (a device row adds ``agreement_with_host``, ``delegate``…).

Bump ``SCHEMA_VERSION`` when a field is renamed or removed or its meaning changes; adding an
optional field does not bump it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SCHEMA_ID = "edge-pipeline/report"
SCHEMA_VERSION = 1
SCHEMA_FILE = Path(__file__).with_name("report.schema.json")

LATENCY_STATS = ("mean", "std", "min", "max", "p50", "p90", "p99")
ROW_KEY = ("where", "device", "model", "artifact", "threads")


def row_key(row: dict[str, Any]) -> tuple:
    """Identity of a latency row: the same key in two reports is the same measurement, re-taken."""
    return tuple(row.get(k) for k in ROW_KEY)


def sample_key(row: dict[str, Any]) -> str:
    """Name of a row's per-call samples in the benchmark stage's ``latency_samples.npz``."""
    return "|".join(str(k) for k in row_key(row))


def load_schema() -> dict[str, Any]:
    return json.loads(SCHEMA_FILE.read_text())


def schema_problem(instance: Any, definition: str) -> str | None:
    """The most telling way ``instance`` breaks ``$defs/<definition>``, as one line 'path: message'; None if it fits."""
    import jsonschema

    from pipeline.errors import one_line

    schema = load_schema()
    validator = jsonschema.Draft202012Validator({"$schema": schema["$schema"], "$defs": schema["$defs"],
                                                 "$ref": f"#/$defs/{definition}"})
    err = jsonschema.exceptions.best_match(validator.iter_errors(instance))
    if err is None:
        return None
    where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err.absolute_path).lstrip(".")
    return f"{where}: {one_line(err.message, 150)}" if where else one_line(err.message, 150)


def validate_report(report: dict[str, Any]) -> None:
    """Raise ``jsonschema.ValidationError`` if ``report`` does not follow the schema (needs jsonschema)."""
    import jsonschema

    jsonschema.validate(report, load_schema())
