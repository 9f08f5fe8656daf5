"""Benchmark stage: accuracy of every stage and batch-1 latency of every artifact on the host, then the gates.

For each subject (teacher and student checkpoints, each exported artifact): first top-1 on the
first ``benchmark.max_images`` test images (which also imports the runtime's library outside
any timing), then, for the subjects ``benchmark.timed`` selects (``timed_subjects``), latency at
each ``benchmark.threads`` setting by ``latency.measure_latency`` (method in its docstring). The
QAT stage's fake-quant logits join the accuracy chain; the gates are evaluated on the target's
deploy artifact. The deploy artifact is also scored on the validation split (``validation``):
what a student search ranks by, so that the test split stays unseen until the end.

Writes ``benchmark.json`` (the report's rows, environment and settings; ``pipeline.report``
turns it into report.json/md/html) and ``latency_samples.npz`` (every timed sample, for the
latency plots). A failing artifact becomes a row with ``error`` set; the others still run.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

import pipeline
from pipeline.artifacts import Manifest, artifact_size, atomic_write_bytes, atomic_write_json, read_artifacts
from pipeline.benchmark.accuracy import accuracy_rows, predict_classes
from pipeline.benchmark.gates import TEACHER_BASELINES, evaluate_gates, gate_failed, gate_threads
from pipeline.benchmark.latency import StopRule, measure_latency, resolve_threads
from pipeline.errors import PipelineError, one_line
from pipeline.report.schema import sample_key
from pipeline.report.tables import precision_text
from pipeline.stages import (FAKEQUANT_LOGITS, RESULTS_FILE, SAMPLES_FILE, STUDENT_CHECKPOINT, TEACHER_CHECKPOINT,
                             TEACHER_ONNX)

RESULTS_KIND = "benchmark-results"
console = Console(stderr=True, highlight=False, soft_wrap=True)


@dataclass(frozen=True)
class Subject:
    """One thing to score: a stage of the accuracy chain, and (if ``timed``) a latency subject."""

    stage: str  # key in accuracy.stage_chain()
    model: str  # teacher | student
    artifact: str  # "pytorch" or an export format key
    path: Path
    timed: bool = True


def open_runtime(path: Path, threads: int):
    """The runtime for one file (``pipeline.runtimes.load``); tests replace this function."""
    from pipeline.runtimes import load

    return load(Path(path), threads=threads)


def run(ctx) -> dict:
    cfg, bench = ctx.cfg, ctx.cfg.benchmark
    from pipeline.data import load_split, read_split_info
    from pipeline.target import TARGETS

    rules = TARGETS[cfg.target.name]
    info = read_split_info(ctx.input("data"))
    x, y = load_split(ctx.input("data"), "test")
    if bench.max_images:
        x, y = x[: bench.max_images], y[: bench.max_images]
    if len(y) == 0:
        raise PipelineError("data: the test split is empty; set data.test_fraction > 0")

    command = run_command(ctx)
    subjects, errors = collect_subjects(ctx)
    subjects = timed_subjects(subjects, bench.timed, rules.deploy_artifact, bench.gates)
    rule = stop_rule(bench)
    val_x, val_y, validation = validation_split(ctx.input("data"), rules.deploy_artifact)
    export_source = next((s.stage for s in subjects if s.stage in ("student_qat_fp32", "student_fp32")), "onnx")
    preds: dict[str, np.ndarray] = {}
    engines: dict[str, str] = {}
    infos: dict[str, dict] = {}
    rows: list[dict[str, Any]] = []
    samples: dict[str, np.ndarray] = {}
    from pipeline import runtimes

    models = model_summaries(ctx, tuple(info["input_shape"]))
    host = host_environment()
    host_name = host["name"]

    for subj in subjects:
        try:
            runtime = open_runtime(subj.path, threads=0)
            try:
                engines[subj.stage] = runtimes.engine_name(runtime)
                infos[subj.stage] = engine_info(runtime)
                preds[subj.stage] = predict_classes(runtime, x)
                if subj.model == "student" and subj.artifact == rules.deploy_artifact:
                    validation.update(validation_top1(runtime, val_x, val_y))
            finally:
                _close(runtime)
        except Exception as exc:  # one broken artifact must not lose the others' numbers
            errors[subj.stage] = _describe(exc)
        if subj.timed:
            for threads in bench.threads:
                row = _latency_row(subj, threads, host_name, models, rules.deploy_artifact, engines.get(subj.stage))
                row["engine_info"] = infos.get(subj.stage, {})
                if subj.stage in errors:
                    row["error"] = errors[subj.stage]
                else:
                    _measure_into(row, subj, x, bench.warmup, rule, samples)
                rows.append(row)
    if validation["top1"] is None and validation["error"] is None:
        validation["error"] = errors.get(rules.deploy_artifact) or f"{rules.deploy_artifact}: not exported"

    for stage in errors:  # formats asked for but not exported: a failed row per thread setting (where it would be timed)
        if not any(s.stage == stage for s in subjects) and (bench.timed == "all" or stage == rules.deploy_artifact):
            for threads in bench.threads:
                rows.append({**_latency_row(Subject(stage, "student", stage, Path(stage)), threads, host_name, models,
                                            rules.deploy_artifact, None), "error": errors[stage], "file": None, "size_bytes": None})

    fq = fakequant_predictions(ctx, len(y))
    if isinstance(fq, str):
        errors["student_fakequant"] = fq
    elif fq is not None:
        preds["student_fakequant"] = fq
        engines["student_fakequant"] = "PyTorch fake-quant (QAT stage)"
    acc = accuracy_rows(preds, y, engines=engines, errors=errors, export_source=export_source)
    for r in acc:
        if command != "run" and r["stage"] == "student_fp32":  # the user's model, not a distilled one
            r["label"] = "student fp32 as given (PyTorch)"
    top1 = {(r["model"], r["artifact"]): r["top1"] for r in acc if r["stage"] != "student_qat_fp32" and r["stage"] != "student_fakequant"}
    for row in rows:
        row["accuracy"] = top1.get((row["model"], row["artifact"]))
        row["images"] = int(len(y))

    threads = gate_threads(list(bench.threads), rules.threads)
    gates = evaluate_gates(bench.gates.model_dump(), accuracy=acc, latency=rows, deploy_artifact=rules.deploy_artifact,
                           threads=threads, target_threads=rules.threads, accelerator=rules.accelerator, command=command,
                           timed=bench.timed)
    results = {
        "kind": RESULTS_KIND,
        "version": 1,
        "pipeline_version": pipeline.__version__,
        "run": {
            "name": cfg.name,
            "command": command,
            "target": rules.name,
            "deploy_artifact": rules.deploy_artifact,
            "export_source": export_source_of(ctx)[0],
            "export_source_reason": export_source_of(ctx)[1],
            "gate_threads": threads,
        },
        "data": {
            "dataset": info.get("dataset"),
            "split": "test",
            "images": int(len(y)),
            "num_classes": info.get("num_classes"),
            "input_shape": list(info["input_shape"]),
        },
        "environment": {"host": host},
        "settings": {
            "batch": 1,
            "warmup": bench.warmup,
            **rule.settings(),
            "timed": bench.timed,
            "threads": list(bench.threads),
            "max_images": bench.max_images,
            "timer": "time.perf_counter",
            "method": "pipeline.benchmark.latency.measure_latency",
        },
        "models": models,
        "accuracy": acc,
        "validation": validation,
        "latency": rows,
        "gates": gates,
        "target": target_summary(ctx, rules.name),
    }
    atomic_write_json(ctx.out / RESULTS_FILE, results)
    atomic_write_bytes(ctx.out / SAMPLES_FILE, _npz_bytes(samples))
    return stage_metrics(results)


def stop_rule(bench) -> StopRule:
    """The timing stopping rule of ``benchmark.*`` (``latency.StopRule``)."""
    return StopRule(min_runs=bench.min_runs, min_seconds=bench.min_seconds, precision_pct=bench.precision_pct,
                    max_seconds=bench.max_seconds)


def timed_subjects(subjects: list[Subject], timed: str, deploy: str, gates) -> list[Subject]:
    """``benchmark.timed``: all (every subject the accuracy chain times) or deploy (the student's deploy artifact, and
    the teacher's baseline row when ``min_speedup_vs_teacher`` is set: its ONNX export if any, else PyTorch)."""
    if timed == "all":
        return subjects
    keep = {("student", deploy)}
    if gates.min_speedup_vs_teacher is not None:
        teachers = {s.artifact for s in subjects if s.model == "teacher"}
        keep |= {("teacher", next((a for a in TEACHER_BASELINES if a in teachers), None))}
    return [replace(s, timed=s.timed and (s.model, s.artifact) in keep) for s in subjects]


def validation_split(data_dir: Path, deploy: str) -> tuple[np.ndarray | None, np.ndarray, dict[str, Any]]:
    """The validation images and labels, and the ``validation`` record the deploy artifact's top-1 goes into (its
    ``error`` says why there is none: an empty split is said, not scored as 0)."""
    from pipeline.data import load_split

    record: dict[str, Any] = {"split": "val", "artifact": deploy, "images": 0, "top1": None, "error": None}
    try:
        x, y = load_split(data_dir, "val")
    except Exception as exc:
        x, y = None, np.zeros(0, np.int64)
        record["error"] = f"the validation split could not be read: {_describe(exc)}"
    record["images"] = int(len(y))
    if len(y) == 0 and record["error"] is None:
        record["error"] = "the validation split is empty (data.val_fraction is 0)"
    return x, y, record


def validation_top1(runtime, x: np.ndarray | None, y: np.ndarray) -> dict[str, Any]:
    """Top-1 of the deploy artifact on the validation split (nothing to add where the split is empty)."""
    if x is None or len(y) == 0:
        return {}
    return {"top1": float(np.mean(predict_classes(runtime, x) == y)), "error": None}


def run_command(ctx) -> str:
    """Which command's stages these are: "run" (trained here), "export" (a given student: no teacher, nothing
    trained) or "benchmark" (given artifacts only); ``pipeline.benchmark.gates.NOT_APPLICABLE`` reads it."""
    if "teacher" in ctx.inputs:
        return "run"
    return "export" if "distill" in ctx.inputs else "benchmark"


def collect_subjects(ctx) -> tuple[list[Subject], dict[str, str]]:
    """Checkpoints and exported artifacts to score, and an error for each format asked for but absent.

    ``python -m pipeline export`` runs have no teacher and no QAT stage (and no PyTorch student when the
    model came as ONNX); ``python -m pipeline benchmark`` runs have only the given artifacts."""
    subjects = []
    if "teacher" in ctx.inputs:
        subjects.append(Subject("teacher_fp32", "teacher", "pytorch", ctx.input("teacher") / TEACHER_CHECKPOINT))
    if "distill" in ctx.inputs and (run_command(ctx) == "run" or (ctx.input("distill") / STUDENT_CHECKPOINT).is_file()):
        subjects.append(Subject("student_fp32", "student", "pytorch", ctx.input("distill") / STUDENT_CHECKPOINT))
    teacher_onnx = ctx.input("export") / TEACHER_ONNX
    if teacher_onnx.is_file():
        subjects.append(Subject("teacher_onnx", "teacher", "onnx", teacher_onnx))
    if export_source_of(ctx)[0] == "qat":
        subjects.append(Subject("student_qat_fp32", "student", "pytorch", ctx.input("qat") / STUDENT_CHECKPOINT, timed=False))
    exported = read_artifacts(ctx.input("export"))
    errors: dict[str, str] = {}
    wanted = list(exported) if run_command(ctx) == "benchmark" else ctx.cfg.export.formats  # benchmark: what was given
    for key in wanted:
        if key in exported:
            subjects.append(Subject(key, "student", key, ctx.input("export") / exported[key]))
        else:
            errors[key] = f"not exported (see {ctx.input('export').name}/manifest.json)"
    for key, rel in exported.items():  # exported under a key the config does not list (kept, not hidden)
        if key not in wanted:
            subjects.append(Subject(key, "student", key, ctx.input("export") / rel))
    return subjects, errors


def export_source_of(ctx) -> tuple[str, str]:
    """Which weights the export stage quantised ("qat" | "distill") and why, as it recorded them."""
    metrics = (Manifest.read(ctx.input("export")) or Manifest("export", "", {})).metrics
    return metrics.get("source", "distill"), metrics.get("source_reason", "")


def fakequant_predictions(ctx, n: int) -> np.ndarray | str | None:
    """Top-1 of the QAT fake-quant model on the first ``n`` test images; an error string if unusable."""
    if "qat" not in ctx.inputs:
        return None  # export/benchmark commands: no QAT stage
    path = ctx.input("qat") / FAKEQUANT_LOGITS
    qat = Manifest.read(ctx.input("qat"))
    if qat is not None and qat.metrics.get("enabled") is False:
        return None  # QAT off: there is no fake-quant model
    if not path.is_file():
        return f"{path.name} missing in {ctx.input('qat').name}"
    logits = np.load(path)
    if logits.ndim != 2 or len(logits) < n:
        return f"{path.name}: shape {logits.shape}, expected at least {n} test rows"
    return logits[:n].argmax(axis=1).astype(np.int64)


def model_summaries(ctx, input_shape: tuple[int, ...]) -> dict[str, dict]:
    """Params and MACs of teacher and student (exported artifacts inherit the student's)."""
    from pipeline.benchmark.complexity import checkpoint_summary

    stages = ("qat", "distill") if ctx.cfg.export.source == "qat" else ("distill",)
    source = next((p for s in stages if s in ctx.inputs and (p := ctx.input(s) / STUDENT_CHECKPOINT).is_file()), None)
    checkpoints = {"teacher": ctx.input("teacher") / TEACHER_CHECKPOINT} if "teacher" in ctx.inputs else {}
    if source is not None or run_command(ctx) == "run":  # a given ONNX model has no checkpoint to summarise
        checkpoints["student"] = source or ctx.input("distill") / STUDENT_CHECKPOINT
    out = {}
    for name, path in checkpoints.items():
        try:
            out[name] = checkpoint_summary(path, input_shape)
        except Exception as exc:
            out[name] = {"arch": None, "params": None, "macs": None, "file": path.name, "size_bytes": None, "error": _describe(exc)}
    return out


def target_summary(ctx, name: str) -> dict[str, Any]:
    m = Manifest.read(ctx.input("target")) if "target" in ctx.inputs else None
    metrics = dict(m.metrics) if m else {}
    metrics.setdefault("verdict", None)
    return {**metrics, "name": name}


def host_environment() -> dict[str, Any]:
    """CPU, cores, OS and runtime versions of this machine (the device runner's block, plus tool versions)."""
    from pipeline.artifacts import tool_versions
    from pipeline.machine import describe_device

    env = describe_device()
    env.pop("coral_usb", None)
    env["tools"] = tool_versions()
    return env


def stage_metrics(results: dict) -> dict:
    """What lands in the manifest: headline numbers first (run.py prints the first four), then the gates."""
    deploy = results["run"]["deploy_artifact"]
    acc = {r["stage"]: r["top1"] for r in results["accuracy"]}
    lat = next((r for r in results["latency"] if r["model"] == "student" and r["artifact"] == deploy
                and r["threads"] == results["run"]["gate_threads"] and not r["error"]), None)
    return {
        "deploy_accuracy": acc.get(deploy),
        "teacher_accuracy": acc.get("teacher_fp32"),
        "deploy_p50_ms": lat["latency_ms"]["p50"] if lat else None,
        "gates_failed": sum(gate_failed(g) for g in results["gates"]),
        "deploy_val_top1": results["validation"]["top1"],  # what a student search ranks by
        "val_images": results["validation"]["images"],
        "accuracy": acc,
        "failed_rows": sum(1 for r in results["latency"] if r["error"]),
        "gates": results["gates"],
    }


def engine_info(runtime) -> dict[str, Any]:
    """The runtime's reportable settings (precision hint, delegates, I/O dtypes), JSON scalars only."""
    info = getattr(runtime, "info", None) or {}
    return {str(k): v for k, v in info.items() if isinstance(v, (str, int, float, bool)) or v is None}


def _latency_row(subj: Subject, threads: int, host: str, models: dict, deploy: str, engine: str | None) -> dict[str, Any]:
    model = models.get(subj.model, {})
    return {
        "where": "host",
        "device": host,
        "model": subj.model,
        "artifact": subj.artifact,
        "format": subj.artifact,
        "file": subj.path.name,
        "engine": engine,
        "threads": int(threads),
        "threads_used": resolve_threads(threads),
        "deploy": subj.model == "student" and subj.artifact == deploy,
        "size_bytes": artifact_size(subj.path),
        "params": model.get("params"),
        "macs": model.get("macs"),
        "error": None,
    }


def _measure_into(row: dict, subj: Subject, x: np.ndarray, warmup: int, rule: StopRule, samples: dict) -> None:
    try:
        res = measure_latency(lambda: open_runtime(subj.path, threads=row["threads"]), x, warmup=warmup, rule=rule,
                              keep_samples=True)
    except Exception as exc:
        row["error"] = _describe(exc)
        console.print(f"  [red]{subj.model} {subj.artifact} threads={row['threads']}: {row['error']}[/red]")
        return
    runtime = res.pop("runtime")
    row["engine_info"] = engine_info(runtime) or row.get("engine_info", {})
    _close(runtime)
    samples[sample_key(row)] = res.pop("samples_ms").astype(np.float32)
    row.update(res)
    lat, prec = row["latency_ms"], row["latency_precision"]
    console.print(f"  {subj.model} {subj.artifact} threads={row['threads']}: p50 {lat['p50']:.3f} ms, "
                  f"p90 {lat['p90']:.3f} ms {precision_text(prec)} ({row['runs']} runs in {row['measured_s']:.2f}s, "
                  f"init {row['init_ms']:.1f} ms)")


def _close(runtime) -> None:
    close = getattr(runtime, "close", None)
    if callable(close):
        close()


def _describe(exc: BaseException) -> str:
    text = one_line(exc, 300)
    return text if isinstance(exc, PipelineError) else f"{type(exc).__name__}: {text}"


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    import io

    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()

