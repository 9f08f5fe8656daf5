"""Assemble report.json from the benchmark stage's results, the run's stage records and any device results files.

Host rows come from ``07_benchmark/benchmark.json``; each device results file (written by
``python -m pipeline.device run``) adds its ``device`` block to ``environment.devices`` and its
rows to ``latency`` with ``where: "device"``. A device row that re-measures the same key as an
earlier file's row replaces it (the newest file wins). Speed-up vs the teacher is computed per
(where, device, threads) wherever a teacher row exists there.

Then the report re-reads what the run found, so it says no more than was measured:

* ``gates``: re-evaluated by ``pipeline.benchmark.gates`` with the device rows of the target's
  bundle (device first; a failed device deploy row fails them);
* ``checks``: every check's verdict with its message: export fidelity and the op check
  (``05_export``'s manifest), the target check and the vendor compiler (``06_target``'s),
  each device run of the deploy artifact;
* ``decisions``: every automatic int8 choice with its recorded interval (``04_qat``'s guard and
  ``05_export``'s remedies, ``pipeline/report/decisions.py``);
* ``headline``: the deploy artifact, its size, top-1 with a Wilson 95 % interval, p50 on the
  target device if one was measured (else the host CPU, labelled so), the compiler's result;
* ``verdict``: FAIL if a gate or a check of the deploy artifact failed, else NOT MEASURED if a
  gate or the target's accelerator or compiler was not measured, else PASS.

The dict is validated by ``pipeline.report.model.Report`` before it is returned.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.benchmark.gates import FAIL, NOT_MEASURED, PASS, device_threads, evaluate_gates, teacher_baseline
from pipeline.report.checks import checks, compiler_sentence, target_info
from pipeline.report.decisions import section as decisions_section
from pipeline.benchmark.rows import row_key
from pipeline.report.stats import accuracy_interval
from pipeline.report.where import section as where_section
from pipeline.stage_metrics import ExportMetrics, QatMetrics, TargetMetrics
from pipeline.stages import RESULTS_FILE, STAGE_FOLDERS, stage_folder

TOP_LEVEL = ("data", "settings", "models")


@dataclass
class RunRecords:
    """What the run recorded besides the benchmark results (each may be missing in an old or partial run folder)."""

    folder: str | None = None
    config: dict[str, Any] | None = None  # the resolved config (config.json)
    export: ExportMetrics | None = None  # 05_export's manifest metrics
    target: TargetMetrics | None = None  # 06_target's manifest metrics
    where: dict[str, Any] | None = None  # int8 key -> report.where.Sources: its layer error, per-op time, sidecar
    qat: QatMetrics | None = None  # 04_qat's manifest metrics (the guard)

    def __post_init__(self) -> None:  # a manifest's dict, as read, is typed here
        if self.qat is not None:
            self.qat = QatMetrics.of(self.qat)
        if self.export is not None:
            self.export = ExportMetrics.of(self.export)
        if self.target is not None:
            self.target = TargetMetrics.of(self.target)


def read_records(run_dir: Path) -> RunRecords:
    """The records of a run folder: config.json and the QAT, export and target stages' manifests."""
    from pipeline.artifacts import Manifest
    from pipeline.report.where import read_sources
    from pipeline.run_folder import recorded_config

    run_dir = Path(run_dir)
    qat, export, target = (Manifest.read(stage_folder(run_dir, name)) for name in ("qat", "export", "target"))
    return RunRecords(folder=str(run_dir), config=recorded_config(run_dir), export=ExportMetrics.of(export.metrics) if export else None,
                      target=TargetMetrics.of(target.metrics) if target else None,
                      qat=QatMetrics.of(qat.metrics) if qat else None,
                      where=read_sources(stage_folder(run_dir, "export"), stage_folder(run_dir, "benchmark")))


