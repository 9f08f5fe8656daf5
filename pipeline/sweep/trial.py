"""One trial of a student search: an ordinary pipeline run into ``sweeps/NAME/trials/NNNN/``, scored on what it measured.

Before anything trains, a candidate is rejected in seconds when it cannot meet the constraints: its int8 (or
fp32) weights alone exceed ``max_size_mb``; its MACs, at the fastest milliseconds per MAC any finished trial
of this sweep measured, put it past ``max_p90_ms`` × ``pruning.latency_margin``; or the target's static check
of the untrained export (``pipeline.export.untrained.precheck``, e.g. HARD_SWISH on the Edge TPU) refuses it.
While the student distils, Optuna's median pruner watches its validation curve beside the curves of the
finished trials (a companion single-objective study, ``<name>.curves``: Optuna prunes only single-objective
studies) and stops a hopeless one. The data split and the teacher come from the sweep's stage store.

A finished trial's objectives: ``top1``, the deploy artifact's top-1 on the VALIDATION split (report.json's
``validation``; the test split stays for the report: choosing on it would overfit the choice); ``p90_ms``, the deploy artifact's p90 where the
report's headline reads it (the board's when a device result was merged, else the host's); ``size_mb``.
"""

from __future__ import annotations

import math
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from pipeline.errors import GateFailure, PipelineError
from pipeline.stage_metrics import DistillMetrics
from pipeline.sweep.spec import SweepSpec, apply, unlabel
from pipeline.sweep.study import suggest, worker_id

TRIALS_DIR = "trials"
PRUNED_BEFORE_TRAINING = "before training"


@dataclass
class SweepRun:
    """What every trial of one worker shares: the spec, the base recipe, the store, the curve study, options."""

    spec: SweepSpec
    base: dict[str, Any]
    store: Any  # pipeline.store.StageStore
    curves: Any  # optuna.Study (single objective): validation curves for the pruner
    threads: int
    device: str | None = None  # user@host: latency measured on the board
    device_target: str | None = None
    docker: bool = True  # run the board's docker/ image (False: the runner installed on the board)
    extra_overrides: dict[str, Any] = field(default_factory=dict)

    @property
    def trials_dir(self) -> Path:
        return self.spec.folder / TRIALS_DIR


def trial_config(run: SweepRun, number: int, values: dict[str, Any]):
    """The trial's validated Config: the base with the sampled values, in trials/NNNN, timing what the objectives
    need (the deploy artifact at this worker's thread share)."""
    from pipeline.config import validate_config

    raw = apply(run.base, values)
    raw.update(name=f"{number:04d}", runs_dir=str(run.trials_dir))
    bench = dict(raw.get("benchmark") or {})
    bench.update(threads=[run.threads], timed="deploy")  # what the objectives read; the teacher only where a gate needs it
    raw["benchmark"] = bench
    raw = apply(raw, run.extra_overrides)
    return validate_config(raw, source=f"trial {number}")


def objective(trial, run: SweepRun) -> tuple[float, ...]:
    """Optuna's objective: raises ``optuna.TrialPruned`` (with ``user_attrs['pruned']`` saying why) or a
    ``PipelineError`` (``user_attrs['error']``), else returns the objectives in the spec's order. Ctrl-C marks the
    trial ``interrupted`` (Optuna fails it), so the next worker queues its candidate again
    (``study.requeue_interrupted``); a worker that dies leaves its trial to the heartbeat instead."""
    try:
        return _objective(trial, run)
    except KeyboardInterrupt:
        trial.set_user_attr("interrupted", True)
        raise


def _objective(trial, run: SweepRun) -> tuple[float, ...]:
    import optuna

    spec = run.spec
    trial.set_user_attr("worker", worker_id())
    trial.set_user_attr("started", time.time())
    values = {key: unlabel(param, suggest(trial, key, param)) for key, param in sorted(spec.space.items())}
    try:
        cfg = trial_config(run, trial.number, values)
    except PipelineError as exc:
        return _fail(trial, f"not a valid recipe: {exc}")
    trial.set_user_attr("run", str(cfg.run_dir))
    cheap = reject_before_training(cfg, run, trial)
    if cheap:
        trial.set_user_attr("pruned", cheap)
        trial.set_user_attr("pruned_at", PRUNED_BEFORE_TRAINING)
        raise optuna.TrialPruned(cheap)
    curve = _ask_curve(run) if spec.pruning.enabled else None
    if curve is not None:
        trial.set_user_attr("curve_trial", curve.number)
    try:
        _run(cfg, run, trial, curve)
    except optuna.TrialPruned:
        if curve is not None:
            run.curves.tell(curve, state=optuna.trial.TrialState.PRUNED)
        raise
    except PipelineError as exc:
        if curve is not None:
            run.curves.tell(curve, state=optuna.trial.TrialState.FAIL)
        return _fail(trial, str(exc))
    measured = read_measurements(cfg.run_dir, cfg)
    if run.device:
        measured.update(device_measurements(cfg, run))
    if curve is not None:
        run.curves.tell(curve, measured.get("distill_val") if measured.get("distill_val") is not None else measured["top1"])
    for k, v in measured.items():
        trial.set_user_attr(k, v)
    missing = [o for o in spec.objectives if measured.get(o) is None]
    if missing:
        return _fail(trial, f"the run measured no {', '.join(missing)} for the deploy artifact ({measured.get('why') or 'see its report'})")
    terms = constraint_terms(spec, measured)
    for name, value in terms.items():
        trial.set_constraint(name, value)  # read by NSGA-II: feasible trials dominate infeasible ones
    trial.set_user_attr("meets_constraints", all(v <= 0 for v in terms.values()))
    return tuple(float(measured[o]) for o in spec.objectives)


