"""The distillation benchmark's definitions stay true: every row is a valid config that spells out its
weights, every registered method has exactly one row running its defaults (the table's "(default)"),
and the claims column's verdicts follow their rule."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest

from pipeline.distill import LOSSES
from pipeline.distill.methods import METHODS

_SPEC = importlib.util.spec_from_file_location(
    "distill_methods", Path(__file__).resolve().parent.parent / "benchmarks" / "distill_methods.py")
dm = sys.modules.setdefault("distill_methods", importlib.util.module_from_spec(_SPEC))
_SPEC.loader.exec_module(dm)


@pytest.mark.parametrize("row", list(dm.ROWS))
def test_every_row_validates_and_sets_its_weights(row):
    overrides = dm.ROWS[row]
    assert {"distill.method", "distill.w_ce", "distill.w_kd", "distill.w_feat"} <= set(overrides)
    distill, _ = dm.resolved(overrides)
    assert distill["method"] == overrides["distill.method"]


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_each_method_has_one_row_that_runs_its_registry_defaults(name):
    row = dm.default_row(name)
    assert dm.is_default(row) and dm.ROWS[row]["distill.method"] == name


@pytest.mark.parametrize("name", [n for n, m in METHODS.items() if m.published])
def test_a_method_whose_default_is_not_the_papers_keeps_a_row_with_the_published_weights(name):
    """The table must show what the published weights did (the reason the default differs)."""
    published = {f"distill.{k}": v for k, v in METHODS[name].published.items()}
    rows = [r for r, o in dm.ROWS.items() if o["distill.method"] == name and published.items() <= o.items()]
    assert rows and not any(dm.is_default(r) for r in rows)


def test_the_expressive_rows_use_the_regularisers_default_teacher():
    assert dm.is_default("kd-expressive") and dm.is_default("icc-expressive")


def row(mean, std, seeds=3):
    return {"top1_mean": mean, "top1_std": std, "per_seed": {str(i): mean for i in range(seeds)}}


def test_verdicts_follow_the_standard_error_rule():
    # gain 1.0 with std 0.5 on both rows: se = √((0.25 + 0.25)/3) ≈ 0.41
    se = math.sqrt(0.5 / 3)
    claim = dm.Claim("a beats b", "a", ("b",))
    assert dm.verdict(claim, {"a": row(81.0, 0.5), "b": row(80.0, 0.5)}, {}) == "yes (+1.00 vs b)"
    assert dm.verdict(claim, {"a": row(80.0, 0.5), "b": row(81.0, 0.5)}, {}) == "no (-1.00 vs b)"
    assert dm.verdict(claim, {"a": row(80.0 + se / 2, 0.5), "b": row(80.0, 0.5)}, {}).startswith("within noise")
    assert dm.verdict(claim, {"a": row(81.0, 0.5, seeds=1), "b": row(80.0, 0.5)}, {}) == "one seed: no verdict"
    assert dm.verdict(claim, {"a": row(81.0, 0.5)}, {}) == "–"
    # a margin: +1.0 is not "+0.6 more" by more than se; a speed claim that holds alone makes it 'partly'
    fast = dm.Claim("a: +0.6 and faster", "a", ("b",), by=0.6, faster_than="b")
    cost = {"a": {"ms_per_step": 50.0}, "b": {"ms_per_step": 80.0}}
    assert dm.verdict(fast, {"a": row(80.7, 0.5), "b": row(80.0, 0.5)}, cost) == "partly (+0.70 vs b, 50 vs 80 ms/step)"
    assert dm.verdict(fast, {"a": row(82.0, 0.5), "b": row(80.0, 0.5)}, cost).startswith("yes")
