"""Every ready-to-run recipe in targets/ validates and its untrained student passes its target's precheck
(the real export path: torch → ONNX → onnx2tf / OpenVINO, then the target's checker), as
``python -m pipeline check <recipe>`` runs it.
"""

from __future__ import annotations

import pytest

from pipeline.config import TARGETS_DIR, load_config
from pipeline.target import TARGETS

RECIPES = sorted(p.name for p in TARGETS_DIR.glob("*.yaml"))


@pytest.mark.parametrize("recipe", RECIPES)
def test_recipe_validates_and_its_student_passes_precheck(recipe, tmp_path):
    from pipeline.export.untrained import precheck

    cfg = load_config(recipe, {"runs_dir": str(tmp_path), "data.image_size": None})  # native 8x8 digits: small inputs
    assert cfg.name == recipe.removesuffix(".yaml") and cfg.target.name in TARGETS
    assert cfg.target.check_before_training
    report = precheck(cfg)
    assert report["passed"] and report["cached"] is False and report["input_shape"] == [1, 8, 8]
    assert report["target"] == cfg.target.name and report["student"] == cfg.student.arch
    rules = TARGETS[cfg.target.name]
    if rules.name == "edge_tpu":
        assert report["verdict"] == "fully mapped" and report["ops_mapped"] == report["ops_total"] > 5
    elif rules.runtime == "tflite":
        assert report["verdict"] == "ready" and report["full_integer"]
    else:
        assert report["fake_quantize_ops"] > 0 and report["checked_on"] in ("CPU", rules.device)
    assert precheck(cfg)["cached"] is True


IDENTITY = {("name",), ("target", "name")}  # what a recipe is: kept even where it equals the default


def _leaves(raw: dict, path: tuple = ()):
    for key, value in raw.items():
        if isinstance(value, dict):
            yield from _leaves(value, (*path, key))
        else:
            yield (*path, key), value


@pytest.mark.parametrize("recipe", RECIPES)
def test_recipe_sets_only_what_differs_from_the_defaults(recipe):
    """Recipes are deltas (issue 20): a key restating a default would silently pin it when the default changes."""
    import yaml

    from pipeline.config import Config

    defaults = Config().model_dump(mode="json")
    restated = []
    for path, value in _leaves(yaml.safe_load((TARGETS_DIR / recipe).read_text())):
        node = defaults
        for part in path:
            node = node[part] if isinstance(node, dict) and part in node else object()
        if path not in IDENTITY and node == value:
            restated.append(".".join(path))
    assert restated == [], f"{recipe} restates defaults: {restated}"
