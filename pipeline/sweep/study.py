"""The search engine is Optuna: its storage shares one study between workers, its samplers propose candidates.

Storage: an SQLite file in the sweep folder by default (embedded, nothing to start); ``--storage URL`` takes any
Optuna RDB URL (``postgresql+psycopg2://user@host/db``, ``mysql://…``) or a journal file (``journal:PATH`` or a
path ending in ``.log``), so workers on several machines share one study, each started with the same command.
Workers send heartbeats; a trial whose worker died (SIGKILL, a lost machine) goes stale, is marked failed by the
next worker that starts a trial, and retried with the same parameters (``RetryHeartbeatStaleTrialCallback``). Optuna
hands each trial number to exactly one worker. The study records its search space: the same name with another
space is refused in one line.
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path
from typing import Any

from pipeline.errors import PipelineError
from pipeline.sweep.spec import Choice, FloatRange, IntRange, LogRange, Param, SweepSpec, grid_points, grid_size

SPACE_ATTR = "sweep_space"
DB_FILE = "study.db"


def default_storage(spec: SweepSpec) -> str:
    return f"sqlite:///{(spec.folder / DB_FILE).resolve()}"


def redact(url: str) -> str:
    """The URL without its password, for messages and reports."""
    return re.sub(r"(://[^:/@]+):[^@/]*@", r"\1:***@", url)


def open_storage(url: str, heartbeat_s: int):
    """An Optuna storage for ``url``, with heartbeats and retry of stale trials; unreachable = one line."""
    import optuna
    from optuna.storages import RDBStorage

    retry = RetryOnce(Path(url.removeprefix("sqlite:///") + ".retry.lock") if url.startswith("sqlite:///") else None)
    try:
        if url.startswith("journal:") or url.endswith(".log"):
            from optuna.storages.journal import JournalFileBackend

            path = Path(url.removeprefix("journal:"))
            path.parent.mkdir(parents=True, exist_ok=True)
            return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
        engine_kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}
        if url.startswith("sqlite:///"):
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # heartbeat is "experimental" in Optuna's words
            return RDBStorage(url, engine_kwargs=engine_kwargs, heartbeat_interval=heartbeat_s,
                              grace_period=3 * heartbeat_s, failed_trial_callback=retry)
    except (ImportError, ModuleNotFoundError) as exc:
        raise PipelineError(f"--storage {redact(url)}: its database driver is not installed ({_first_line(exc)}); "
                            "for PostgreSQL use postgresql+psycopg2://… (psycopg2-binary is installed with the host extra)") from None
    except Exception as exc:  # SQLAlchemy's OperationalError, ArgumentError, … : all mean "cannot use that URL"
        raise PipelineError(f"--storage {redact(url)}: cannot open the study storage ({_first_line(exc)})") from None


class RetryOnce:
    """Optuna's ``RetryHeartbeatStaleTrialCallback`` (at most ``MAX_RETRY`` retries of a candidate), queued once per
    dead trial. Two workers that start together can both fail the same stale trial on SQLite, which has no row lock
    for Optuna's ``SELECT … FOR UPDATE``, and each queued a retry (seen with two workers on a loaded 2-core machine):
    the check for an existing retry and the queueing run under an exclusive ``flock`` beside the database file.
    PostgreSQL locks the row, so only one worker fails the trial there."""

    MAX_RETRY = 2

    def __init__(self, lock_path: Path | None):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "experimental" in Optuna's words
            from optuna.storages import RetryHeartbeatStaleTrialCallback

            self.queue = RetryHeartbeatStaleTrialCallback(max_retry=self.MAX_RETRY)
        self.lock_path = lock_path

    def __call__(self, study, trial) -> None:
        import fcntl

        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644) if self.lock_path else None
        try:
            if fd is not None:
                fcntl.flock(fd, fcntl.LOCK_EX)
            retried = {(t.system_attrs.get("retry_history") or [None])[-1] for t in study.get_trials(deepcopy=False)}
            if trial.number not in retried:
                self.queue(study, trial)
        finally:
            if fd is not None:
                os.close(fd)  # closing drops the lock


def make_sampler(spec: SweepSpec):
    import optuna

    kind = spec.sampler
    size = grid_size(spec.space)
    if kind == "auto":
        kind = "grid" if size is not None and size <= spec.budget.trials else "nsga2"
    if kind == "grid":
        return optuna.samplers.GridSampler({k: grid_points(p) for k, p in spec.space.items()}, seed=spec.seed), "grid"
    if kind == "nsga2":
        # constraints reach NSGA-II through Trial.set_constraint (pipeline.sweep.trial), Optuna 5's way
        return optuna.samplers.NSGAIISampler(seed=spec.seed, population_size=max(4, min(50, spec.budget.trials // 2))), "nsga2"
    if kind == "tpe":
        return optuna.samplers.TPESampler(seed=spec.seed), "tpe"
    return optuna.samplers.RandomSampler(seed=spec.seed), "random"


def suggest(trial, key: str, param: Param) -> Any:
    if isinstance(param, Choice):
        return trial.suggest_categorical(key, grid_points(param))
    if isinstance(param, IntRange):
        return trial.suggest_int(key, param.bounds[0], param.bounds[1], step=param.step)
    if isinstance(param, FloatRange):
        return trial.suggest_float(key, param.bounds[0], param.bounds[1])
    if isinstance(param, LogRange):
        return trial.suggest_float(key, param.bounds[0], param.bounds[1], log=True)
    raise TypeError(param)


def open_study(spec: SweepSpec, storage, url: str):
    """Create the study or join it; a different search space under the same name is one line."""
    import optuna

    sampler, kind = make_sampler(spec)
    try:
        study = optuna.create_study(storage=storage, study_name=spec.name, directions=spec.directions(),
                                    sampler=sampler, load_if_exists=True)
    except ValueError as exc:  # the stored study has other directions
        raise PipelineError(f"{spec.name}: the study in {redact(url)} was made with other objectives ({exc}); "
                            "give this sweep another name, or delete the study") from None
    except Exception as exc:
        raise PipelineError(f"--storage {redact(url)}: cannot open the study ({_first_line(exc)})") from None
    record = spec.space_record()
    stored = study.user_attrs.get(SPACE_ATTR)
    if stored is None:
        study.set_user_attr(SPACE_ATTR, record)
        study.set_user_attr("sampler", kind)
    elif stored != record:
        changed = sorted(set(stored["space"]) ^ set(record["space"])) or \
            sorted(k for k in record["space"] if stored["space"].get(k) != record["space"][k])
        what = ", ".join(f"space.{k}" for k in changed) or "objectives"
        raise PipelineError(f"{spec.name}: this study's search space changed ({what}) since it was started in "
                            f"{redact(url)}; give the changed sweep another name (name: …), or delete the study")
    return study, kind


def counted(trial) -> bool:
    """Whether a finished trial uses up budget: complete, pruned, or failed for a reason of its own (a trial whose
    worker died is retried, so it does not count)."""
    from optuna.trial import TrialState

    return trial.state in (TrialState.COMPLETE, TrialState.PRUNED) or (
        trial.state == TrialState.FAIL and "error" in trial.user_attrs)


def budget_left(study, spec: SweepSpec) -> int:
    """Trials still to start: the budget (at most the grid, for the grid sampler) less the trials that used it
    up and those running now. Stale trials are failed first (and their retries queued), so a dead worker's trial
    is run again rather than counted as running."""
    from optuna.trial import TrialState

    import optuna
    from optuna.storages._heartbeat import is_heartbeat_enabled

    if is_heartbeat_enabled(study._storage):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "experimental"
            optuna.storages.fail_stale_trials(study)
    cap = spec.budget.trials
    if study.user_attrs.get("sampler") == "grid":
        cap = min(cap, grid_size(spec.space) or cap)
    trials = study.get_trials(deepcopy=False)
    return cap - sum(counted(t) or t.state == TrialState.RUNNING for t in trials)


def requeue_interrupted(study) -> list[int]:
    """Queue again, with the same candidate, each trial that Ctrl-C interrupted (``user_attrs['interrupted']``) and
    that has no retry yet. Without this the grid sampler would take an interrupted point as visited. A trial whose
    worker died is the heartbeat's to retry (``RetryHeartbeatStaleTrialCallback``): taking any failed trial without a
    reason here raced with that callback and queued a killed trial twice."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    retried = {t.system_attrs.get("failed_trial") for t in trials}
    again = [t for t in trials if t.state == TrialState.FAIL and t.user_attrs.get("interrupted") and t.number not in retried]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "experimental"
        from optuna.storages import RetryHeartbeatStaleTrialCallback

        for t in again:
            RetryHeartbeatStaleTrialCallback()(study, t)
    return [t.number for t in again]


def worker_threads(workers: int) -> int:
    from pipeline.runtimes import all_cores

    return max(1, all_cores() // max(1, workers))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]


def worker_id() -> str:
    import socket

    return f"{socket.gethostname()}:{os.getpid()}"
