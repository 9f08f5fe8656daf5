"""The whole config, and how a recipe becomes one: found by name, read as safe YAML, overridden, validated to one line."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError, field_validator, model_validator

from pipeline.config.base import Section
from pipeline.config.deploy import BenchmarkConfig, ExportConfig, ReportConfig, TargetConfig
from pipeline.config.training import DataConfig, DistillConfig, ModelSpec, QATConfig, StudentConfig, TeacherConfig, TrainConfig
from pipeline.errors import PipelineError

TARGETS_DIR = Path(__file__).resolve().parents[2] / "targets"


class Config(Section):
    name: str = "run"
    runs_dir: str = "runs"
    data: DataConfig = DataConfig()
    train: TrainConfig = TrainConfig()
    teacher: TeacherConfig = TeacherConfig()
    student: StudentConfig = StudentConfig()
    distill: DistillConfig = DistillConfig()
    qat: QATConfig = QATConfig()
    export: ExportConfig = ExportConfig()
    target: TargetConfig = TargetConfig()
    benchmark: BenchmarkConfig = BenchmarkConfig()
    report: ReportConfig = ReportConfig()

    @field_validator("name")
    @classmethod
    def _plain_folder_name(cls, v: str) -> str:
        """The run is written to runs_dir/<name>: '' would write into runs_dir itself, '../x' outside it."""
        if not v or v.startswith(".") or any(c in v for c in "/\\") or not v.isprintable():
            raise ValueError(f"{v!r} must be a plain folder name (no '/', not empty, not starting with '.'): "
                             "the run is written to runs_dir/<name>")
        return v

    @model_validator(mode="after")
    def _threads_this_machine_has(self) -> "Config":
        """A thread count above the cores this process may use (or the target board's, for a recipe measured there
        too) oversubscribes the CPU: the latency says nothing, and 10⁶ threads stall the runtime."""
        from pipeline.runtimes.base import all_cores  # numpy only
        from pipeline.target import TARGETS

        cores, board = all_cores(), TARGETS[self.target.name].threads
        limit = max(cores, board)
        if over := [t for t in self.benchmark.threads if t > limit]:
            where = f"the {cores} cores this process may use" + (f" and the {board} of target {self.target.name}" if board > cores else "")
            raise ValueError(f"benchmark.threads: {over[0]} is more than {where}; give at most {limit}, or 0 for all cores")
        return self

    @model_validator(mode="after")
    def _float_layers_where_float_runs(self) -> "Config":
        """A layer kept in float on an integer-only accelerator runs on the host CPU, with everything after it."""
        from pipeline.target import TARGETS

        if self.export.keep_float and TARGETS[self.target.name].integer_only:
            raise ValueError(f"export.keep_float: target {self.target.name} runs integer-only models, no layer can stay "
                             "in float; remove the key (its int8 remedies: export.tflite_recalibration: auto, which "
                             "calibrates again and tries the other weight scheme where the target runs it; QAT)")
        return self

    @property
    def run_dir(self) -> Path:
        return Path(self.runs_dir) / self.name


def resolve_recipe(name: str | Path) -> Path:
    """A path as given, else a ready recipe of that name in targets/ (so `edge_tpu.yaml` works anywhere)."""
    path = Path(name)
    if path.is_file():
        return path
    for candidate in (TARGETS_DIR / path.name, TARGETS_DIR / f"{path.name}.yaml"):
        if candidate.is_file():
            return candidate
    recipes = sorted(p.name for p in TARGETS_DIR.glob("*.yaml"))
    raise PipelineError(f"{name}: no such file here or in targets/ (recipes: {', '.join(recipes)})")


def load_config(name: str | Path, overrides: dict[str, Any] | None = None) -> Config:
    """Read, merge overrides into, and validate a recipe; any problem becomes one PipelineError line."""
    path = resolve_recipe(name)
    raw = read_yaml(path)
    if not isinstance(raw, dict):
        raise PipelineError(f"{path.name}: expected a mapping of sections at the top level")
    raw.setdefault("name", path.stem)
    for dotted, value in (overrides or {}).items():
        _set_dotted(raw, dotted, value)
    return validate_config(raw, source=path.name)


def read_yaml(path: Path) -> Any:
    """A YAML file as plain data (safe loader, duplicate keys refused); any problem is one line naming the file."""
    try:
        return recipe_yaml(path.read_bytes().decode("utf-8")) or {}
    except UnicodeDecodeError as exc:
        raise PipelineError(f"{path.name}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}); "
                            "save it as UTF-8") from None
    except OSError as exc:
        raise PipelineError(f"{path}: cannot read it ({exc.strerror})") from None
    except RecursionError:
        raise PipelineError(f"{path.name}: nested too deeply to be a recipe; a recipe is sections of keys and short lists") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise PipelineError(f"{path.name}:{where} not valid YAML ({getattr(exc, 'problem', exc)})") from None


def recipe_yaml(text: str) -> Any:
    """YAML as a recipe (or a --set value) is read: safe tags only, no key twice, aliases within a budget."""
    return yaml.load(text, Loader=_UniqueKeyLoader)


def validate_config(raw: dict[str, Any], source: str = "<config>") -> Config:
    try:
        cfg = Config.model_validate(raw)
    except ValidationError as exc:
        raise PipelineError(f"{source}: {_one_line(exc, Config)}") from None
    from pipeline.distill.methods import METHODS  # options and default weights: no torch

    method = METHODS[cfg.distill.method]
    options_model = method.Options
    if cfg.distill.options and not options_model.model_fields:
        raise PipelineError(f"{source}: distill.options: method '{cfg.distill.method}' takes no options "
                            f"(got {', '.join(sorted(cfg.distill.options))}); remove them")
    try:
        options = options_model.model_validate(cfg.distill.options)
    except ValidationError as exc:
        raise PipelineError(f"{source}: distill.options.{_one_line(exc, options_model)}") from None
    # store every option and loss weight with its default filled in, so a changed default changes the cache key
    weights = {k: v if (v := getattr(cfg.distill, k)) is not None else method.defaults[k]
               for k in ("w_ce", "w_kd", "w_feat")}
    distill = cfg.distill.model_copy(update={"options": options.model_dump(mode="json"), **weights})
    for section in ("teacher", "student"):
        spec = getattr(cfg, section)
        if not (section == "teacher" and cfg.teacher.checkpoint):  # a checkpoint brings its own architecture
            _check_model_spec(spec, section, source)
    return cfg.model_copy(update={"distill": distill})


def _check_model_spec(spec: ModelSpec, section: str, source: str) -> None:
    """Build the model once when arch_args or stages are given, so a bad argument or a stage that is not a
    module stops here, naming the file and key, instead of after the teacher has trained."""
    if not (spec.arch_args or spec.stages):
        return
    from pipeline.models import build_model

    try:
        model = build_model(spec.arch, 10, 3, spec.arch_args)
    except PipelineError as exc:
        raise PipelineError(f"{source}: {section}.arch_args: {exc}") from None
    modules = [name for name, _ in model.named_modules() if name]
    for stage in spec.stages or []:
        if stage not in modules:
            close = difflib.get_close_matches(stage, modules, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else f" (top-level modules: {', '.join(n for n in modules if '.' not in n)})"
            raise PipelineError(f"{source}: {section}.stages: {spec.arch} has no module '{stage}'{hint}")


def _one_line(exc: ValidationError, root: type[BaseModel]) -> str:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"])
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        parent, key = loc.rpartition(".")[::2]
        model = _model_at(root, parent)
        allowed = sorted(model.model_fields) if model else []
        close = difflib.get_close_matches(key, allowed, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        return f"{loc}: unknown key (allowed: {', '.join(allowed)}){hint}"
    if err["type"] == "finite_number":
        return f"{loc}: {err['input']!r} is not a finite number; give one (nan and inf are refused)"
    if err["type"] in ("literal_error", "enum"):
        return f"{loc}: {err['input']!r} is not allowed ({msg.removeprefix('Input should be ')})"
    return f"{loc}: {msg}" if loc else msg


def _model_at(root: type[BaseModel], dotted: str) -> type[BaseModel] | None:
    model = root
    for part in filter(None, dotted.split(".")):
        field = model.model_fields.get(part)
        if field is None or not (isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)):
            return None
        model = field.annotation
    return model


def _set_dotted(raw: dict, dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = raw
    for i, p in enumerate(parents):
        if node.get(p) is None:  # absent, or an empty section (`distill:` with nothing under it)
            node[p] = {}
        node = node[p]
        if not isinstance(node, dict):
            raise PipelineError(f"--set {dotted}: {'.'.join(parents[: i + 1])} is a value ({node!r}), not a section")
    node[leaf] = value


MAX_YAML_VALUES = 100_000  # values in a recipe once its aliases are expanded; a recipe has a few hundred


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.safe_load, except that a key given twice in one mapping is an error: PyYAML keeps the last one,
    so a second `distill:` section would silently replace the first. And aliases may not expand past
    ``MAX_YAML_VALUES``: PyYAML shares an aliased node, but validating or dumping the recipe expands it, so
    nine nested lists of ten aliases ("billion laughs") would hang the tool."""

    def compose_document(self):
        node = super().compose_document()
        _expanded_size(node, {}, set())
        return node

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, Any] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, (str, int, float, bool)) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key '{key}', first at line {seen[key].line + 1}: merge the two", key_node.start_mark)
            seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep)


def _expanded_size(node, sizes: dict[int, int], open_: set[int]) -> int:
    """How many values ``node`` stands for with every alias written out; past the budget (or an alias inside
    itself), a YAML error naming the node's line."""
    key = id(node)
    if key in sizes:
        return sizes[key]
    if key in open_:
        raise yaml.composer.ComposerError(None, None, "an alias refers to a node that contains it; write the values out",
                                          node.start_mark)
    open_.add(key)
    children = node.value if isinstance(node, yaml.SequenceNode) else (
        [n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode) else [])
    total = 1
    for child in children:
        total += _expanded_size(child, sizes, open_)
        if total > MAX_YAML_VALUES:
            raise yaml.composer.ComposerError(
                None, None, f"its aliases expand to more than {MAX_YAML_VALUES} values (an alias bomb?); "
                "write the values out or use fewer nested aliases", node.start_mark)
    open_.discard(key)
    sizes[key] = total
    return total
