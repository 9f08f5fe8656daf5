"""Which folder a run writes into, and the config recorded there, so runs of different configs never overwrite each other.

Every run records its resolved config in ``runs/<name>/config.json``. A new run whose config
differs from the *finished* run in that folder (one whose report stage completed) goes to the
next free folder, ``<name>-2``, ``<name>-3``… (as Ultralytics numbers ``exp2``, ``exp3``), and
one line says so; a folder holding the same config is reused, so resuming, ``--from`` and
``--fresh`` on the same config keep working in place. ``--overwrite`` replaces the finished
run instead; ``--name`` picks the folder. The config hash leaves out ``name`` and ``runs_dir``:
the same experiment in two folders has one hash.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.artifacts import atomic_write_json, hash_json, read_json
from pipeline.stages import RESULTS_FILE, STAGES, stage_folder

CONFIG_FILE = "config.json"
NOT_THE_EXPERIMENT = ("name", "runs_dir")  # where a run is kept, not what it computes


def config_hash(config: dict[str, Any]) -> str:
    """12 hex digits naming what a config computes (its ``name`` and ``runs_dir`` left out)."""
    return hash_json({k: v for k, v in config.items() if k not in NOT_THE_EXPERIMENT})[:12]


def recorded_config(run_dir: Path) -> dict[str, Any] | None:
    """The config a run folder's last run recorded, or None (no run yet, or a folder from before this record)."""
    path = Path(run_dir) / CONFIG_FILE
    try:
        return read_json(path) if path.is_file() else None
    except ValueError:
        return None


def record_config(cfg) -> None:
    """Write the resolved config into the run folder (the run loop calls this before the first stage)."""
    atomic_write_json(cfg.run_dir / CONFIG_FILE, cfg.model_dump(mode="json"))


def built_for(run_dir: Path) -> str | None:
    """The target the run's artifacts were made for (the benchmark stage records it), None if unknown."""
    results = stage_folder(run_dir, "benchmark") / RESULTS_FILE
    try:
        return read_json(results)["run"]["target"] if results.is_file() else None
    except (ValueError, KeyError, TypeError):
        return None


def finished(run_dir: Path) -> bool:
    """The folder holds a finished run: its report stage completed (a stage folder exists only once complete)."""
    return (Path(run_dir) / STAGES[-1].folder).is_dir()


def choose_run_dir(cfg, overwrite: bool = False):
    """``cfg`` itself when its folder is free, unfinished or holds the same config (or ``overwrite``);
    else ``cfg`` renamed to the first ``<name>-N`` that is; and the line to print about it (or None)."""
    if overwrite:
        return cfg, None
    mine = config_hash(cfg.model_dump(mode="json"))
    base, n, first_clash = cfg.name, 1, None
    while True:
        candidate = cfg if n == 1 else cfg.model_copy(update={"name": f"{base}-{n}"})
        old = recorded_config(candidate.run_dir)
        if old is None or not finished(candidate.run_dir) or config_hash(old) == mine:
            break
        first_clash = first_clash or (candidate.run_dir, old)
        n += 1
    if first_clash is None:
        return candidate, None
    folder, old = first_clash
    changed = "; ".join(f"{k}: {_short(a)} → {_short(b)}" for k, a, b in config_diff(old, cfg.model_dump(mode="json"))[:3])
    return candidate, (f"{folder} holds a finished run of another config ({changed}); this run goes to "
                       f"{candidate.run_dir} (--name NAME picks the folder, --overwrite replaces {folder})")


def config_diff(a: dict[str, Any] | None, b: dict[str, Any] | None) -> list[tuple[str, Any, Any]]:
    """(dotted key, value in ``a``, value in ``b``) for every leaf that differs, ``name`` and ``runs_dir`` left out."""
    flat_a, flat_b = _flatten(a or {}), _flatten(b or {})
    keys = [k for k in dict.fromkeys([*flat_a, *flat_b]) if k.split(".")[0] not in NOT_THE_EXPERIMENT]
    return [(k, flat_a.get(k), flat_b.get(k)) for k in keys if flat_a.get(k) != flat_b.get(k)]


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):  # an empty map adds no leaf: {} → {"pairs": "all"} is one change, pairs: None → all
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _short(v: Any) -> str:
    s = str(v)
    return s if len(s) <= 40 else s[:37] + "…"