def _ask_curve(run: SweepRun):
    """A trial of the curve study for this trial's validation curve (Optuna warns that heartbeats are meant for
    ``optimize``: this study's trials are asked and told by hand, inside a trial that has one)."""
    import warnings

    if run.curves is None:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return run.curves.ask()


def _fail(trial, why: str):
    trial.set_user_attr("error", why)
    raise SweepTrialFailed(why)


class SweepTrialFailed(PipelineError):
    """A trial that failed for a reason of its own (recorded): the study goes on with the next trial."""


def _run(cfg, run: SweepRun, trial, curve) -> None:
    from pipeline.run import run_pipeline

    on_epoch = pruning_hook(curve, trial, warmup=math.ceil(run.spec.pruning.warmup_fraction * cfg.distill.epochs))
    try:
        run_pipeline(cfg, store=run.store, on_epoch=on_epoch)
    except GateFailure as exc:  # the report is written; the base recipe's gates are recorded, the sweep ranks on
        trial.set_user_attr("gates_failed", str(exc))


def pruning_hook(curve, trial, warmup: int):
    """``StageContext.on_epoch`` for a trial: the first seed's distill validation curve goes to the curve study;
    after ``warmup`` epochs the median pruner may stop the trial (``optuna.TrialPruned``, the reason recorded)."""
    import optuna

    def on_epoch(stage: str, seed_index: int, row: dict) -> None:
        if curve is None or stage != "distill" or seed_index != 0 or row.get("val_acc") is None:
            return
        curve.report(float(row["val_acc"]), step=int(row["epoch"]))
        if row["epoch"] > warmup and curve.should_prune():
            why = (f"distill epoch {row['epoch']}: validation top-1 {row['val_acc']:.3f} is below the median of the "
                   "finished trials' curves at that epoch (Optuna MedianPruner)")
            trial.set_user_attr("pruned", why)
            trial.set_user_attr("pruned_at", f"distill epoch {row['epoch']}")
            raise optuna.TrialPruned(why)

    return on_epoch


def reject_before_training(cfg, run: SweepRun, trial) -> str | None:
    """Why this candidate cannot meet the constraints, found without training it; None when it may."""
    from pipeline.data import dataset_shape
    from pipeline.formats import precision_of
    from pipeline.models import build_model
    from pipeline.benchmark.complexity import model_complexity
    from pipeline.target import TARGETS

    spec, rules = run.spec, TARGETS[cfg.target.name]
    input_shape, classes = dataset_shape(cfg.data)
    model = build_model(cfg.student.arch, classes, input_shape[0], cfg.student.arch_args)
    size = model_complexity(model, tuple(input_shape))
    trial.set_user_attr("params", size["params"])
    trial.set_user_attr("macs", size["macs"])
    bytes_per = {"int8": 1, "fp16": 2}.get(precision_of(rules.deploy_artifact), 4)
    weights_mb = size["params"] * bytes_per / 1e6
    limit = spec.constraints
    if limit.max_size_mb is not None and weights_mb > limit.max_size_mb:
        return (f"its {size['params']:,} parameters take {weights_mb:.2f} MB as {precision_of(rules.deploy_artifact)} "
                f"weights alone > max_size_mb {limit.max_size_mb:g}")
    if limit.max_p90_ms is not None:
        fastest = fastest_ms_per_mac(trial.study)
        if fastest is not None:
            ms_per_mac, number = fastest
            predicted = size["macs"] * ms_per_mac
            bound = limit.max_p90_ms * spec.pruning.latency_margin
            trial.set_user_attr("predicted_p90_ms", predicted)
            if predicted > bound:
                return (f"{size['macs'] / 1e6:.2f} M MACs at the fastest rate measured so far ({ms_per_mac * 1e6:.4f} ms per "
                        f"M MACs, trial {number}) predict p90 ≥ {predicted:.3f} ms > max_p90_ms {limit.max_p90_ms:g} × "
                        f"margin {spec.pruning.latency_margin:g}")
    if cfg.target.check_before_training:
        from pipeline.export.untrained import precheck

        try:
            precheck(cfg, force=True, shared=run.spec.store_dir / "precheck")
        except PipelineError as exc:
            return f"the target's static check of the untrained model: {exc}"
    return None


