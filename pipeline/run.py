"""The fixed stage sequence and the resume loop: data → teacher → distill → qat → export → target → benchmark → report.

Every stage is a function ``run(ctx: StageContext) -> XxxMetrics`` (its metrics, ``pipeline.stage_metrics``) in
``pipeline/<stage>/stage.py``. It reads its config section(s) and the folders of earlier
stages, writes files only into ``ctx.out``, and never hands in-memory objects on. The loop
below decides, from each stage's cache key, whether to reuse its folder or run it again.

Under ``torchrun`` (pipeline/train/distributed.py) every process runs this same loop. Rank 0
decides what is cached and alone writes stage folders and manifests; the stages that train run
on every rank (the others write into a scratch folder that is thrown away, so stage code has no
rank logic); the others run on rank 0 while the rest wait, and after the last training stage the
other ranks stop. World size, device and process-group timeout are not in any cache key, so a
result trained by N processes is a cache hit for one process later.

``python -m pipeline export MODEL`` and ``python -m pipeline benchmark ARTIFACT…`` run the same loop
over a shorter plan (``export_plan``, ``benchmark_plan``): a stage standing in for a training stage
takes its number and the name later stages read it by (``03_student`` is read as ``distill``).
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any, Callable

import pipeline
from pipeline.artifacts import Manifest, hash_json, hash_outputs, now, tool_versions, verify_outputs
from pipeline.config import Config
from pipeline.console import console
from pipeline.errors import GateFailure, PipelineError
from pipeline.fs import stage_write_errors
from pipeline.inputs import external_inputs
from pipeline.lock import run_lock
from pipeline.run_folder import record_config
from pipeline.stage_context import Command, StageContext  # noqa: F401  (StageContext: imported from here by tests)
from pipeline.stage_metrics import ReportMetrics, manifest_metrics
from pipeline.stages import STAGES, Stage, benchmark_plan, export_plan  # noqa: F401  (the plans: imported from here by the CLI)
from pipeline.store import SHARED_STAGES, StageStore


def stage_dir(cfg: Config, stage: str) -> Path:
    return cfg.run_dir / next(s for s in STAGES if s.name == stage).folder


def cache_key(cfg: Config, stage: Stage, inputs: dict[str, str], plan: list[Stage] | None = None) -> str:
    """Hash of the config sections of this stage and every earlier one of ``plan`` (a stage may read them, e.g.
    the teacher reads data.batch_size), the upstream outputs' hashes, what it reads from outside the run, and
    the version. Keys that decide only where a stage runs (``Section.not_in_cache_key``) are left out."""
    plan = plan or STAGES
    upstream = plan[: plan.index(stage) + 1]
    sections = {name: getattr(cfg, name).cache_fields() for s in upstream for name in s.sections}
    external = external_inputs(cfg, stage.name)
    return hash_json({"stage": stage.name, "sections": sections, "inputs": inputs, "external": external,
                      "version": pipeline.__version__})


def run_pipeline(
    cfg: Config,
    *,
    start: str | None = None,
    until: str | None = None,
    fresh: bool = False,
    plan: list[Stage] | None = None,
    store: StageStore | None = None,
    on_epoch: Callable[[str, int, dict[str, Any]], None] | None = None,
    command: Command = "run",
) -> dict[str, Manifest]:
    """Run stages in order, reusing every finished stage whose cache key still matches.

    ``start`` forces that stage (and so everything after it) to re-run; ``until`` stops after
    that stage; ``fresh`` ignores every cache. One run at a time per run folder (``pipeline.lock``).
    ``plan`` replaces the training sequence (``export_plan``, ``benchmark_plan``). ``store``: a stage store
    shared with other run folders (``pipeline.store``; one process only: under torchrun it is not used).
    ``on_epoch``: see ``StageContext.on_epoch``; ``command``: ``StageContext.command`` (the plan's command).
    """
    plan = plan or STAGES
    names = [s.name for s in plan]
    for flag, value in (("--from", start), ("--until", until)):
        if value is not None and value not in names:
            raise PipelineError(f"{flag}: unknown stage '{value}' (stages: {', '.join(names)})")
    if start and until and names.index(start) > names.index(until):
        raise PipelineError(f"--from {start} comes after --until {until}: nothing would run (stages: {', '.join(names)})")
    from pipeline.train import distributed  # torch: imported when a run starts, not with the console

    with distributed.session(cfg.train) as place:
        # rank 0 holds the run folder's lock for all ranks (the others only write into scratch folders)
        with run_lock(cfg.run_dir) if place.is_main else contextlib.nullcontext(), stage_write_errors(cfg.run_dir):
            return _run_stages(cfg, place, plan, start=start, until=until, fresh=fresh,
                               store=None if place.distributed else store, on_epoch=on_epoch, command=command)


def _run_stages(cfg: Config, place, plan: list[Stage], *, start: str | None, until: str | None, fresh: bool,
                store: StageStore | None = None, on_epoch=None, command: Command = "run") -> dict[str, Manifest]:
    from pipeline.train import distributed

    names = [s.name for s in plan]
    last = names.index(until) if until else len(plan) - 1
    forced = names.index(start) if start else (0 if fresh else len(plan))
    run_dir = cfg.run_dir
    if place.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "cache").mkdir(exist_ok=True)
        record_config(cfg)  # what this folder now holds: the next run of another config goes elsewhere (run_folder.py)
        for stale in (run_dir / "cache").glob("*.partial"):  # a killed check's work folder: no other run uses it (lock)
            shutil.rmtree(stale, ignore_errors=True)
    stages = plan[: last + 1]
    shared = max((i + 1 for i, s in enumerate(stages) if s.trains), default=0)  # stages every rank runs
    precheck = BackgroundPrecheck(cfg) if cfg.target.check_before_training and not place.distributed else None
    manifests: dict[str, Manifest] = {}
    inputs: dict[str, Path] = {}
    for i, stage in enumerate(stages):
        if i >= shared and not place.is_main:
            break  # the other ranks are done once training is; rank 0 goes on alone
        with distributed.alone() if i >= shared else contextlib.nullcontext():
            folder = run_dir / stage.folder
            key = cache_key(cfg, stage, {name: m.digest for name, m in manifests.items()}, plan)
            old = distributed.on_main(lambda: _reusable(folder, key) if i < forced else None)
            if old is not None:
                console.print(f"[dim]✓ {stage.folder}: cached ({_summary(old.metrics)})[/dim]")
            else:
                def compute() -> Manifest:
                    watch = on_epoch
                    if stage.name in ("teacher", "distill") and precheck is not None:
                        watch = precheck.beside(stage.name, on_epoch)  # the check runs while this stage trains
                    elif stage.name in ("teacher", "distill") and cfg.target.check_before_training:
                        distributed.on_main(lambda: _precheck(cfg))  # cached by student spec, so the second call is free
                    with stage_write_errors(folder.with_name(folder.name + ".partial")):
                        made = _execute(cfg, stage, key, folder, dict(inputs), manifests, watch, command)
                    if precheck is not None:
                        precheck.wait()  # nothing after the first training stage runs on a student the target refuses
                    return made

                old = (_through_store(store, stage, key, folder, cfg, compute)
                       if store is not None and i < forced and stage.name in SHARED_STAGES else compute())
        manifests[stage.name] = old
        inputs[stage.provides] = folder
    if place.is_main:
        _raise_on_failed_gates(manifests)
    return manifests


def _through_store(store: StageStore, stage: Stage, key: str, folder: Path, cfg: Config,
                   compute: Callable[[], Manifest]) -> Manifest:
    """The stage from the shared store when another run made it, else computed here and stored; one process
    computes a missing entry while the others wait for it (``StageStore.claim``)."""
    with store.claim(stage.name, key):
        found = store.fetch(stage.name, key, folder, run=str(cfg.run_dir))
        if found is not None:
            console.print(f"[dim]✓ {stage.folder}: from the shared stage store ({_summary(found.metrics)})[/dim]")
            return found
        made = compute()
        store.publish(stage.name, key, folder, run=str(cfg.run_dir))
        return made


def _reusable(folder: Path, key: str) -> Manifest | None:
    """The finished stage in ``folder`` if its key matches and its outputs are unchanged."""
    old = Manifest.read(folder)
    return old if old is not None and old.cache_key == key and verify_outputs(folder, old) else None


def _execute(cfg: Config, stage: Stage, key: str, folder: Path, inputs: dict[str, Path], upstream: dict[str, Manifest],
             on_epoch=None, command: Command = "run") -> Manifest:
    """Run one stage into ``NN_stage.partial/`` and rename it when complete; rank 0's folder is the
    one kept. Every rank gets the finished stage's manifest."""
    from pipeline.train import distributed

    place = distributed.current()
    partial = folder.with_name(folder.name + ".partial")

    def start() -> None:
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        console.print(f"[bold]▶ {stage.folder}[/bold]")

    def finish(metrics: dict[str, Any], started: float) -> Manifest:
        manifest = Manifest(
            stage=stage.name,
            cache_key=key,
            inputs={name: m.digest for name, m in upstream.items()},
            outputs=hash_outputs(partial),
            metrics=metrics,
            tools=tool_versions(),
            started=started,
            seconds=round(now() - started, 3),
            placement=place.record() if stage.trains else {},
        )
        manifest.write(partial)
        # swap in the finished folder: the old one is removed only once the new one is complete
        if folder.exists():
            shutil.rmtree(folder)
        partial.rename(folder)
        console.print(f"[green]✓ {stage.folder}[/green] in {manifest.seconds:.1f}s ({_summary(metrics)})")
        return manifest

    def run_in(out: Path) -> dict[str, Any]:
        ctx = StageContext(cfg=cfg, out=out, inputs=inputs, cache=cfg.run_dir / "cache", on_epoch=on_epoch, command=command)
        return manifest_metrics(stage.name, stage.function()(ctx))

    def run_here() -> Manifest:
        start()
        return finish(run_in(partial), started)

    started = now()
    if not stage.trains:
        return distributed.on_main(run_here)
    distributed.on_main(start)
    if place.is_main:
        metrics = run_in(partial)
    else:
        with tempfile.TemporaryDirectory(prefix=f"{stage.folder}-rank{place.rank}-") as scratch:
            metrics = run_in(Path(scratch))
    return distributed.on_main(lambda: finish(metrics, started))


def _precheck(cfg: Config) -> None:
    """Catch a student the target cannot run before spending time on the teacher and distillation."""
    from pipeline.export.untrained import precheck

    precheck(cfg)


class BackgroundPrecheck:
    """The target's check of the untrained student on a thread beside the first training stage that runs, instead of
    before it: its conversion (mostly onnx2tf in a child process) overlaps training rather than adding to the cold
    run's wall time. The stage's ``on_epoch`` raises the check's failure at the next epoch end, so a student the
    target refuses still stops the run within one epoch of the verdict, and the stage's end waits for the verdict."""

    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.thread: threading.Thread | None = None
        self.error: BaseException | None = None

    def beside(self, stage: str, on_epoch: Callable | None) -> Callable[[str, int, dict[str, Any]], None]:
        """Start the check (once per run) and return the stage's ``on_epoch`` with the verdict's watch added."""
        if self.thread is None:
            def check() -> None:
                from pipeline.child import background_children

                try:
                    with background_children():
                        _precheck(self.cfg)
                except BaseException as exc:  # raised in the run's own thread by watch() or wait()
                    self.error = exc

            self.thread = threading.Thread(target=check, name="precheck", daemon=True)
            self.thread.start()

        def watch(name: str, index: int, row: dict[str, Any]) -> None:
            if not self.thread.is_alive():
                self.wait()
            if on_epoch is not None:
                on_epoch(name, index, row)

        return watch

    def wait(self) -> None:
        if self.thread is not None:
            self.thread.join()
        if self.error is not None:
            error, self.error = self.error, None
            raise error


def _raise_on_failed_gates(manifests: dict[str, Manifest]) -> None:
    """Exit 3 once the report is written if its verdict is FAIL: a gate, the target check, the deploy artifact's
    export fidelity or op check, the vendor compiler or a device run failed (``pipeline.report.build.verdict``)."""
    if "report" not in manifests:
        return
    report = ReportMetrics.of(manifests["report"].metrics)
    if report.verdict == "FAIL":
        raise GateFailure("; ".join(report.failures or ["the report's verdict is FAIL"]))


def _summary(metrics: dict[str, Any]) -> str:
    shown = [f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items() if isinstance(v, (int, float, str)) and not isinstance(v, bool)]
    return ", ".join(shown[:4]) or "no metrics"
