"""The stage sequence as data: each stage's name, the config sections in its cache key, its folder.

The name is also its config section, its module (``pipeline/<name>/stage.py``) and its folder
(``NN_<name>``). A leaf (stdlib only): the run loop (``pipeline.run``) runs this sequence, and
``pipeline.run_folder`` reads a run's folders by it, without either importing the other.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable


@dataclass(frozen=True)
class Stage:
    name: str
    sections: tuple[str, ...]  # config sections that shape this stage's outputs
    trains: bool = False  # runs on every rank under torchrun (the others run on rank 0 alone)
    replaces: str | None = None  # (export/benchmark commands) the training stage whose number and input name it takes
    module: str | None = None  # where its run() lives; default pipeline.<name>.stage

    @property
    def folder(self) -> str:
        return f"{STAGE_NAMES.index(self.provides) + 1:02d}_{self.name}"

    @property
    def provides(self) -> str:
        """The name later stages read this stage's folder by (``ctx.input(...)``)."""
        return self.replaces or self.name

    def function(self) -> Callable[[Any], dict[str, Any]]:
        """Its ``run(ctx: pipeline.run.StageContext) -> metrics``, imported when the stage runs."""
        return importlib.import_module(self.module or f"pipeline.{self.name}.stage").run


STAGES: list[Stage] = [
    Stage("data", ("data",)),
    Stage("teacher", ("teacher", "train"), trains=True),
    Stage("distill", ("student", "distill", "train"), trains=True),
    Stage("qat", ("qat", "target", "train"), trains=True),
    Stage("export", ("export", "target")),
    Stage("target", ("target",)),
    Stage("benchmark", ("benchmark", "target")),
    Stage("report", ("report",)),
]
STAGE_NAMES = [s.name for s in STAGES]
STAGE_FOLDERS = {s.name: s.folder for s in STAGES}  # "export" -> "05_export"

# Each stage's output files, by the names later stages and commands read them by (the folder is ``Stage.folder``).
SPLIT_FILE, CALIBRATION_FILE = "split.json", "calibration.npy"  # data: the split, the int8 calibration images
TEACHER_CHECKPOINT = "teacher.pt"  # teacher
STUDENT_CHECKPOINT = "student.pt"  # distill, qat and student (the given model) all write the student here
STUDENT_ONNX = "student.onnx"  # student: a given ONNX model
GUARD_FILE = "guard.json"  # qat: the guard's numbers and which weights to export
FAKEQUANT_LOGITS = "fakequant_test_logits.npy"  # qat: the fake-quant model's test logits
ARTIFACTS_FILE = "artifacts.json"  # export (and artifacts): {format key: path inside the folder}
# export: the teacher in ONNX, beside the student's artifacts but not one of them (artifacts.json lists the student
# only): the benchmark times it in ONNX Runtime, so "speed-up vs teacher" compares two models in one runtime instead
# of charging PyTorch's eager batch-1 overhead to the teacher.
TEACHER_ONNX = "teacher.onnx"
RESULTS_FILE, SAMPLES_FILE = "benchmark.json", "latency_samples.npz"  # benchmark
OP_TIME_FILE = "op_time.json"  # benchmark: {int8 format key: pipeline.runtimes.op_time's table}
REPORT_FILES = {"json": "report.json", "md": "report.md", "html": "report.html"}  # report (also in the run folder)


def stage_folder(run_dir: str | Path, name: str) -> Path:
    """``run_dir/NN_<name>`` for a stage of ``STAGES`` (``stage_folder(run, "export")`` is ``run/05_export``)."""
    return Path(run_dir) / STAGE_FOLDERS[name]

# `python -m pipeline export MODEL`: the user's model is the student; nothing is trained (no teacher, no QAT)
GIVEN_STUDENT = Stage("student", ("student",), replaces="distill")
# `python -m pipeline benchmark ARTIFACT…`: the user's files stand in for the export stage's
GIVEN_ARTIFACTS = Stage("artifacts", ("benchmark",), replaces="export", module="pipeline.benchmark.given")


def export_plan() -> list[Stage]:
    """data → student (the given model) → export → target → benchmark → report."""
    return [STAGES[0], GIVEN_STUDENT, *STAGES[4:]]


def benchmark_plan(with_target: bool) -> list[Stage]:
    """data → artifacts → (target, when the target's deploy format is among them) → benchmark → report."""
    return [STAGES[0], GIVEN_ARTIFACTS, *(s for s in STAGES[5:] if with_target or s.name != "target")]
