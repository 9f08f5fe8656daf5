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

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

import pipeline
from pipeline.artifacts import artifact_size, atomic_write_bytes, atomic_write_json
from pipeline.benchmark.accuracy import accuracy_rows, predict_classes
from pipeline.benchmark.gates import evaluate_gates, gate_failed, gate_threads
from pipeline.benchmark.latency import StopRule, measure_latency, resolve_threads
from pipeline.benchmark.rows import precision_text, sample_key
from pipeline.benchmark.subjects import (Subject, collect_subjects, describe, export_source_of, fakequant_predictions,
                                         model_summaries, target_summary, timed_subjects)
from pipeline.errors import PipelineError
from pipeline.stage_context import StageContext
from pipeline.stage_metrics import BenchmarkMetrics
from pipeline.stages import OP_TIME_FILE, RESULTS_FILE, SAMPLES_FILE

RESULTS_KIND = "benchmark-results"
console = Console(stderr=True, highlight=False, soft_wrap=True)


def open_runtime(path: Path, threads: int):
    """The runtime for one file (``pipeline.runtimes.load``); tests replace this function."""
    from pipeline.runtimes import load

    return load(Path(path), threads=threads)


def run(ctx: StageContext) -> BenchmarkMetrics:
    from pipeline.data import load_split, read_split_info
    from pipeline.target import TARGETS

    bench = ctx.cfg.benchmark
    rules = TARGETS[ctx.cfg.target.name]
    info = read_split_info(ctx.input("data"))
    x, y = load_split(ctx.input("data"), "test")
    if bench.max_images:
        x, y = x[: bench.max_images], y[: bench.max_images]
    if len(y) == 0:
        raise PipelineError("data: the test split is empty; set data.test_fraction > 0")

    subjects, errors = collect_subjects(ctx)
    subjects = timed_subjects(subjects, bench.timed, rules.deploy_artifact, bench.gates)
    scores = Scores(errors=errors, models=model_summaries(ctx, tuple(info["input_shape"])), host=host_environment())
    scores.validation_images(ctx.input("data"), rules.deploy_artifact)
    for subj in subjects:
        scores.score(subj, x, bench, rules.deploy_artifact)
    scores.missing_rows(subjects, bench, rules.deploy_artifact)
    acc = scores.accuracy(ctx, y, next((s.stage for s in subjects if s.stage in ("student_qat_fp32", "student_fp32")), "onnx"))
    threads = gate_threads(list(bench.threads), rules.threads)
    gates = evaluate_gates(bench.gates.model_dump(), accuracy=acc, latency=scores.rows, deploy_artifact=rules.deploy_artifact,
                           threads=threads, target_threads=rules.threads, accelerator=rules.accelerator, command=ctx.command,
                           timed=bench.timed)
    results = results_record(ctx, rules, info, int(len(y)), threads, scores, acc, gates)
    atomic_write_json(ctx.out / RESULTS_FILE, results)
    atomic_write_bytes(ctx.out / SAMPLES_FILE, _npz_bytes(scores.samples))
    per_op = op_time_record(subjects, x)
    atomic_write_json(ctx.out / OP_TIME_FILE, per_op)
    return stage_metrics(results, per_op)


def op_time_record(subjects: list[Subject], x: np.ndarray) -> dict[str, Any]:
    """Per-op time of each timed int8 artifact (``runtimes.op_time``: where the engine profiles, else why not); a
    profile that fails is its row's reason, never the stage's failure."""
    from pipeline.runtimes.op_time import profile, profiled

    return {s.artifact: profile(s.path, x) for s in subjects if s.timed and s.model == "student" and profiled(s.artifact)}


