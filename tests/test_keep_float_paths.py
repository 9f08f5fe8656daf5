"""``export.keep_float`` on the ONNX Runtime (QDQ) and OpenVINO (NNCF) int8 paths.

The outlier TinyNet of ``test_accuracy_control`` (stage 0's channel 0 ×300, stage 1 divides it back): plain int8 of
both runtimes loses top-1 on validation, because one per-tensor activation range crushes the other channels. Patterns
must leave exactly the named layers' weights float; ``auto`` must win the rule back with a few layers, the layer
reading the crushed tensor among them. Then one export stage run carries the records to the sidecars and metrics.
"""

from __future__ import annotations

import pytest
import torch

from conftest import with_outlier_channel
from pipeline.export.fidelity import MIN_INT8_RETAINED
from test_accuracy_control import OUTLIER, _digits, _trained

CONV = {i: f"/stages/stages.{i}/stages.{i}.0/Conv" for i in range(3)}  # the ONNX names of TinyNet's convolutions


@pytest.fixture(scope="module")
def broken(tmp_path_factory):
    """(student.onnx of the outlier model, calibration, validation split)."""
    from pipeline.export.torch2onnx import torch2onnx

    x, y = _digits()
    model = with_outlier_channel(_trained(torch.from_numpy(x[:1200]), torch.from_numpy(y[:1200])), OUTLIER)
    onnx = torch2onnx(model, (1, 8, 8), tmp_path_factory.mktemp("broken") / "student.onnx", opset=17)
    return onnx, x[:64], (x[1200:1500], y[1200:1500])


def _qdq_weights(path) -> dict[str, bool]:
    """Each Conv/Gemm of a QDQ model: whether a DequantizeLinear feeds its weight (int8 weight)."""
    import onnx

    graph = onnx.load(str(path)).graph
    dq = {n.output[0] for n in graph.node if n.op_type == "DequantizeLinear"}
    return {n.name: n.input[1] in dq for n in graph.node if n.op_type in ("Conv", "Gemm")}


def test_qdq_patterns_leave_the_named_layers_float(broken, tmp_path):
    from pipeline.export.keep_float_onnx import qdq_keep_float

    onnx, calibration, _ = broken
    rec = qdq_keep_float(onnx, tmp_path / "q.onnx", calibration, (r"stages\.1\.0/Conv$", "no_such_layer"), True, None)
    assert rec["kept"] == [CONV[1]] and rec["unmatched"] == ["no_such_layer"] and rec["float_weights"] == [CONV[1]]
    assert "not_in_source_model" not in rec  # quant_pre_process kept student.onnx's names
    assert _qdq_weights(tmp_path / "q.onnx") == {CONV[0]: True, CONV[1]: False, CONV[2]: True, "/fc/Gemm": True}


def test_openvino_patterns_leave_the_named_layers_float(broken, tmp_path):
    import openvino as ov

    from pipeline.export.accuracy_control import float_layers
    from pipeline.export.keep_float_openvino import float_weights, openvino_patterns
    from pipeline.export.onnx2openvino import onnx2openvino
    from pipeline.runtimes.openvino_core import core

    onnx, calibration, _ = broken
    rec = openvino_patterns(onnx, [r"stages\.1\.0/Conv", "no_such_layer"])
    assert rec["kept"] == [f"{CONV[1]}/WithoutBiases", CONV[1]] and rec["unmatched"] == ["no_such_layer"]
    xml = onnx2openvino(onnx, tmp_path, calibration, fp32=False, ignored=rec["kept"])["openvino_int8"]
    # every other convolution and the MatMul keep int8 weights (float_layers lists only float ones)
    assert float_layers(core().read_model(str(xml)), ov.convert_model(str(onnx))) == [f"{CONV[1]}/WithoutBiases"]
    assert float_weights(xml, onnx, rec["kept"]) == [f"{CONV[1]}/WithoutBiases"]


