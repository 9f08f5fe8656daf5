"""Before training: export the UNTRAINED student and run the target's checker, so an architecture the
target cannot run fails in seconds instead of after the teacher and distillation.

Mapping to an accelerator depends on the graph (ops, shapes, dtypes), not on the weights, so
random weights and random calibration data answer the question. The result is cached under
``runs/<name>/cache/`` by a hash of what shapes it (student spec, input shape, classes,
target rules, checker version): a re-run is instant.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

import pipeline
from pipeline.artifacts import atomic_write_json, hash_json, read_json
from pipeline.errors import PipelineError
from pipeline.fs import stage_write_errors
from pipeline.lock import run_lock

CHECK_VERSION = 1  # bump when a checker's rules change, so cached verdicts are recomputed
CALIBRATION_IMAGES = 8


def precheck(cfg, force: bool = False, shared: Path | None = None) -> dict:
    """Check ``cfg.student`` against ``cfg.target`` before any training; print one line; raise if it cannot run.

    ``force`` (``python -m pipeline check``): also when ``target.check_before_training`` is
    false. ``shared``: a second cache folder that other runs read too (a sweep's trials check each student
    spec once). Returns the checker's report plus ``target``, ``input_shape``, ``seconds``, ``cached``.
    """
    from rich.markup import escape

    from pipeline.data import dataset_shape
    from pipeline.console import console
    from pipeline.target import TARGETS
    from pipeline.target.device import device_status

    if not (force or cfg.target.check_before_training):
        return {"skipped": True}
    rules = TARGETS[cfg.target.name]
    input_shape, num_classes = dataset_shape(cfg.data)
    key = hash_json({
        "student": cfg.student.model_dump(mode="json"), "input_shape": list(input_shape), "num_classes": num_classes,
        "rules": {k: getattr(rules, k) for k in ("name", "per_channel", "io_dtype", "deploy_artifact", "runtime", "device")},
        "check_version": CHECK_VERSION, "pipeline": pipeline.__version__,
    })
    cache_file = Path(cfg.run_dir) / "cache" / f"precheck-{rules.name}-{key[:16]}.json"
    shared_file = Path(shared) / cache_file.name if shared is not None else None
    if not cache_file.is_file() and shared_file is not None and shared_file.is_file():
        atomic_write_json(cache_file, read_json(shared_file))
    if cache_file.is_file():
        report = {**read_json(cache_file), "cached": True}
    else:
        started = time.perf_counter()
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        # inside the run folder, named like a stage's .partial: a killed check leaves nothing outside it,
        # and the next run (holding the run folder's lock) deletes it
        with run_lock(cfg.run_dir), tempfile.TemporaryDirectory(prefix="precheck-", suffix=".partial",
                                                                dir=cache_file.parent) as tmp, stage_write_errors(Path(tmp)):
            report = check_untrained(cfg.student, input_shape, num_classes, rules, Path(tmp))
        report.update(target=rules.name, student=cfg.student.arch, input_shape=list(input_shape),
                      seconds=round(time.perf_counter() - started, 1))
        atomic_write_json(cache_file, report)
        if shared_file is not None:
            atomic_write_json(shared_file, report)
        report["cached"] = False

    when = "cached" if report["cached"] else f"{report['seconds']:.0f}s"
    style = "green" if report["passed"] else "bold red"
    console.print(f"[{style}]precheck {rules.name}[/{style}] ({cfg.student.arch}, untrained, {when}): {escape(report['summary'])}")
    device = device_status(rules)
    if device["message"] and not report["cached"]:  # once per fresh check; the target stage repeats it in the report
        console.print(f"[yellow]{escape(device['message'])}[/yellow]")
    if not report["passed"]:
        raise PipelineError(failure_message(report, rules.name, cfg.student.arch))
    return report


def check_untrained(student, input_shape: tuple[int, int, int], num_classes: int, rules, workdir: Path) -> dict:
    """Build the student with random weights, export its deploy artifact into ``workdir``, run the checker."""
    from pipeline.models import build_model

    model = build_model(student.arch, num_classes, input_shape[0], student.arch_args).eval()
    artifact = export_untrained(model, input_shape, num_classes, rules, workdir)
    if rules.checker is None:
        return {"verdict": "unchecked", "passed": True, "summary": f"no checker for {rules.name}; {artifact.name} exported"}
    return rules.checker(artifact, rules)


def export_untrained(model, input_shape: tuple[int, int, int], num_classes: int, rules, workdir: Path) -> Path:
    """The deploy artifact of an untrained model, by the export stage's own walk of the format table (quietly)."""
    from rich.console import Console

    from pipeline.export.common import ExportInputs, ExportState
    from pipeline.export.walk import export_formats
    from pipeline.formats import FORMATS

    key = rules.deploy_artifact
    if key not in FORMATS or not FORMATS[key].exported:
        raise PipelineError(f"target {rules.name}: deploy_artifact '{key}' is not a format the export stage writes "
                            f"(known: {', '.join(k for k, f in FORMATS.items() if f.exported)})")
    calibration = np.random.default_rng(0).standard_normal((CALIBRATION_IMAGES, *input_shape)).astype(np.float32)
    channels = input_shape[0]
    preprocess = {"image_size": input_shape[-1], "channels": channels, "mean": [0.0] * channels, "std": [1.0] * channels}
    inputs = ExportInputs(workdir, None, "untrained", tuple(input_shape), num_classes, preprocess, [], calibration, None,
                          rules.per_channel, rules.io_dtype, Console(quiet=True), model=model)
    state = ExportState(console=inputs.console, class_names=[])
    export_formats(inputs, state, [key])
    return state.paths[key]


def failure_message(report: dict, target: str, arch: str) -> str:
    """One line: what cannot run (the first unmapped op and why), and how to skip this check."""
    first = report.get("first_unmapped")
    if report.get("rejected"):
        why = report["rejected"]
    elif first:
        why = f"first unmapped op #{first['index']} {first['op']}: {first['reason']}"
        if report.get("cpu_from") is not None:
            why += f" (ops from #{report['cpu_from']} on would fall back to the CPU)"
    else:
        why = "; ".join(report.get("problems") or [report.get("summary", "")])
    from pipeline.target import TARGETS

    variant = TARGETS[target].friendly_alternative(arch) if target in TARGETS else None
    instead = f"try student.arch: {variant}, which {target} runs fully, or change" if variant else "change"
    return (f"precheck: student '{arch}' cannot run fully on target {target} ({report.get('verdict')}): {why}; "
            f"{instead} student.arch/arch_args, or set target.check_before_training: false to train anyway")