@dataclass
class Scores:
    """What the stage measured so far: each subject's predictions and engine, the latency rows and their samples."""

    errors: dict[str, str]  # stage -> why it has no numbers
    models: dict[str, dict]
    host: dict[str, Any]
    preds: dict[str, np.ndarray] = field(default_factory=dict)
    engines: dict[str, str] = field(default_factory=dict)
    infos: dict[str, dict] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list)
    samples: dict[str, np.ndarray] = field(default_factory=dict)
    validation: dict[str, Any] = field(default_factory=dict)
    val_x: np.ndarray | None = None
    val_y: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    def validation_images(self, data_dir: Path, deploy: str) -> None:
        self.val_x, self.val_y, self.validation = validation_split(data_dir, deploy)

    def score(self, subj: Subject, x: np.ndarray, bench, deploy: str) -> None:
        """Top-1 of one subject (and the deploy artifact's on the validation split), then its latency rows if timed."""
        from pipeline import runtimes

        try:
            runtime = open_runtime(subj.path, threads=0)
            try:
                self.engines[subj.stage] = runtimes.engine_name(runtime)
                self.infos[subj.stage] = engine_info(runtime)
                self.preds[subj.stage] = predict_classes(runtime, x)
                if subj.model == "student" and subj.artifact == deploy:
                    self.validation.update(validation_top1(runtime, self.val_x, self.val_y))
            finally:
                _close(runtime)
        except Exception as exc:  # one broken artifact must not lose the others' numbers
            self.errors[subj.stage] = describe(exc)
        if not subj.timed:
            return
        for threads in bench.threads:
            row = _latency_row(subj, threads, self.host["name"], self.models, deploy, self.engines.get(subj.stage))
            row["engine_info"] = self.infos.get(subj.stage, {})
            if subj.stage in self.errors:
                row["error"] = self.errors[subj.stage]
            else:
                _measure_into(row, subj, x, bench.warmup, stop_rule(bench), self.samples)
            self.rows.append(row)

    def missing_rows(self, subjects: list[Subject], bench, deploy: str) -> None:
        """The deploy artifact's validation error if it had none; a failed row per thread setting for each format asked
        for but not exported (where it would be timed)."""
        if self.validation["top1"] is None and self.validation["error"] is None:
            self.validation["error"] = self.errors.get(deploy) or f"{deploy}: not exported"
        for stage in self.errors:
            if not any(s.stage == stage for s in subjects) and (bench.timed == "all" or stage == deploy):
                for threads in bench.threads:
                    row = _latency_row(Subject(stage, "student", stage, Path(stage)), threads, self.host["name"], self.models,
                                       deploy, None)
                    self.rows.append({**row, "error": self.errors[stage], "file": None, "size_bytes": None})

    def accuracy(self, ctx: StageContext, y: np.ndarray, export_source: str) -> list[dict[str, Any]]:
        """The accuracy chain (with the QAT fake-quant model's logits), and each latency row's top-1."""
        fq = fakequant_predictions(ctx, len(y))
        if isinstance(fq, str):
            self.errors["student_fakequant"] = fq
        elif fq is not None:
            self.preds["student_fakequant"] = fq
            self.engines["student_fakequant"] = "PyTorch fake-quant (QAT stage)"
        acc = accuracy_rows(self.preds, y, engines=self.engines, errors=self.errors, export_source=export_source)
        for r in acc:
            if ctx.command != "run" and r["stage"] == "student_fp32":  # the user's model, not a distilled one
                r["label"] = "student fp32 as given (PyTorch)"
        top1 = {(r["model"], r["artifact"]): r["top1"] for r in acc if r["stage"] not in ("student_qat_fp32", "student_fakequant")}
        for row in self.rows:
            row["accuracy"] = top1.get((row["model"], row["artifact"]))
            row["images"] = int(len(y))
        return acc


