"""Every ready-to-run recipe in targets/ validates and its untrained student passes its target's precheck
(the real export path: torch → ONNX → onnx2tf / OpenVINO, then the target's checker).

An onnx2tf conversion costs ~30 s here, so a TFLite recipe whose student an earlier TFLite recipe
already prechecked is only validated (its checker runs on a small model in test_edgetpu_check.py).
"""

from __future__ import annotations

import pytest

from pipeline.config import TARGETS_DIR, load_config
from pipeline.target import TARGETS

RECIPES = sorted(p.name for p in TARGETS_DIR.glob("*.yaml"))


def _repeats_an_onnx2tf_precheck(recipe: str) -> str | None:
    """The earlier TFLite recipe with the same student, if any."""
    def key(name):
        cfg = load_config(name)
        return cfg.student.model_dump_json(), TARGETS[cfg.target.name].runtime == "tflite"

    mine = key(recipe)
    return next((r for r in RECIPES[: RECIPES.index(recipe)] if mine[1] and key(r) == mine), None)


@pytest.mark.parametrize("recipe", RECIPES)
def test_recipe_validates_and_its_student_passes_precheck(recipe, tmp_path):
    from pipeline.target.check import precheck

    cfg = load_config(recipe, {"runs_dir": str(tmp_path), "data.image_size": None})  # native 8x8 digits: small inputs
    assert cfg.name == recipe.removesuffix(".yaml") and cfg.target.name in TARGETS
    assert cfg.target.check_before_training
    if earlier := _repeats_an_onnx2tf_precheck(recipe):
        pytest.skip(f"same student as {earlier} through onnx2tf; validated only")
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
