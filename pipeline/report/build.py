"""Assemble report.json from the benchmark stage's results and any device results files.

Host rows come from ``07_benchmark/benchmark.json``; each device results file (written by
``python -m pipeline.device run``) adds its ``device`` block to ``environment.devices`` and its
rows to ``latency`` with ``where: "device"``. A device row that re-measures the same key as an
earlier file's row replaces it (the newest file wins). Speed-up vs the teacher is computed per
(where, device, threads) wherever a teacher row exists there.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from pipeline.benchmark.gates import teacher_baseline
from pipeline.report.schema import SCHEMA_ID, SCHEMA_VERSION, row_key

TOP_LEVEL = ("run", "data", "settings", "models", "accuracy", "gates", "target")


def build_report(results: dict[str, Any], device_results: list[dict[str, Any]] = (), created: str | None = None,
                 run_name: str | None = None) -> dict[str, Any]:
    """report.json as a dict; ``device_results`` are parsed results files (``results_file`` set by the caller if known);
    ``run_name``: the run folder's name, which a copied run folder does not share with its benchmark results."""
    report: dict[str, Any] = {
        "schema": SCHEMA_ID,
        "schema_version": SCHEMA_VERSION,
        "created": created or time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "pipeline_version": results.get("pipeline_version", "unknown"),
    }
    for key in TOP_LEVEL:
        report[key] = results[key]
    if run_name:
        report["run"] = {**report["run"], "name": run_name}
    report["environment"] = {"host": results["environment"]["host"], "devices": []}

    rows = {row_key(r): dict(r) for r in results["latency"]}
    for res in device_results:
        device = dict(res["device"])
        if res.get("results_file"):
            device["results_file"] = str(res["results_file"])
        report["environment"]["devices"] = [d for d in report["environment"]["devices"] if d["name"] != device["name"]] + [device]
        for r in res["rows"]:
            row = device_row(r, device["name"], res.get("settings", {}).get("threads", 0))
            rows[row_key(row)] = row
    report["latency"] = add_speedups(list(rows.values()))
    return report


def device_row(row: dict[str, Any], device: str, default_threads: Any) -> dict[str, Any]:
    """A results file's row as the report holds it: where/device set, model, error and threads filled in."""
    out = {**row, "where": "device", "device": device}
    out.setdefault("model", "student")
    out.setdefault("error", None)
    out.setdefault("threads", default_threads)
    out.pop("runtime", None)
    return out


def add_speedups(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``speedup_vs_teacher`` = teacher p50 / row p50 on the same machine at the same threads, else None.

    The teacher is its ONNX Runtime row where it has one (``gates.teacher_baseline``), so the
    speed-up is the student's, not PyTorch's eager batch-1 overhead."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["where"], r["device"], r["threads"]), []).append(r)
    teacher = {key: t["latency_ms"]["p50"] for key, group in groups.items() if (t := teacher_baseline(group))}
    for r in rows:
        t = teacher.get((r["where"], r["device"], r["threads"]))
        p50 = (r.get("latency_ms") or {}).get("p50") if not r.get("error") else None
        r["speedup_vs_teacher"] = round(t / p50, 4) if t and p50 else None
    return rows


def discover_device_results(run_dir: Path) -> list[Path]:
    """Device results files kept in ``RUN/device/`` (where ``pipeline.device`` remote runs put them)."""
    folder = Path(run_dir) / "device"
    if not folder.is_dir():
        return []
    found = []
    for path in sorted(folder.glob("*.json")):
        try:
            import json

            if json.loads(path.read_text()).get("kind") == "device-results":
                found.append(path)
        except (ValueError, OSError, AttributeError):
            continue
    return found


def read_device_files(paths: list[Path]) -> list[dict[str, Any]]:
    """Parse and check results files (``pipeline.device.merge.read_device_results``), tagging each with its path."""
    from pipeline.device.merge import read_device_results

    out = []
    for path in paths:
        data = read_device_results(Path(path))
        data["results_file"] = Path(path).name
        out.append(data)
    return out
