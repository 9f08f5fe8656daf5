"""OpenVINO int8 error per layer: every activation NNCF quantised against the same-named op of the ONNX model.

The sound / broken TinyNet pair of the accuracy-control tests (stage 0's channel 0 ×300 after BN, undone by stage 1's
weights): in fp32 the same function, in int8 one range that crushes the other channels of stage 0's output. The
comparison must find it where it happens, and its numbers must be the ones a plain int8-vs-fp32 run gives.
"""

from __future__ import annotations

import numpy as np
import pytest
from test_accuracy_control import irs  # noqa: F401 - the module's fixture: sound and broken IRs from one trained TinyNet

from pipeline.errors import PipelineError
from pipeline.export.layer_error import sqnr_db, write_layer_error
from pipeline.export.layer_error_openvino import _zero_point, openvino_layer_errors

STAGE = "/stages/stages.{i}/stages.{i}.2/Relu"


@pytest.fixture(scope="module")
def errors(irs):  # noqa: F811
    made, calibration, _ = irs
    return {name: {r.name: r for r in openvino_layer_errors(xml, onnx, calibration[:32])} for name, (onnx, xml) in made.items()}


def test_every_quantised_activation_and_the_logits_are_compared_never_a_weight(errors):
    sound = errors["sound"]
    assert set(sound) == {"input", *(STAGE.format(i=i) for i in range(3)), "/pool/GlobalAveragePool", "logits"}
    assert sound["input"].op == "Parameter" and sound["input"].sqnr_db > 40  # 8-bit rounding of the input alone
    assert sound["logits"].scale is None and sound["logits"].zero_point is None and sound["logits"].shape == [1, 10]
    assert all(r.scale > 0 and r.zero_point == 0 for n, r in sound.items() if n != "logits")  # ReLU outputs: uint8, zp 0


def test_the_logits_number_is_plain_int8_against_onnx(irs, errors):
    from pipeline.runtimes.openvino_core import core as ov_core

    made, calibration, _ = irs
    onnx, xml = made["broken"]
    core = ov_core()
    q, f = (core.compile_model(str(p), "CPU", {"INFERENCE_PRECISION_HINT": "f32"}) for p in (xml, onnx))
    x = calibration[:32]
    got = np.concatenate([q(x[i : i + 1])[0] for i in range(len(x))])
    ref = np.concatenate([f(x[i : i + 1])[0] for i in range(len(x))])
    assert errors["broken"]["logits"].sqnr_db == pytest.approx(sqnr_db(ref, got), abs=1e-6)


def test_the_outlier_channel_is_found_where_it_breaks(errors):
    sound, broken = errors["sound"], errors["broken"]
    stage0, stage1 = STAGE.format(i=0), STAGE.format(i=1)
    assert broken[stage0].scale > 50 * sound[stage0].scale  # the outlier sets stage 0's int8 range
    assert broken[stage1].sqnr_db < sound[stage1].sqnr_db - 6  # and the layer reading it loses its signal
    assert min(broken.values(), key=lambda r: r.sqnr_db).name == stage1  # worst of all: the first to break


def test_summary_beside_the_ir_and_a_missing_reference_is_one_recorded_line(irs, tmp_path):
    import shutil

    made, calibration, _ = irs
    onnx, xml = made["broken"]
    ir = tmp_path / "openvino_int8" / "student.xml"
    ir.parent.mkdir()
    for src in (xml, xml.with_suffix(".bin")):
        shutil.copyfile(src, ir.parent / src.name)
    shutil.copyfile(onnx, tmp_path / "student.onnx")
    record = write_layer_error(ir, tmp_path / "student.onnx", calibration, tmp_path, max_images=8, compare=openvino_layer_errors)
    assert record["file"] == "openvino_int8/layer_error.json" and (ir.parent / "layer_error.json").is_file()
    assert record["worst"]["name"] == STAGE.format(i=1) and record["images"] == 8 and record["layers"] == 6

    (ir.parent / "layer_error.json").unlink()
    other = write_layer_error(ir, tmp_path / "gone.onnx", calibration, tmp_path, max_images=8, compare=openvino_layer_errors)
    assert "gone.onnx" in other["error"] and "\n" not in other["error"] and not (ir.parent / "layer_error.json").exists()


def test_zero_points_of_signed_and_unsigned_ranges():
    assert _zero_point(-1.28, 0.01) == 0  # symmetric int8
    assert _zero_point(0.0, 0.01) == 0  # uint8 from 0 (after a ReLU)
    assert _zero_point(-0.5, 0.01) == 50 - 128  # asymmetric: int8 zero point of a range that is not centred
    with pytest.raises(PipelineError):
        openvino_layer_errors("/nonexistent.xml", "/nonexistent.onnx", np.zeros((1, 1, 8, 8), np.float32))
