"""Target rules as data (one contract over the registry), the device-absent line, the OpenVINO and
TFLite checkers, and the precheck's verdict, error and cache (with a stand-in target: fast)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.config import TARGETS_DIR, load_config, validate_config
from pipeline.errors import PipelineError
from pipeline.formats import get_format
from pipeline.target import TARGETS
from pipeline.target.device import device_status



@pytest.mark.parametrize("name", sorted(TARGETS))
def test_every_target_is_complete_and_has_a_recipe(name):
    rules = TARGETS[name]
    assert rules.name == name and rules.description
    assert (rules.layout == "NHWC") == (rules.runtime == "tflite")
    assert callable(rules.checker) and (rules.compiler is None or callable(rules.compiler))
    assert rules.alternative is None or (TARGETS_DIR / rules.alternative).is_file()
    recipes = [p for p in TARGETS_DIR.glob("*.yaml") if load_config(p).target.name == name]
    assert recipes, f"no recipe in targets/ uses target {name}"
    for recipe in recipes:
        assert rules.deploy_artifact in load_config(recipe).export.formats, recipe.name


def test_runtime_is_the_deploy_formats_row():
    """A target does not restate its runtime: changing the deploy artifact changes it, from the format table."""
    rules = TARGETS["rpi4"]
    assert rules.runtime == get_format("tflite_int8").runtime == "tflite"
    moved = dataclasses.replace(rules, deploy_artifact="openvino_int8")
    assert moved.runtime == get_format("openvino_int8").runtime == "openvino"
    with pytest.raises(TypeError):
        dataclasses.replace(rules, runtime="openvino")


def test_rules_stay_frozen_data():
    with pytest.raises(dataclasses.FrozenInstanceError):
        TARGETS["rpi4"].threads = 8
    assert TARGETS["rpi4"].threads == 4 and TARGETS["edge_tpu"].io_dtype == "uint8"


def test_absent_npu_gives_one_line_with_what_to_run_instead():
    status = device_status(TARGETS["openvino_npu"], devices=["CPU"])
    assert status["available"] is False and status["device"] == "NPU"
    line = status["message"]
    assert "\n" not in line and "no NPU" in line and "OpenVINO sees: CPU" in line
    assert "python -m pipeline run openvino_cpu.yaml" in line


@pytest.mark.parametrize("target, devices, available", [
    ("openvino_npu", ["CPU", "NPU"], True),
    ("openvino_npu", ["CPU", "GPU.0"], False),
    ("openvino_cpu", ["CPU"], True),
    ("rpi4", [], True),  # TFLite runs on the host CPU: nothing to look for
])
def test_device_presence(target, devices, available):
    status = device_status(TARGETS[target], devices=devices)
    assert status["available"] is available and (status["message"] is None) is available


class _Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 4, 3, padding=1)
        self.fc = torch.nn.Linear(4, 10)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).mean((2, 3)))


@pytest.fixture(scope="module")
def openvino_irs(tmp_path_factory):
    from pipeline.export.onnx2openvino import onnx2openvino
    from pipeline.export.torch2onnx import torch2onnx

    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("ov")
    onnx_path = torch2onnx(_Tiny().eval(), (1, 8, 8), out / "tiny.onnx")
    calib = np.random.default_rng(0).standard_normal((4, 1, 8, 8)).astype(np.float32)
    return onnx2openvino(onnx_path, out, calib, fp32=True, int8=True)


def test_openvino_int8_ir_is_ready_on_cpu(openvino_irs):
    r = TARGETS["openvino_cpu"].checker(openvino_irs["openvino_int8"], TARGETS["openvino_cpu"])
    assert r["verdict"] == "ready" and r["passed"] and r["checked_on"] == "CPU"
    assert r["fake_quantize_ops"] >= 2 and r["static_shapes"] and r["unsupported_ops"] == []
    json.dumps(r)


def test_fp32_ir_is_not_an_int8_deploy_artifact(openvino_irs):
    r = TARGETS["openvino_cpu"].checker(openvino_irs["openvino_fp32"], TARGETS["openvino_cpu"])
    assert not r["passed"] and r["fake_quantize_ops"] == 0 and "not int8" in r["summary"]


def test_npu_target_without_npu_is_checked_on_cpu_and_says_so(openvino_irs, monkeypatch):
    import pipeline.target.device as device

    monkeypatch.setattr(device, "available_devices", lambda runtime: ["CPU"])
    rules = TARGETS["openvino_npu"]
    r = rules.checker(openvino_irs["openvino_int8"], rules)
    assert r["passed"] and r["checked_on"] == "CPU" and r["verdict"] == "ready on CPU (NPU absent here)"
    assert r["device"]["message"].startswith("openvino_npu: no NPU")


# ---- precheck: a stand-in target that deploys the ONNX file (no onnx2tf, seconds) ----

def _cfg(tmp_path, **target):
    return validate_config({"runs_dir": str(tmp_path), "name": "pre", "student": {"arch": "resnet8"},
                            "target": {"name": "rpi4", **target}})


@pytest.fixture
def onnx_target(monkeypatch):
    """TARGETS['rpi4'] swapped for a rules object deploying ONNX, whose checker counts its calls."""
    calls = []

    def checker(path: Path, rules) -> dict:
        import onnx

        ops = [n.op_type for n in onnx.load(str(path)).graph.node]
        calls.append(ops)
        bad = ops.index("Add") if "Add" in ops else None
        return {"verdict": "partially mapped" if bad is not None else "fully mapped", "passed": bad is None,
                "summary": f"{len(ops)} ops", "first_unmapped": {"index": bad, "op": "ADD", "reason": "no adders here"},
                "cpu_from": bad}

    rules = dataclasses.replace(TARGETS["rpi4"], deploy_artifact="onnx", checker=checker)
    monkeypatch.setitem(TARGETS, "rpi4", rules)
    return calls


def test_precheck_names_the_first_unmapped_op_and_how_to_skip(tmp_path, onnx_target):
    from pipeline.export.untrained import precheck

    cfg = _cfg(tmp_path)
    with pytest.raises(PipelineError) as err:
        precheck(cfg)
    message = str(err.value)
    assert "resnet8" in message and "rpi4" in message and "ADD: no adders here" in message
    assert "target.check_before_training: false" in message and "\n" not in message
    assert len(onnx_target) == 1 and "Conv" in onnx_target[0]  # the untrained resnet8, exported
    cached = list((tmp_path / "pre" / "cache").glob("precheck-rpi4-*.json"))
    assert len(cached) == 1

    with pytest.raises(PipelineError):  # the re-run is answered from the cache: the checker is not called again
        precheck(cfg)
    assert len(onnx_target) == 1


def test_precheck_cache_key_follows_the_student_and_skip_flag(tmp_path, onnx_target, monkeypatch):
    from pipeline.export import untrained as check

    monkeypatch.setattr(check, "check_untrained", lambda *a: {"verdict": "ready", "passed": True, "summary": "ok"})
    first = check.precheck(_cfg(tmp_path))
    again = check.precheck(_cfg(tmp_path))
    assert first["cached"] is False and again["cached"] is True and again["input_shape"] == [1, 8, 8]
    other = check.precheck(validate_config({**_cfg(tmp_path).model_dump(mode="json"), "student": {"arch": "resnet14"}}))
    assert other["cached"] is False
    assert check.precheck(_cfg(tmp_path, check_before_training=False)) == {"skipped": True}
    assert check.precheck(_cfg(tmp_path, check_before_training=False), force=True)["cached"] is True


def test_benchmark_device_falls_back_to_cpu_only_when_absent():
    from pipeline.target.device import benchmark_device

    assert benchmark_device(TARGETS["openvino_npu"], devices=["CPU", "NPU"]) == "NPU"
    assert benchmark_device(TARGETS["openvino_npu"], devices=["CPU"]) == "CPU"
    assert benchmark_device(TARGETS["rpi4"], devices=[]) == "CPU"
