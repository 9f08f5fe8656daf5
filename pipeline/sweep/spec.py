"""The sweep file: a base recipe, a search space over its keys, objectives, constraints and a budget.

```yaml
name: digits-students
base: edge_tpu.yaml            # a recipe (path, or a name in targets/), or the recipe itself as a mapping
set: {teacher.epochs: 5}       # overrides applied to the base in every trial (optional)
space:                         # dotted config key -> one range
  student.arch: {choice: [resnet8, resnet14, mobile_half]}
  student: {choice: [{arch: resnet8}, {arch: resnet8, arch_args: {width: 2}}]}   # a whole section per choice
  data.image_size: {int: [12, 16], step: 4}
  distill.method: {choice: [kd, rtk]}
  distill.lr: {log: [0.01, 0.1]}
  distill.temperature: {float: [2.0, 8.0]}
objectives: [top1, p90_ms]     # top1 (the deploy artifact on the validation split, maximised); p90_ms, size_mb (minimised)
constraints: {max_p90_ms: 5, max_size_mb: 1, min_top1: 0.9, fully_mapped: true}
budget: {trials: 12, timeout_s: 7200}
sampler: auto                  # auto (grid when the space enumerates within the budget, else nsga2) | grid | nsga2 | tpe | random
```

Validated like a recipe: an unknown key, an impossible range or a space key that the recipe does not have is one
line naming the key (exit 2). Every value of the space is applied to the base and validated before any trial runs.
"""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from pipeline.errors import PipelineError

OBJECTIVES = {"top1": "maximize", "p90_ms": "minimize", "size_mb": "minimize"}
STORE_DIR = ".store"  # in sweeps_dir: the default stage store
SWEEPS_DIR = Path(__file__).resolve().parents[2] / "targets" / "sweeps"  # ready sweep files, like targets/*.yaml


