"""What a stage is given: ``run(ctx: StageContext) -> XxxMetrics`` (``pipeline.stage_metrics``) in every stage module.

A leaf: every stage module imports it, so it imports nothing of the pipeline. In particular not
``pipeline.config``, whose validators read the stage packages' registries (targets, formats,
methods): ``cfg`` is the resolved ``pipeline.config.Config``, typed as ``Any`` here so that no
stage package and the config import each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal

Command = Literal["run", "export", "benchmark"]


@dataclass
class StageContext:
    cfg: Any  # pipeline.config.Config
    out: Path  # this stage's folder (still .partial while it runs)
    inputs: dict[str, Path]  # finished upstream stage folders, by stage name
    cache: Path  # runs/<name>/cache: teacher-side artifacts shared by several student runs
    # called after every training epoch with (stage, seed index, history row); may raise to stop the run
    # (the student search's pruner). Explicit, so a stage never guesses who is watching.
    on_epoch: Callable[[str, int, dict[str, Any]], None] | None = None
    # which command runs these stages: run (trained here), export (a given student: no teacher, nothing trained) or
    # benchmark (given artifacts only). Said by the caller (pipeline/__main__.py through run_pipeline), so no stage
    # guesses it from the folders it was given.
    command: Command = "run"

    def input(self, stage: str) -> Path:
        return self.inputs[stage]