def build_report(results: dict[str, Any], device_results: list[dict[str, Any]] = (), created: str | None = None,
                 records: RunRecords | None = None) -> dict[str, Any]:
    """report.json as a dict; ``device_results`` are parsed results files (``results_file`` set by the caller if known)."""
    from pipeline.report.model import checked, to_json
    from pipeline.report.model_rows import LatencyRow, Machine
    from pipeline.run_folder import config_hash

    records = records or RunRecords()
    rules = _rules(results["run"]["target"])
    export = records.export or ExportMetrics()
    run = {**results["run"], "folder": records.folder, "config_hash": config_hash(records.config) if records.config else None,
           "accelerator": rules.accelerator if rules else None}
    if records.folder:  # a copied run folder reports its own name, not the one its benchmark results were written under
        run["name"] = Path(records.folder).name
    run["export_source"] = export.source or run.get("export_source")
    run["export_source_reason"] = export.source_reason
    report: dict[str, Any] = {
        "created": created or time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "pipeline_version": results.get("pipeline_version", "unknown"),
        "run": run,
        "config": records.config,
        **{key: results[key] for key in TOP_LEVEL},
    }
    report["accuracy"] = [{**r, "top1_ci95": accuracy_interval(r.get("top1"), r.get("images"))} for r in results["accuracy"]]
    report["validation"] = results.get("validation")  # absent in results written before it was measured
    report["environment"] = {"host": results["environment"]["host"], "devices": []}

    rows = {row_key(r): dict(r) for r in results["latency"]}
    for res in device_results:
        device = dict(res["device"])
        source = str(res.get("results_file") or "device results")
        if res.get("results_file"):
            device["results_file"] = str(res["results_file"])
        device["target"] = (res.get("bundle") or {}).get("target")
        checked(Machine, device, f"{source}: device")  # a file from another version: one line naming it, not a traceback
        report["environment"]["devices"] = [d for d in report["environment"]["devices"] if d["name"] != device["name"]] + [device]
        for i, r in enumerate(res["rows"]):
            row = device_row(r, device["name"], res.get("settings", {}).get("threads", 0))
            checked(LatencyRow, row, f"{source}: rows.{i}")
            rows[row_key(row)] = row
    for r in rows.values():
        r["accuracy_ci95"] = accuracy_interval(r.get("accuracy"), r.get("images"))
    report["latency"] = add_speedups(list(rows.values()))

    recorded = records.target if records.target is not None and records.target.manifest_dict() else None
    report["target"] = target_info(recorded or TargetMetrics.of(results.get("target")), results["run"]["target"], rules)
    devices = target_devices(report)
    report["gates"] = evaluate_gates(
        gate_limits(results["gates"]), accuracy=report["accuracy"], latency=report["latency"],
        deploy_artifact=run["deploy_artifact"], threads=run.get("gate_threads"), target_devices=devices,
        target_threads=rules.threads if rules else 0, accelerator=rules.accelerator if rules else None,
        command=run.get("command") or "run", timed=results["settings"].get("timed", "all"),
    )
    report["checks"] = checks(export, report["target"], report["latency"], run["deploy_artifact"], devices)
    report["decisions"] = decisions_section(records.qat, export)
    report["layer_error"] = layer_error_by_format(export.layer_error)
    report["where"] = where_section(records.where or {}, device_results, report["environment"]["host"]["name"])
    report["headline"] = headline(report, devices, rules)
    report["verdict"] = verdict(report)
    return to_json(report, source=f"{records.folder or '.'}/{STAGE_FOLDERS['benchmark']}/{RESULTS_FILE} (with the run's records)")


def layer_error_by_format(found: dict[str, Any] | None) -> dict[str, Any] | None:
    """The export metrics' per-layer summaries by format key; a run exported before OpenVINO had one holds the TFLite
    summary alone, unkeyed."""
    if not found:
        return None
    return {"tflite_int8": found} if "artifact" in found else found


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


def gate_limits(gates: list[dict[str, Any]]) -> dict[str, float]:
    """The limits the benchmark stage evaluated; a renamed gate of an older run is read under its new name."""
    from pipeline.config import RENAMED_GATES

    return {RENAMED_GATES[g["name"]][0] if g["name"] in RENAMED_GATES else g["name"]: g["limit"] for g in gates}


def target_devices(report: dict[str, Any]) -> list[str]:
    """Devices whose rows came from a bundle of this run's target (a file without a target counts as the target's)."""
    return [d["name"] for d in report["environment"]["devices"] if d.get("target") in (None, report["run"]["target"])]


def on_accelerator(row: dict[str, Any]) -> bool:
    """The row ran on an accelerator: a compiled model's delegate loaded, or an OpenVINO device other than the CPU."""
    device = (row.get("engine_info") or {}).get("device")
    return bool((row.get("delegate") or {}).get("loaded")) or (isinstance(device, str) and device.upper() not in ("CPU", ""))