class _Closed(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class Choice(_Closed):
    choice: list[Any] = Field(min_length=1)

    @model_validator(mode="after")
    def _distinct(self) -> "Choice":
        labels = [label(v) for v in self.choice]
        if len(set(labels)) != len(labels):
            raise ValueError(f"choice lists a value twice: {', '.join(sorted(l for l in labels if labels.count(l) > 1))}")
        return self


class IntRange(_Closed):
    bounds: list[int] = Field(alias="int", min_length=2, max_length=2)
    step: int = Field(1, gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> "IntRange":
        if self.bounds[0] > self.bounds[1]:
            raise ValueError(f"int range [{self.bounds[0]}, {self.bounds[1]}] is empty: low must be ≤ high")
        return self


class FloatRange(_Closed):
    bounds: list[float] = Field(alias="float", min_length=2, max_length=2)

    @model_validator(mode="after")
    def _ordered(self) -> "FloatRange":
        if not self.bounds[0] < self.bounds[1]:
            raise ValueError(f"float range [{self.bounds[0]}, {self.bounds[1]}]: low must be < high")
        return self


class LogRange(_Closed):
    bounds: list[float] = Field(alias="log", min_length=2, max_length=2)

    @model_validator(mode="after")
    def _ordered(self) -> "LogRange":
        if not 0 < self.bounds[0] < self.bounds[1]:
            raise ValueError(f"log range [{self.bounds[0]}, {self.bounds[1]}]: needs 0 < low < high")
        return self


Param = Choice | IntRange | FloatRange | LogRange


class Constraints(_Closed):
    max_p90_ms: float | None = Field(None, gt=0)
    max_size_mb: float | None = Field(None, gt=0)
    min_top1: float | None = Field(None, ge=0, le=1)
    fully_mapped: bool = False  # the target's static op check (and its compiler, when it ran) mapped every op


class Budget(_Closed):
    trials: int = Field(8, gt=0, le=10_000)
    timeout_s: float | None = Field(None, gt=0)


class Pruning(_Closed):
    enabled: bool = True
    startup_trials: int = Field(3, ge=0)  # complete curves before any trial is pruned
    # the first half of a trial's distillation is never pruned: early epochs rank candidates by noise (a 20-epoch
    # sweep pruned 4 of 6 students at epochs 1-2 with a one-epoch warm-up)
    warmup_fraction: float = Field(0.5, ge=0, le=1)
    latency_margin: float = Field(1.5, ge=1.0)  # MACs-predicted p90 over max_p90_ms × this margin: pruned untrained


class SweepSpec(_Closed):
    name: str
    base: str | dict[str, Any]
    set: dict[str, Any] = {}
    space: dict[str, Param] = Field(min_length=1)
    objectives: list[Literal["top1", "p90_ms", "size_mb"]] = Field(["top1", "p90_ms"], min_length=1)
    constraints: Constraints = Constraints()
    budget: Budget = Budget()
    sampler: Literal["auto", "grid", "nsga2", "tpe", "random"] = "auto"
    pruning: Pruning = Pruning()
    seed: int = 0
    sweeps_dir: str = "sweeps"
    # the stage store trials share (pipeline.store): every sweep in sweeps_dir by default, so a second sweep over
    # the same base reuses the first one's data, teacher and identical candidates; a path on a shared filesystem
    # serves workers on several machines
    store: str | None = None
    heartbeat_s: int = Field(10, ge=1, le=600)  # a worker silent for 3× this is taken as dead: its trial is retried

    @model_validator(mode="after")
    def _objectives(self) -> "SweepSpec":
        if len(set(self.objectives)) != len(self.objectives):
            raise ValueError("objectives: each objective once")
        if "top1" not in self.objectives:
            raise ValueError("objectives: top1 is required (the recommendation is the most accurate model within the constraints)")
        if self.sampler == "grid" and grid_size(self.space) is None:
            raise ValueError("sampler: grid needs a space of choices and int ranges only (a float or log range has no grid)")
        return self

    @property
    def folder(self) -> Path:
        return Path(self.sweeps_dir) / self.name

    @property
    def store_dir(self) -> Path:
        return Path(self.store) if self.store else Path(self.sweeps_dir) / STORE_DIR

    def directions(self) -> list[str]:
        return [OBJECTIVES[o] for o in self.objectives]

    def space_record(self) -> dict[str, Any]:
        """What the study is: a changed space under the same study name is refused (``pipeline.sweep.study``)."""
        return {"space": {k: v.model_dump(mode="json", by_alias=True) for k, v in sorted(self.space.items())},
                "objectives": list(self.objectives)}


def label(value: Any) -> Any:
    """What Optuna stores for a choice: the value itself when it is a scalar, else its compact JSON (a mapping)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def unlabel(param: Param, stored: Any) -> Any:
    if isinstance(param, Choice):
        for v in param.choice:
            if label(v) == stored:
                return v
    return stored


def grid_points(param: Param) -> list[Any] | None:
    """Every value of a range that has finitely many, else None."""
    if isinstance(param, Choice):
        return [label(v) for v in param.choice]
    if isinstance(param, IntRange):
        return list(range(param.bounds[0], param.bounds[1] + 1, param.step))
    return None


def grid_size(space: dict[str, Param]) -> int | None:
    sizes = [grid_points(p) for p in space.values()]
    if any(s is None for s in sizes):
        return None
    return math.prod(len(s) for s in sizes)


def grid(space: dict[str, Param]) -> list[dict[str, Any]]:
    """Every point of an enumerable space, as {key: value} (values unlabelled)."""
    keys = sorted(space)
    pools = [[unlabel(space[k], v) for v in grid_points(space[k])] for k in keys]
    return [dict(zip(keys, combo)) for combo in itertools.product(*pools)]


def apply(base: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """``base`` (a raw recipe mapping) with each dotted key set; a mapping value merges into the section."""
    import copy

    raw = copy.deepcopy(base)
    for dotted, value in values.items():
        *parents, leaf = dotted.split(".")
        node = raw
        for p in parents:
            if not isinstance(node.get(p), dict):
                node[p] = {}
            node = node[p]
        if isinstance(value, dict) and isinstance(node.get(leaf), dict):
            node[leaf] = {**node[leaf], **copy.deepcopy(value)}
        else:
            node[leaf] = copy.deepcopy(value)
    return raw


def load_sweep(path: str | Path) -> SweepSpec:
    """Read and validate a sweep file; any problem is one PipelineError line naming the file and key."""
    from pipeline.config import _one_line, read_yaml

    path = Path(path)
    if not path.is_file() and (SWEEPS_DIR / path.name).is_file():
        path = SWEEPS_DIR / path.name  # a ready sweep in targets/sweeps/, as recipes are found in targets/
    if not path.is_file():
        ready = ", ".join(sorted(p.name for p in SWEEPS_DIR.glob("*.yaml")))
        raise PipelineError(f"{path}: no such sweep file here or in targets/sweeps/ (ready sweeps: {ready})")
    raw = read_yaml(path)
    if not isinstance(raw, dict):
        raise PipelineError(f"{path.name}: expected a mapping (name, base, space, objectives, constraints, budget)")
    raw.setdefault("name", path.stem)
    try:
        spec = SweepSpec.model_validate(raw)
    except ValidationError as exc:
        raise PipelineError(f"{path.name}: {_space_line(exc) or _one_line(exc, SweepSpec)}") from None
    if not isinstance(spec.base, dict) and not Path(spec.base).is_absolute():
        beside = path.parent / spec.base
        if beside.is_file():
            spec = spec.model_copy(update={"base": str(beside)})
    _plain_name(spec.name, path.name)
    return spec


def _space_line(exc: ValidationError) -> str | None:
    """A space entry that matches none of the four range kinds: say which kinds exist (pydantic lists every
    union member's complaint)."""
    err = exc.errors()[0]
    if len(err["loc"]) >= 2 and err["loc"][0] == "space":
        key = err["loc"][1]
        specific = [e for e in exc.errors() if len(e["loc"]) > 2 and e["loc"][1] == key and e["type"] != "extra_forbidden"
                    and e["type"] != "missing"]
        if specific:
            e = specific[0]
            return f"space.{key}: {e['msg'].removeprefix('Value error, ')}"
        return (f"space.{key}: expected one of {{choice: [...]}}, {{int: [low, high], step: N}}, {{float: [low, high]}}, "
                f"{{log: [low, high]}} (got {err.get('input')!r})")
    return None


def _plain_name(name: str, source: str) -> None:
    if not name or name.startswith(".") or any(c in name for c in "/\\") or not name.isprintable():
        raise PipelineError(f"{source}: name: {name!r} must be a plain folder name (the sweep is written to sweeps_dir/<name>)")


def base_recipe(spec: SweepSpec) -> tuple[dict[str, Any], str]:
    """The base recipe as a raw mapping (with ``set`` applied) and where it came from."""
    from pipeline.config import read_yaml, resolve_recipe

    if isinstance(spec.base, dict):
        raw, source = dict(spec.base), "base (inline)"
    else:
        path = resolve_recipe(spec.base)
        raw, source = read_yaml(path) or {}, path.name
        if not isinstance(raw, dict):
            raise PipelineError(f"{path.name}: expected a mapping of sections at the top level")
    return apply(raw, spec.set), source


def check_space(spec: SweepSpec) -> None:
    """Apply every value of every range (one key at a time, the others at the base) and validate: a key the recipe
    does not have, or a value it refuses, is one line naming ``space.<key>`` before any trial runs."""
    from pipeline.config import validate_config

    base, source = base_recipe(spec)
    try:
        validate_config(base, source=source)
    except PipelineError as exc:
        raise PipelineError(f"base: {exc}") from None
    for key, param in spec.space.items():
        points = grid_points(param)
        values = list(param.bounds) if points is None else [unlabel(param, v) for v in points[:64]]
        for value in values:
            try:
                validate_config(apply(base, {key: value}), source="sweep")
            except PipelineError as exc:
                raise PipelineError(f"space.{key}: {label(value)!s}: {str(exc).removeprefix('sweep: ')}") from None