def test_qdq_auto_keeps_the_fewest_layers_that_hold_the_rule(broken, tmp_path):
    from pipeline.export.keep_float_onnx import ort_top1, qdq_keep_float

    onnx, calibration, (x, y) = broken
    rec = qdq_keep_float(onnx, tmp_path / "q.onnx", calibration, "auto", True, (x, y))
    fp32 = rec["fp32_val_accuracy"]
    assert rec["mode"] == "auto" and rec["validation_images"] == 300 and fp32 > 0.9
    assert rec["plain_val_accuracy"] < MIN_INT8_RETAINED * fp32  # the outlier costs plain int8 (0.82 vs 0.97)
    assert CONV[1] in rec["kept"] and len(rec["kept"]) <= 3 and rec["float_weights"] == sorted(rec["float_weights"])
    assert set(rec["float_weights"]) == set(rec["kept"])
    assert rec["val_accuracy"] == ort_top1(tmp_path / "q.onnx", x, y) >= MIN_INT8_RETAINED * fp32  # as saved
    assert rec["candidates"][0]["name"] in (CONV[0], CONV[1])  # the crushed tensor's writer and reader rank first


def test_openvino_auto_keeps_the_fewest_layers_that_hold_the_rule(broken, tmp_path):
    from pipeline.export.accuracy_control import validation_accuracy
    from pipeline.export.keep_float_openvino import float_weights, openvino_auto
    from pipeline.export.onnx2openvino import onnx2openvino
    from pipeline.runtimes.openvino_core import core

    onnx, calibration, (x, y) = broken
    xml = onnx2openvino(onnx, tmp_path, calibration, fp32=False)["openvino_int8"]
    rec = openvino_auto(onnx, xml, calibration, (x, y), True)
    fp32 = rec["fp32_val_accuracy"]
    assert rec["plain_val_accuracy"] < MIN_INT8_RETAINED * fp32  # 0.92 vs 0.97
    assert f"{CONV[1]}/WithoutBiases" in rec["kept"] and len(rec["kept"]) <= 3
    assert validation_accuracy(core().read_model(str(xml)), x, y) >= MIN_INT8_RETAINED * fp32  # the IR rewritten
    assert float_weights(xml, onnx, rec["kept"]) == sorted(rec["kept"])


def test_a_sound_model_keeps_everything_int8(broken, tmp_path):
    """auto acts only on a miss: the same net without the outlier keeps the rule, nothing in float, nothing tried."""
    from pipeline.export.keep_float_onnx import qdq_keep_float
    from pipeline.export.torch2onnx import torch2onnx

    _, calibration, (x, y) = broken
    xs, ys = _digits()
    onnx = torch2onnx(_trained(torch.from_numpy(xs[:1200]), torch.from_numpy(ys[:1200])), (1, 8, 8), tmp_path / "s.onnx")
    rec = qdq_keep_float(onnx, tmp_path / "q.onnx", calibration, "auto", True, (x, y))
    assert rec["kept"] == [] and rec["tried"] == [] and "nothing kept" in rec["reason"]


def test_export_stage_records_keep_float_in_sidecars_and_metrics(tmp_path):
    import pipeline.data.stage as data_stage
    import pipeline.export.stage as export_stage
    from pipeline.config import validate_config
    from pipeline.formats.sidecar import read_sidecar
    from pipeline.run import StageContext
    from test_export import _train_student

    cfg = validate_config({
        "name": "t", "runs_dir": str(tmp_path), "target": {"name": "rpi4"},
        "data": {"dataset": "digits", "max_train": 300, "max_test": 60, "calibration_size": 32},
        "export": {"formats": ["onnx", "onnx_int8", "openvino_int8"], "keep_float": [r"^/conv1/Conv", "nowhere"],
                   "teacher_onnx": False},
    })
    data, out = tmp_path / "01_data", tmp_path / "05_export"
    data.mkdir(), out.mkdir()
    data_stage.run(StageContext(cfg=cfg, out=data, inputs={}, cache=tmp_path / "cache"))
    _train_student(data, tmp_path / "03_distill")
    metrics = export_stage.run(StageContext(cfg=cfg, out=out, inputs={"data": data, "distill": tmp_path / "03_distill"},
                                            cache=tmp_path / "cache")).manifest_dict()
    records = metrics["keep_float"]
    assert set(records) == {"onnx_int8", "openvino_int8"}
    assert records["onnx_int8"]["kept"] == ["/conv1/Conv"] == records["onnx_int8"]["float_weights"]
    assert records["openvino_int8"]["float_weights"] == ["/conv1/Conv/WithoutBiases"]
    for key, path in (("onnx_int8", out / "student_int8.onnx"), ("openvino_int8", out / "openvino_int8" / "student.xml")):
        assert records[key]["unmatched"] == ["nowhere"]
        assert read_sidecar(path)["quantization"]["keep_float"] == records[key]
