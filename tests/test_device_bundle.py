"""Which files a target's bundle takes (no toolchain: host predictions and the test sample are stubbed)."""

from __future__ import annotations

import json
import tarfile

import numpy as np
import pytest

import pipeline.device.bundle as bundle_mod
from pipeline.device.bundle import make_bundle, select_artifacts
from pipeline.errors import PipelineError
from pipeline.formats import FORMATS
from pipeline.target import TARGETS
from pipeline.target.rules import TargetRules

EXPORTED = {key: FORMATS[key].file for key in ("onnx", "tflite_fp32", "tflite_int8", "openvino_fp32", "openvino_int8")}


@pytest.fixture
def run(tmp_path, monkeypatch):
    export = tmp_path / "run" / "05_export"
    for key, rel in EXPORTED.items():
        path = export / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(key.encode() * 10)
        path.with_name(path.name + ".json").write_text(json.dumps({"format": key, "input": {}}))
        if path.suffix == ".xml":
            path.with_suffix(".bin").write_bytes(b"weights-" + key.encode())
    (export / "artifacts.json").write_text(json.dumps(EXPORTED))
    targets = {
        "npu": TargetRules(name="npu", description="OpenVINO NPU", deploy_artifact="openvino_int8", device="NPU"),
        "pi": TargetRules(name="pi", description="LiteRT CPU", deploy_artifact="tflite_int8", threads=4),
        "coral": TargetRules(name="coral", description="Edge TPU", deploy_artifact="tflite_int8",
                             compiler=TARGETS["edge_tpu"].compiler, delegate=TARGETS["edge_tpu"].delegate),
    }
    monkeypatch.setattr("pipeline.target.TARGETS", targets)
    x, y = np.zeros((7, 1, 8, 8), np.float32), np.arange(7) % 3
    monkeypatch.setattr(bundle_mod, "test_sample", lambda run_dir, n: (x[:n], y[:n]))
    monkeypatch.setattr(bundle_mod, "host_predictions", lambda path, xs: np.full(len(xs), len(path.name) % 3))
    return tmp_path / "run"


def _members(path):
    with tarfile.open(path) as tar:
        return set(tar.getnames()), json.load(tar.extractfile("bundle.json"))


def test_openvino_target_takes_every_ir_with_its_weights_under_distinct_paths(run, tmp_path):
    names, manifest = _members(make_bundle(run, "npu", tmp_path / "npu.tar"))
    assert list(manifest["artifacts"]) == ["openvino_int8", "openvino_fp32"]  # deploy artifact first
    for fmt in ("openvino_int8", "openvino_fp32"):
        assert {f"models/{fmt}/student.xml", f"models/{fmt}/student.bin", f"models/{fmt}/student.xml.json"} <= names
        assert manifest["artifacts"][fmt]["size_bytes"] == len(fmt.encode() * 10) + len(b"weights-" + fmt.encode())
    assert not any("tflite" in n or "onnx" in n for n in names)
    assert manifest["runtime_device"] == "NPU" and manifest["target"] == "npu"


def test_edge_tpu_bundle_adds_the_compiled_model_when_06_target_has_it(run, tmp_path):
    _, manifest = _members(make_bundle(run, "coral", tmp_path / "a.tar"))
    assert list(manifest["artifacts"]) == ["tflite_int8", "tflite_fp32"] and manifest["deploy_artifact"] == "tflite_int8"
    (run / "06_target" / "edgetpu").mkdir(parents=True)
    (run / "06_target" / "edgetpu" / "student_int8_edgetpu.tflite").write_bytes(b"compiled")
    names, manifest = _members(make_bundle(run, "coral", tmp_path / "b.tar"))
    assert list(manifest["artifacts"]) == ["tflite_edgetpu", "tflite_int8", "tflite_fp32"]
    assert manifest["deploy_artifact"] == "tflite_edgetpu"
    tpu = manifest["artifacts"]["tflite_edgetpu"]
    assert tpu["path"] == "models/edgetpu/student_int8_edgetpu.tflite" and tpu["sidecar"] == tpu["path"] + ".json"
    assert tpu["host"]["reference"] == "tflite_int8"  # the host cannot run it: compared with the int8 model
    assert tpu["delegate"]["library"]["Linux"] == "libedgetpu.so.1"  # the target names the board's delegate
    assert "delegate" not in manifest["artifacts"]["tflite_int8"]
    assert tpu["host"]["predictions"] == manifest["artifacts"]["tflite_int8"]["host"]["predictions"]
    _, pi = _members(make_bundle(run, "pi", tmp_path / "pi.tar"))
    assert "tflite_edgetpu" not in pi["artifacts"]  # only a target with the Edge TPU compiler takes it


def test_sample_size_and_settings_travel_in_the_manifest(run, tmp_path):
    _, manifest = _members(make_bundle(run, "pi", tmp_path / "pi.tar", samples=5))
    assert manifest["sample"] == {"path": "sample.npz", "split": "test", "count": 5, "shape": [5, 1, 8, 8]}
    # config defaults, with "all cores" spelled as the target's 4 threads: the board times what the target runs
    assert manifest["settings"] == {"warmup": 10, "min_runs": 25, "min_seconds": 0.0, "precision_pct": 3.0, "max_seconds": 0.5,
                                    "confidence": 0.95, "threads": [1, 4]}
    assert manifest["target_threads"] == 4
    acc = manifest["artifacts"]["tflite_int8"]["host"]["accuracy"]
    assert acc == pytest.approx(np.mean(np.full(5, len("student_int8.tflite") % 3) == np.arange(5) % 3))


def test_mistakes_are_one_line_errors(run, tmp_path):
    with pytest.raises(PipelineError, match=r"--target pii: unknown \(known: coral, npu, pi\); did you mean 'pi'\?"):
        select_artifacts(run, "pii")
    (run / "05_export" / "artifacts.json").write_text(json.dumps({"onnx": "student.onnx"}))
    with pytest.raises(PipelineError, match="none of the formats target pi runs"):
        select_artifacts(run, "pi")
    (run / "05_export" / "artifacts.json").write_text(json.dumps({"tflite_int8": "gone.tflite"}))
    with pytest.raises(PipelineError, match="gone.tflite: tflite_int8 artifact listed but missing"):
        select_artifacts(run, "pi")
    (run / "05_export" / "artifacts.json").unlink()
    with pytest.raises(PipelineError, match="artifacts.json: missing; finish the export stage"):
        select_artifacts(run, "pi")
    with pytest.raises(PipelineError, match="no such run folder"):
        make_bundle(tmp_path / "nowhere", "pi", tmp_path / "x.tar")