def fastest_ms_per_mac(study) -> tuple[float, int] | None:
    """(the lowest p90 ms per MAC any finished trial measured, its number): a lower bound on what a bigger model
    costs on the same target, so a MACs-based rejection is conservative."""
    from optuna.trial import TrialState

    rates = [(t.user_attrs["p90_ms"] / t.user_attrs["macs"], t.number) for t in study.get_trials(deepcopy=False)
             if t.state == TrialState.COMPLETE and t.user_attrs.get("macs") and t.user_attrs.get("p90_ms")]
    return min(rates) if rates else None


def read_measurements(run_dir: Path, cfg) -> dict[str, Any]:
    """The objectives and constraint readings of a finished run, from its report and the deploy artifact."""
    from pipeline.artifacts import read_json
    from pipeline.target import TARGETS

    report = read_json(Path(run_dir) / "report.json")
    head, deploy = report["headline"], report["run"]["deploy_artifact"]
    row = next((r for r in report["latency"] if r["model"] == "student" and r["artifact"] == deploy
                and r["where"] == head.get("latency_where") and r["threads"] == head.get("latency_threads")
                and r.get("latency_ms") and (head.get("latency_where") != "device" or r["device"] == head.get("latency_machine"))),
               None)
    distill = _distill_metrics(Path(run_dir))
    validation = report.get("validation") or {}
    rules = TARGETS[cfg.target.name]
    return {
        "top1": validation.get("top1"),
        "val_images": validation.get("images"),
        "test_top1": head.get("top1"),
        "test_top1_ci95": head.get("top1_ci95"),
        "test_images": head.get("top1_images"),
        "p90_ms": row["latency_ms"]["p90"] if row else None,
        "p50_ms": row["latency_ms"]["p50"] if row else None,
        "latency_where": head.get("latency_where"),
        "latency_machine": head.get("latency_machine"),
        "latency_threads": head.get("latency_threads"),
        "size_mb": head["size_bytes"] / 1e6 if head.get("size_bytes") else None,
        "fully_mapped": report["target"].get("passed"),
        "target_summary": report["target"].get("summary"),
        "accelerator": rules.accelerator,
        "verdict": report["verdict"]["status"] if isinstance(report.get("verdict"), dict) else report.get("verdict"),
        "config_hash": report["run"].get("config_hash"),
        "distill_val": distill.val_acc_mean,  # the curve study's last value: what its epochs reported, over the seeds
        "why": None if row else "no latency row of the deploy artifact",
    }


def _distill_metrics(run_dir: Path) -> DistillMetrics:
    from pipeline.artifacts import Manifest
    from pipeline.stages import stage_folder

    manifest = Manifest.read(stage_folder(run_dir, "distill"))
    return DistillMetrics.of(manifest.metrics if manifest else None)


def device_measurements(cfg, run: SweepRun) -> dict[str, Any]:
    """Bundle the trial, run it on the board (``pipeline.device.remote``), merge, and read the board's p90."""
    from pipeline.device.remote import RemoteSpec, default_image, run_remote

    target = run.device_target or cfg.target.name
    image = default_image(target) if run.docker else None
    if run.docker and image is None:
        raise PipelineError(f"--target {target}: no docker image for this target; pass --no-docker to use the board's runner")
    # a folder of its own on the board per trial; one measurement at a time from this machine's workers (a board
    # timing two models at once would time neither)
    from pipeline.target import TARGETS

    # on the board at the target's own thread setting (the host's share per worker says nothing about the board)
    spec = RemoteSpec(ssh=run.device, target=target, image=image, name=run.device.rpartition("@")[2],
                      threads=TARGETS[target].threads,
                      remote_dir=f"/tmp/edge-pipeline/{run.spec.name}-{cfg.name}")
    with _board_lock(run.spec.folder / "board.lock"):
        run_remote(cfg.run_dir, spec)
    measured = read_measurements(cfg.run_dir, cfg)
    if measured.get("latency_where") != "device":
        raise PipelineError(f"{cfg.run_dir}: the board's results did not give a deploy latency row")
    return {k: measured[k] for k in ("p90_ms", "p50_ms", "latency_where", "latency_machine", "latency_threads")}


@contextmanager
def _board_lock(path: Path) -> Iterator[None]:
    import fcntl
    import os

    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def constraint_terms(spec: SweepSpec, m: dict[str, Any]) -> dict[str, float]:
    """One number per constraint, ≤ 0 when met (Optuna's convention), scaled so that 1 = twice the limit."""
    c, out = spec.constraints, {}
    if c.max_p90_ms is not None:
        out["max_p90_ms"] = (m["p90_ms"] - c.max_p90_ms) / c.max_p90_ms if m.get("p90_ms") is not None else 1.0
    if c.max_size_mb is not None:
        out["max_size_mb"] = (m["size_mb"] - c.max_size_mb) / c.max_size_mb if m.get("size_mb") is not None else 1.0
    if c.min_top1 is not None:
        out["min_top1"] = c.min_top1 - m["top1"] if m.get("top1") is not None else 1.0
    if c.fully_mapped:
        out["fully_mapped"] = 0.0 if m.get("fully_mapped") else 1.0
    return out