def headline(report: dict[str, Any], devices: list[str], rules) -> dict[str, Any]:
    """The first lines' facts: the deploy artifact, its size and top-1, its p50 where it was measured, the compiler."""
    run, target = report["run"], report["target"]
    deploy = run["deploy_artifact"]
    acc = next((r for r in report["accuracy"] if r["stage"] == deploy), {})
    host = next((r for r in report["latency"] if r["where"] == "host" and r["model"] == "student" and r["artifact"] == deploy
                 and r["threads"] == run.get("gate_threads")), None)
    device = _device_deploy_row(report["latency"], devices, rules.threads if rules else 0)
    timed = device or (host if host and not host.get("error") else None)
    c = target.get("compiler")
    out = {
        "artifact": deploy,
        "file": (host or {}).get("file") or target.get("file"),
        "size_bytes": (host or {}).get("size_bytes"),
        "export_source": run.get("export_source"),
        "export_source_reason": run.get("export_source_reason"),
        "top1": acc.get("top1"),
        "top1_ci95": acc.get("top1_ci95"),
        "top1_images": acc.get("images"),
        "val_top1": (report.get("validation") or {}).get("top1"),
        "val_images": (report.get("validation") or {}).get("images"),
        "p50_ms": timed["latency_ms"]["p50"] if timed else None,
        "p50_half_width_pct": (timed.get("latency_precision") or {}).get("p50_half_width_pct") if timed else None,
        "latency_where": timed["where"] if timed else None,
        "latency_machine": timed["device"] if timed else None,
        "latency_threads": timed["threads"] if timed else None,
        "accelerator": run.get("accelerator"),
        "accelerator_measured": bool(device and on_accelerator(device)),
        "compiler": compiler_sentence(c, target) if c else "no vendor compiler for this target",
        "op_mapping": None,
    }
    if device is not None:
        out.update(device=device["device"], device_artifact=device["artifact"], device_top1=device.get("accuracy"),
                   device_top1_ci95=device.get("accuracy_ci95"), device_images=device.get("images"),
                   device_host_top1=device.get("host_accuracy"), device_agreement=device.get("agreement_with_host"))
    if target.get("summary"):
        static = "" if (c or {}).get("compiled") or not c else " (the pipeline's static check, not the compiler)"
        out["op_mapping"] = f"{target['summary']}{static}"
    return out


def verdict(report: dict[str, Any]) -> dict[str, Any]:
    """FAIL if a gate or a deploy check failed; else NOT MEASURED if something the target needs was not measured; else PASS."""
    failures = [_unstated(g) for g in report["gates"] if g["status"] == FAIL]
    failures += [f"{c['kind']} {c['subject']}: FAIL: {c['message']}" for c in report["checks"] if c["deploy"] and c["status"] == FAIL]
    not_measured = []
    h, run = report["headline"], report["run"]
    if run.get("accelerator") and not h["accelerator_measured"]:
        acc, cpu = run["accelerator"], report["environment"]["host"].get("cpu")
        boards = sorted({r["device"] for r in report["latency"] if r["where"] == "device" and not r.get("error")})
        where = f"the host CPU's ({cpu})" + (f" or the CPU of {', '.join(boards)}" if boards else "")
        not_measured.append(f"No {acc} was measured: every latency in this report is {where}, not the {acc}'s")
    rules = _rules(report["run"]["target"])
    compiled = rules.compiler.output_format if rules and rules.compiler else None
    compiler = report["target"].get("compiler")
    ran_compiled = any(r["artifact"] == compiled and not r.get("error") for r in report["latency"])  # compiled elsewhere
    if compiler and not compiler["ran"] and not ran_compiled:
        not_measured.append(f"The {compiler['name']} (the vendor compiler) did not run: {compiler['status']}")
    not_measured += [_unstated(g) for g in report["gates"] if g["status"] == NOT_MEASURED]
    status = FAIL if failures else NOT_MEASURED if not_measured else PASS
    return {"status": status, "failures": failures, "not_measured": not_measured}


def _unstated(gate: dict[str, Any]) -> str:
    """A gate's message without its status word (the verdict's list already says it): 'name: what (limit)'."""
    return gate["message"].replace(f"{gate['name']} {gate['status']}: ", f"{gate['name']}: ", 1)


def _device_deploy_row(latency: list[dict[str, Any]], devices: list[str], target_threads: int) -> dict[str, Any] | None:
    """The deploy artifact's measured row on a target device (the last merged device), at that device's gate threads."""
    for name in reversed(devices):
        ok = [r for r in latency if r["where"] == "device" and r["device"] == name and r["model"] == "student"
              and r.get("deploy") and not r.get("error") and r.get("latency_ms")]
        t = device_threads(ok, target_threads)
        row = next((r for r in ok if r["threads"] == t), None)
        if row is not None:
            return row
    return None



def _rules(target: str):
    from pipeline.target import TARGETS

    return TARGETS.get(target)
