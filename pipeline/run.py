"""The fixed stage sequence and the resume loop: data → teacher → distill → qat → export → target → benchmark → report.

Every stage is a function ``run(ctx: StageContext) -> dict`` (its metrics) in
``pipeline/<stage>/stage.py``. It reads its config section(s) and the folders of earlier
stages, writes files only into ``ctx.out``, and never hands in-memory objects on. The loop
below decides, from each stage's cache key, whether to reuse its folder or run it again.
"""

from __future__ import annotations

import importlib
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from rich.console import Console

import pipeline
from pipeline.artifacts import Manifest, hash_json, hash_outputs, now, tool_versions, verify_outputs
from pipeline.config import Config
from pipeline.errors import GateFailure, PipelineError
from pipeline.fs import stage_write_errors
from pipeline.inputs import external_inputs
from pipeline.lock import run_lock
from pipeline.run_folder import record_config

console = Console(stderr=True, highlight=False, soft_wrap=True)


@dataclass(frozen=True)
class Stage:
    name: str
    sections: tuple[str, ...]  # config sections that shape this stage's outputs

    @property
    def folder(self) -> str:
        return f"{STAGES.index(self) + 1:02d}_{self.name}"

    def function(self) -> Callable[[StageContext], dict[str, Any]]:
        return importlib.import_module(f"pipeline.{self.name}.stage").run


STAGES: list[Stage] = [
    Stage("data", ("data",)),
    Stage("teacher", ("teacher",)),
    Stage("distill", ("student", "distill")),
    Stage("qat", ("qat", "target")),
    Stage("export", ("export", "target")),
    Stage("target", ("target",)),
    Stage("benchmark", ("benchmark", "target")),
    Stage("report", ("report",)),
]
STAGE_NAMES = [s.name for s in STAGES]


@dataclass
class StageContext:
    cfg: Config
    out: Path  # this stage's folder (still .partial while it runs)
    inputs: dict[str, Path]  # finished upstream stage folders, by stage name
    cache: Path  # runs/<name>/cache: teacher-side artifacts shared by several student runs

    def input(self, stage: str) -> Path:
        return self.inputs[stage]


def stage_dir(cfg: Config, stage: str) -> Path:
    return cfg.run_dir / next(s for s in STAGES if s.name == stage).folder


def cache_key(cfg: Config, stage: Stage, inputs: dict[str, str]) -> str:
    """Hash of the config sections of this stage and every earlier one (a stage may read them, e.g. the teacher
    reads data.batch_size), the upstream outputs' hashes, what it reads from outside the run, and the version."""
    upstream = STAGES[: STAGES.index(stage) + 1]
    sections = {name: getattr(cfg, name).model_dump(mode="json") for s in upstream for name in s.sections}
    external = external_inputs(cfg, stage.name)
    return hash_json({"stage": stage.name, "sections": sections, "inputs": inputs, "external": external,
                      "version": pipeline.__version__})


def run_pipeline(
    cfg: Config,
    *,
    start: str | None = None,
    until: str | None = None,
    fresh: bool = False,
) -> dict[str, Manifest]:
    """Run stages in order, reusing every finished stage whose cache key still matches.

    ``start`` forces that stage (and so everything after it) to re-run; ``until`` stops after
    that stage; ``fresh`` ignores every cache. One run at a time per run folder (``pipeline.lock``).
    """
    for flag, value in (("--from", start), ("--until", until)):
        if value is not None and value not in STAGE_NAMES:
            raise PipelineError(f"{flag}: unknown stage '{value}' (stages: {', '.join(STAGE_NAMES)})")
    if start and until and STAGE_NAMES.index(start) > STAGE_NAMES.index(until):
        raise PipelineError(f"--from {start} comes after --until {until}: nothing would run (stages: {', '.join(STAGE_NAMES)})")
    with run_lock(cfg.run_dir), stage_write_errors(cfg.run_dir):
        return _run_stages(cfg, start=start, until=until, fresh=fresh)


def _run_stages(cfg: Config, *, start: str | None, until: str | None, fresh: bool) -> dict[str, Manifest]:
    last = STAGE_NAMES.index(until) if until else len(STAGES) - 1
    forced = STAGE_NAMES.index(start) if start else (0 if fresh else len(STAGES))
    run_dir = cfg.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "cache").mkdir(exist_ok=True)
    record_config(cfg)  # what this folder now holds: the next run of another config goes elsewhere (run_folder.py)
    for stale in (run_dir / "cache").glob("*.partial"):  # a killed check's work folder: no other run uses it (lock)
        shutil.rmtree(stale, ignore_errors=True)

    manifests: dict[str, Manifest] = {}
    inputs: dict[str, Path] = {}
    for i, stage in enumerate(STAGES[: last + 1]):
        folder = run_dir / stage.folder
        key = cache_key(cfg, stage, {name: m.digest for name, m in manifests.items()})
        old = Manifest.read(folder)
        if i < forced and old is not None and old.cache_key == key and verify_outputs(folder, old):
            console.print(f"[dim]✓ {stage.folder}: cached ({_summary(old.metrics)})[/dim]")
        else:
            if stage.name in ("teacher", "distill") and cfg.target.check_before_training:
                _precheck(cfg)  # cached by student spec, so the second call is free
            with stage_write_errors(folder.with_name(folder.name + ".partial")):
                old = _execute(cfg, stage, key, folder, dict(inputs), manifests)
        manifests[stage.name] = old
        inputs[stage.name] = folder
    _raise_on_failed_gates(manifests)
    return manifests


def _execute(cfg: Config, stage: Stage, key: str, folder: Path, inputs: dict[str, Path], upstream: dict[str, Manifest]) -> Manifest:
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    console.print(f"[bold]▶ {stage.folder}[/bold]")
    started = now()
    ctx = StageContext(cfg=cfg, out=partial, inputs=inputs, cache=cfg.run_dir / "cache")
    metrics = stage.function()(ctx) or {}
    manifest = Manifest(
        stage=stage.name,
        cache_key=key,
        inputs={name: m.digest for name, m in upstream.items()},
        outputs=hash_outputs(partial),
        metrics=metrics,
        tools=tool_versions(),
        started=started,
        seconds=round(now() - started, 3),
    )
    manifest.write(partial)
    # swap in the finished folder: the old one is removed only once the new one is complete
    if folder.exists():
        shutil.rmtree(folder)
    partial.rename(folder)
    console.print(f"[green]✓ {stage.folder}[/green] in {manifest.seconds:.1f}s ({_summary(metrics)})")
    return manifest


def _precheck(cfg: Config) -> None:
    """Catch a student the target cannot run before spending time on the teacher and distillation."""
    from pipeline.target.check import precheck

    precheck(cfg)


def _raise_on_failed_gates(manifests: dict[str, Manifest]) -> None:
    """Exit 3 once the report is written if its verdict is FAIL: a gate, the target check, the deploy artifact's
    export fidelity or op check, the vendor compiler or a device run failed (``pipeline.report.build.verdict``)."""
    report = manifests.get("report")
    if report is not None and report.metrics.get("verdict") == "FAIL":
        raise GateFailure("; ".join(report.metrics.get("failures") or ["the report's verdict is FAIL"]))


def _summary(metrics: dict[str, Any]) -> str:
    shown = [f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items() if isinstance(v, (int, float, str)) and not isinstance(v, bool)]
    return ", ".join(shown[:4]) or "no metrics"
