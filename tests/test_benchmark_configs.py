"""The CIFAR-100 reference recipes in benchmarks/configs validate, and say what they need when the data is absent."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config import load_config
from pipeline.data.sources import load_raw
from pipeline.errors import PipelineError
from pipeline.models import build_model, count_parameters

CONFIGS = sorted((Path(__file__).resolve().parent.parent / "benchmarks" / "configs").glob("*.yaml"))


def test_there_is_one_recipe_per_published_pair():
    assert len(CONFIGS) == 4


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_recipe_validates_with_repdistillers_schedule(path):
    cfg = load_config(path)
    assert cfg.data.dataset == "cifar100" and cfg.data.val_fraction == 0.0
    for section in (cfg.teacher, cfg.distill):
        assert (section.epochs, section.schedule, section.milestones) == (240, "step", [150, 180, 210])
    teacher = count_parameters(build_model(cfg.teacher.arch, 100, 3))
    student = count_parameters(build_model(cfg.student.arch, 100, 3))
    assert teacher > student


def test_missing_cifar_says_where_it_looked(tmp_path):
    with pytest.raises(PipelineError, match="cifar-100-python"):
        load_raw("cifar100", str(tmp_path / "nowhere"))
