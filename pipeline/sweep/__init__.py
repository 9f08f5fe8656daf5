"""``python -m pipeline sweep SWEEP.yaml``: which student to ship, searched with Optuna and measured per trial.

Each trial is an ordinary run (``pipeline.sweep.trial``) in ``sweeps/NAME/trials/NNNN/``; the data split and the
teacher are computed once for the sweep (``pipeline.store``); Optuna's storage shares the study between worker
processes here (``--workers N``) and on other machines (``--storage URL``, the same command on each). The report
(``pipeline.sweep.report``) is written when this command's workers are done.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from pipeline.console import console
from pipeline.errors import PipelineError

NO_TRIAL_MET = 3  # exit code: the sweep ran, but no trial met the constraints (like a failed gate)


def run_sweep(path: str | Path, *, workers: int = 1, storage: str | None = None, device: str | None = None,
              target: str | None = None, docker: bool = True, worker: bool = False) -> int:
    from pipeline.sweep.spec import check_space, load_sweep
    from pipeline.sweep.study import default_storage, open_storage, open_study

    spec = load_sweep(path)
    if target is not None:
        from pipeline.target import TARGETS

        if target not in TARGETS:
            raise PipelineError(f"--target {target}: unknown (known: {', '.join(sorted(TARGETS))})")
        spec = spec.model_copy(update={"set": {**spec.set, "target.name": target}})
    if device is not None and not target:
        raise PipelineError("--device needs --target (the board's target, e.g. --target rpi4): it decides the bundle")
    check_space(spec)
    if workers < 1:
        raise PipelineError(f"--workers {workers}: must be ≥ 1")
    url = storage or default_storage(spec)
    storage_obj = open_storage(url, spec.heartbeat_s)
    study, sampler = open_study(spec, storage_obj, url)  # created once here, before the workers join it
    spec.folder.mkdir(parents=True, exist_ok=True)
    if workers > 1:
        _spawn_workers(path, workers, url, device, target, docker)
    else:
        _work(spec, study, storage_obj, threads=_threads(workers), device=device, device_target=target, docker=docker)
    if worker:
        return 0
    return _report(spec, study, url, sampler, device, _threads(workers))


def _threads(workers: int) -> int:
    from pipeline.sweep.study import worker_threads

    env = os.environ.get("PIPELINE_SWEEP_THREADS")
    return int(env) if env and env.isdigit() and int(env) > 0 else worker_threads(workers)


def _work(spec, study, storage, *, threads: int, device: str | None, device_target: str | None, docker: bool) -> None:
    """One worker: trials until the budget (counted over every worker) or the timeout is spent."""
    import optuna
    import torch

    from pipeline.store import StageStore
    from pipeline.sweep.study import budget_left, requeue_interrupted
    from pipeline.sweep.spec import base_recipe
    from pipeline.sweep.trial import SweepRun, SweepTrialFailed, objective

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    torch.set_num_threads(threads)
    curves = optuna.create_study(
        storage=storage, study_name=f"{spec.name}.curves", direction="maximize", load_if_exists=True,
        pruner=optuna.pruners.MedianPruner(n_startup_trials=spec.pruning.startup_trials))  # warm-up: trial.on_epoch
    run = SweepRun(spec=spec, base=base_recipe(spec)[0], store=StageStore(spec.store_dir), curves=curves,
                   threads=threads, device=device, device_target=device_target, docker=docker)

    def after(study, trial) -> None:
        a = trial.user_attrs
        what = (f"top-1 {a['top1']:.4f}, p90 {a['p90_ms']:.3f} ms" if trial.state.name == "COMPLETE" and a.get("top1") is not None
                else a.get("pruned") or a.get("error") or trial.state.name.lower())
        console.print(f"[bold]sweep {spec.name}[/bold] trial {trial.number:04d} {trial.state.name}: {what}")

    # one trial at a time, the budget checked before each over every worker's trials (running ones included), so
    # workers neither overshoot it nor make the grid sampler repeat a point that another worker is running
    if again := requeue_interrupted(study):
        console.print(f"sweep {spec.name}: trial{'s' * (len(again) > 1)} {', '.join(f'{n:04d}' for n in again)} "
                      "were interrupted; queued again with the same candidate")
    started = time.monotonic()
    while budget_left(study, spec) > 0:
        left_s = None if spec.budget.timeout_s is None else spec.budget.timeout_s - (time.monotonic() - started)
        if left_s is not None and left_s <= 0:
            console.print(f"sweep {spec.name}: budget.timeout_s {spec.budget.timeout_s:g} spent; this worker stops")
            break
        study.optimize(lambda t: objective(t, run), n_trials=1, timeout=left_s, callbacks=[after],
                       catch=(SweepTrialFailed,), gc_after_trial=True)


def _spawn_workers(path, workers: int, url: str, device: str | None, target: str | None, docker: bool) -> None:
    """N processes of this same command against the same storage, each with its share of the cores; Ctrl-C or a
    failing worker stops the others."""
    from pipeline.sweep.study import worker_threads

    threads = worker_threads(workers)
    cmd = [sys.executable, "-m", "pipeline", "sweep", str(path), "--storage", url, "--worker"]
    if device:
        cmd += ["--device", device]
    if target:
        cmd += ["--target", target]
    if not docker:
        cmd += ["--no-docker"]
    env = {**os.environ, "PIPELINE_SWEEP_THREADS": str(threads), "OMP_NUM_THREADS": str(threads)}
    procs = [subprocess.Popen(cmd, env=env) for _ in range(workers)]
    try:
        codes = [p.wait() for p in procs]
    except KeyboardInterrupt:
        for p in procs:
            p.send_signal(signal.SIGINT)
        for p in procs:
            p.wait()
        raise
    bad = [c for c in codes if c not in (0,)]
    if bad:
        raise PipelineError(f"{len(bad)} of {workers} workers failed (exit {', '.join(map(str, bad))}); "
                            "their lines are above; run the same command again to continue the study")


def _report(spec, study, url: str, sampler: str, device: str | None, threads: int) -> int:
    from pipeline.store import StageStore
    from pipeline.sweep import report
    from pipeline.sweep.study import redact

    summary = report.build(spec, study, storage=redact(url), sampler=sampler,
                           store_counts=StageStore(spec.store_dir).counts(runs_under=spec.folder / "trials"), device=device,
                           threads=threads)
    paths = report.write(spec, summary)
    console.print(f"[bold]{summary['verdict']}[/bold]")
    console.print(summary["latency_note"])
    console.print(f"sweep report: {paths['html']}" + (f"; reproduce: python -m pipeline run {paths['best']}" if "best" in paths else ""))
    return 0 if summary["recommended"] is not None else NO_TRIAL_MET
