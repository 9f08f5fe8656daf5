"""The report's JSON layout, versioned: what a product team stores and compares across runs and devices.

Standard library only (no numpy, no torch, no pydantic): the on-device runner writes rows in this
layout on boards. The layout itself is ``pipeline.report.model`` (pydantic, host side), which
validates every report as it is built and generates the JSON Schema written beside it
(``report.schema.json``, named by report.json's ``$schema`` key).

``report.json`` (``schema_version`` 2)::

    $schema, schema, schema_version, created, pipeline_version
    run          {name, command (run | export | benchmark), folder, config_hash, target, accelerator, deploy_artifact,
                  export_source, export_source_reason, gate_threads}
    config       the resolved config the run ran with (pipeline.config.Config), or null
    verdict      {status: PASS | FAIL | NOT MEASURED, failures, not_measured}
    headline     {artifact, size_bytes, top1 + top1_ci95, val_top1, p50_ms ± its half-width + where it was measured, compiler, …}
    data         {dataset, split, images, num_classes, input_shape}
    environment  {host: Machine, devices: [Machine]}         # one per merged device results file
    settings     {batch, warmup, min_runs, min_seconds, precision_pct, max_seconds, confidence, timed, threads, max_images,
                  timer, method}
    models       {teacher|student: {arch, params, macs, file, size_bytes}}
    accuracy     [AccuracyRow]   # the stage chain: teacher → student fp32 → fake-quant → each artifact
    validation   {split, artifact, images, top1, error}  # the deploy artifact on the validation split
    latency      [LatencyRow]    # one per (where, device, model, artifact, threads), with latency_precision
    gates        [{name, limit, value, status, passed, where, device, message}]
    checks       [{kind, subject, status, deploy, message}]  # export fidelity, op check, target check, compiler, device runs
    target       {name, accelerator, verdict, passed, summary, compiler, device, details}
    layer_error  {int8 key: the export's worst layers}       # or null
    where        {int8 key: {rows: [{node, op_type, sqnr_db, clipped, ms, time_share, kept_float, engine_nodes}],
                  time_where, time_machine, …, and why a column is empty}}  # where accuracy and time go, or null

A LatencyRow is keyed by ``where`` ("host" | "device"), ``device`` (a name), ``model``
("teacher" | "student"), ``artifact`` ("pytorch" or an export format key) and ``threads`` (as
asked, 0 = all cores). ``error`` is null when it ran. Times are milliseconds, sizes bytes,
accuracy a fraction in [0, 1]; accuracy differences are in percentage points, positive = lost.
Device results files (``pipeline.device``) carry rows in this same shape, with ``where: "device"``, and with
``--op-time`` an ``op_time`` table per int8 artifact (``pipeline.runtimes.op_time``'s).

Bump ``SCHEMA_VERSION`` when a field is renamed or removed or its meaning changes (2: gates renamed
and given a status, verdict/headline/checks added, every object closed).
"""

from __future__ import annotations

SCHEMA_ID = "edge-pipeline/report"
SCHEMA_VERSION = 2
SCHEMA_FILE = "report.schema.json"  # written beside every report.json, which names it in "$schema"
# a board's results file (``python -m pipeline.device run``), whose rows the report merges (``device_results``)
DEVICE_RESULTS_KIND = "device-results"
DEVICE_RESULTS_VERSION = 1
