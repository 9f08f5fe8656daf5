"""What the benchmark stage scores and what it reads of the run: the checkpoints and artifacts, and the earlier stages' records.

``python -m pipeline export`` runs have no teacher and no QAT stage (and no PyTorch student when the model
came as ONNX); ``python -m pipeline benchmark`` runs have only the given artifacts. Which of them this is,
the stage context says (``StageContext.command``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.artifacts import Manifest, read_artifacts
from pipeline.benchmark.gates import TEACHER_BASELINES
from pipeline.errors import PipelineError, one_line
from pipeline.stage_metrics import ExportMetrics, QatMetrics
from pipeline.stages import FAKEQUANT_LOGITS, STUDENT_CHECKPOINT, TEACHER_CHECKPOINT, TEACHER_ONNX


@dataclass(frozen=True)
class Subject:
    """One thing to score: a stage of the accuracy chain, and (if ``timed``) a latency subject."""

    stage: str  # key in accuracy.stage_chain()
    model: str  # teacher | student
    artifact: str  # "pytorch" or an export format key
    path: Path
    timed: bool = True


def collect_subjects(ctx) -> tuple[list[Subject], dict[str, str]]:
    """Checkpoints and exported artifacts to score, and an error for each format asked for but absent."""
    subjects = []
    if "teacher" in ctx.inputs:
        subjects.append(Subject("teacher_fp32", "teacher", "pytorch", ctx.input("teacher") / TEACHER_CHECKPOINT))
    if "distill" in ctx.inputs and (ctx.command == "run" or (ctx.input("distill") / STUDENT_CHECKPOINT).is_file()):
        subjects.append(Subject("student_fp32", "student", "pytorch", ctx.input("distill") / STUDENT_CHECKPOINT))
    teacher_onnx = ctx.input("export") / TEACHER_ONNX
    if teacher_onnx.is_file():
        subjects.append(Subject("teacher_onnx", "teacher", "onnx", teacher_onnx))
    if export_record(ctx).source == "qat":
        subjects.append(Subject("student_qat_fp32", "student", "pytorch", ctx.input("qat") / STUDENT_CHECKPOINT, timed=False))
    exported = read_artifacts(ctx.input("export"))
    errors: dict[str, str] = {}
    wanted = list(exported) if ctx.command == "benchmark" else ctx.cfg.export.formats  # benchmark: what was given
    for key in wanted:
        if key in exported:
            subjects.append(Subject(key, "student", key, ctx.input("export") / exported[key]))
        else:
            errors[key] = f"not exported (see {ctx.input('export').name}/manifest.json)"
    for key, rel in exported.items():  # exported under a key the config does not list (kept, not hidden)
        if key not in wanted:
            subjects.append(Subject(key, "student", key, ctx.input("export") / rel))
    return subjects, errors


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


def export_record(ctx) -> ExportMetrics:
    """The export stage's metrics (or the given artifacts'), typed; an empty record where it wrote none."""
    manifest = Manifest.read(ctx.input("export"))
    return ExportMetrics.of(manifest.metrics if manifest else None)


def export_source_of(ctx) -> tuple[str, str]:
    """Which weights the export stage quantised ("qat" | "distill") and why, as it recorded them."""
    record = export_record(ctx)
    return record.source or "distill", record.source_reason or ""


def fakequant_predictions(ctx, n: int) -> np.ndarray | str | None:
    """Top-1 of the QAT fake-quant model on the first ``n`` test images; an error string if unusable."""
    if "qat" not in ctx.inputs:
        return None  # export/benchmark commands: no QAT stage
    path = ctx.input("qat") / FAKEQUANT_LOGITS
    qat = Manifest.read(ctx.input("qat"))
    if qat is not None and QatMetrics.of(qat.metrics).enabled is False:
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
    if source is not None or ctx.command == "run":  # a given ONNX model has no checkpoint to summarise
        checkpoints["student"] = source or ctx.input("distill") / STUDENT_CHECKPOINT
    out = {}
    for name, path in checkpoints.items():
        try:
            out[name] = checkpoint_summary(path, input_shape)
        except Exception as exc:
            out[name] = {"arch": None, "params": None, "macs": None, "file": path.name, "size_bytes": None, "error": describe(exc)}
    return out


def target_summary(ctx, name: str) -> dict[str, Any]:
    """The target stage's metrics as recorded (every key: the report lists the checker's counts), with its name."""
    m = Manifest.read(ctx.input("target")) if "target" in ctx.inputs else None
    metrics = dict(m.metrics) if m else {}
    metrics.setdefault("verdict", None)
    return {**metrics, "name": name}


def describe(exc: BaseException) -> str:
    """An error as one line; a pipeline error is its own words, anything else is prefixed with its type."""
    text = one_line(exc, 300)
    return text if isinstance(exc, PipelineError) else f"{type(exc).__name__}: {text}"