def results_record(ctx: StageContext, rules, info: dict[str, Any], images: int, threads: int | None, scores: Scores,
                   acc: list[dict[str, Any]], gates: list[dict[str, Any]]) -> dict[str, Any]:
    """benchmark.json: the run, data, environment and settings, then the rows, the gates and the target's record."""
    bench = ctx.cfg.benchmark
    source, reason = export_source_of(ctx)
    return {
        "kind": RESULTS_KIND,
        "version": 1,
        "pipeline_version": pipeline.__version__,
        "run": {"name": ctx.cfg.name, "command": ctx.command, "target": rules.name, "deploy_artifact": rules.deploy_artifact,
                "export_source": source, "export_source_reason": reason, "gate_threads": threads},
        "data": {"dataset": info.get("dataset"), "split": "test", "images": images, "num_classes": info.get("num_classes"),
                 "input_shape": list(info["input_shape"])},
        "environment": {"host": scores.host},
        "settings": {"batch": 1, "warmup": bench.warmup, **stop_rule(bench).settings(), "timed": bench.timed,
                     "threads": list(bench.threads), "max_images": bench.max_images, "timer": "time.perf_counter",
                     "method": "pipeline.benchmark.latency.measure_latency"},
        "models": scores.models,
        "accuracy": acc,
        "validation": scores.validation,
        "latency": scores.rows,
        "gates": gates,
        "target": target_summary(ctx, rules.name),
    }


def stop_rule(bench) -> StopRule:
    """The timing stopping rule of ``benchmark.*`` (``latency.StopRule``)."""
    return StopRule(min_runs=bench.min_runs, min_seconds=bench.min_seconds, precision_pct=bench.precision_pct,
                    max_seconds=bench.max_seconds)


def validation_split(data_dir: Path, deploy: str) -> tuple[np.ndarray | None, np.ndarray, dict[str, Any]]:
    """The validation images and labels, and the ``validation`` record the deploy artifact's top-1 goes into (its
    ``error`` says why there is none: an empty split is said, not scored as 0)."""
    from pipeline.data import load_split

    record: dict[str, Any] = {"split": "val", "artifact": deploy, "images": 0, "top1": None, "error": None}
    try:
        x, y = load_split(data_dir, "val")
    except Exception as exc:
        x, y = None, np.zeros(0, np.int64)
        record["error"] = f"the validation split could not be read: {describe(exc)}"
    record["images"] = int(len(y))
    if len(y) == 0 and record["error"] is None:
        record["error"] = "the validation split is empty (data.val_fraction is 0)"
    return x, y, record


def validation_top1(runtime, x: np.ndarray | None, y: np.ndarray) -> dict[str, Any]:
    """Top-1 of the deploy artifact on the validation split (nothing to add where the split is empty)."""
    if x is None or len(y) == 0:
        return {}
    return {"top1": float(np.mean(predict_classes(runtime, x) == y)), "error": None}


def host_environment() -> dict[str, Any]:
    """CPU, cores, OS and runtime versions of this machine (the device runner's block, plus tool versions)."""
    from pipeline.artifacts import tool_versions
    from pipeline.machine import describe_device

    env = describe_device()
    env.pop("coral_usb", None)
    env["tools"] = tool_versions()
    return env


def stage_metrics(results: dict, per_op: dict[str, Any] | None = None) -> BenchmarkMetrics:
    """What lands in the manifest: headline numbers first (run.py prints the first four), then the gates."""
    deploy = results["run"]["deploy_artifact"]
    acc = {r["stage"]: r["top1"] for r in results["accuracy"]}
    lat = next((r for r in results["latency"] if r["model"] == "student" and r["artifact"] == deploy
                and r["threads"] == results["run"]["gate_threads"] and not r["error"]), None)
    return BenchmarkMetrics(
        deploy_accuracy=acc.get(deploy),
        teacher_accuracy=acc.get("teacher_fp32"),
        deploy_p50_ms=lat["latency_ms"]["p50"] if lat else None,
        gates_failed=sum(gate_failed(g) for g in results["gates"]),
        deploy_val_top1=results["validation"]["top1"],
        val_images=results["validation"]["images"],
        accuracy=acc,
        failed_rows=sum(1 for r in results["latency"] if r["error"]),
        gates=results["gates"],
        op_time_ms={k: round(t["total_ms"], 5) if t.get("measured") else None for k, t in (per_op or {}).items()},
    )


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
        row["error"] = describe(exc)
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


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    import io

    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()

