"""Typed run configuration: one section per stage, unknown keys rejected.

A recipe is YAML validated by these models. Errors come out as one line that names the
file, the key path and what is allowed, e.g.
``edge_tpu.yaml: distill.method: unknown 'rtkk' (known: at, fitnet, kd, none)``.

``base`` is what every section shares, ``training`` the sections that make the model, ``deploy``
those that ship it, ``recipe`` the whole ``Config`` and how a recipe file becomes one. Every name
is imported from here (``from pipeline.config import Config, load_config``).
"""

from pipeline.config.base import MAX_IMAGE_SIZE, NonNegative, Section
from pipeline.config.deploy import RENAMED_GATES, BenchmarkConfig, ExportConfig, Gates, ReportConfig, TargetConfig
from pipeline.config.recipe import (MAX_YAML_VALUES, TARGETS_DIR, Config, _one_line, load_config, read_yaml, recipe_yaml,
                                    resolve_recipe, validate_config)
from pipeline.config.training import (DataConfig, DistillConfig, FrozenTeacherConfig, ICCRegularizer, ModelSpec, QATConfig,
                                      ScheduleConfig, StudentConfig, TeacherConfig, TrainConfig)

__all__ = [
    "MAX_IMAGE_SIZE", "NonNegative", "Section", "RENAMED_GATES", "BenchmarkConfig", "ExportConfig", "Gates", "ReportConfig",
    "TargetConfig", "MAX_YAML_VALUES", "TARGETS_DIR", "Config", "_one_line", "load_config", "read_yaml", "recipe_yaml",
    "resolve_recipe", "validate_config", "DataConfig", "DistillConfig", "FrozenTeacherConfig", "ICCRegularizer", "ModelSpec",
    "QATConfig", "ScheduleConfig", "StudentConfig", "TeacherConfig", "TrainConfig",
]
