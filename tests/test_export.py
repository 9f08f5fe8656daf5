"""Export stage end to end on real digits: every format written with its sidecar, checked against PyTorch.

One module-scoped fixture runs the data stage, trains a resnet8 for a moment, and runs the
export stage once with every format (the Edge TPU target: per-channel int8, uint8 I/O).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import trained_resnet8
from pipeline.artifacts import sha256_file
from pipeline.config import validate_config
from pipeline.errors import PipelineError
from pipeline.export.fidelity import compare
from pipeline.formats import FORMATS, format_keys
from pipeline.formats.sidecar import read_sidecar
from pipeline.formats.tflite_graph import full_integer_problems, read_tflite
from pipeline.run import StageContext

ALL_FORMATS = format_keys(exported=True)  # every format the export stage makes


def _config(root: Path, **export):
    return validate_config({
        "name": "t",
        "runs_dir": str(root),
        "data": {"dataset": "digits", "max_train": 300, "max_test": 150, "calibration_size": 48},
        "export": {"formats": ALL_FORMATS, **export},
    })


def _train_student(data_dir: Path, out: Path) -> Path:
    from pipeline.data import load_split, read_split_info
    from pipeline.models.checkpoint import save_checkpoint

    x, y = (torch.from_numpy(a) for a in load_split(data_dir, "train"))
    info = read_split_info(data_dir)
    model = trained_resnet8(x, y, batch=50)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"arch": "resnet8", "arch_args": {}, "num_classes": 10, "in_channels": 1,
            "preprocess": info["preprocess"], "class_names": info["class_names"]}
    save_checkpoint(out / "student.pt", model.eval(), meta)
    return out / "student.pt"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    import pipeline.data.stage as data_stage
    import pipeline.export.stage as export_stage

    root = tmp_path_factory.mktemp("run")
    cfg = _config(root)
    data = root / "01_data"
    data.mkdir()
    data_stage.run(StageContext(cfg=cfg, out=data, inputs={}, cache=root / "cache"))
    _train_student(data, root / "03_distill")
    _train_student(data, root / "02_teacher").rename(root / "02_teacher" / "teacher.pt")  # any checkpoint serves as teacher here
    (root / "04_qat").mkdir()  # QAT ran without writing a student: export falls back to the distilled one
    out = root / "05_export"
    out.mkdir()
    inputs = {"data": data, "teacher": root / "02_teacher", "distill": root / "03_distill", "qat": root / "04_qat"}
    metrics = export_stage.run(StageContext(cfg=cfg, out=out, inputs=inputs, cache=root / "cache")).manifest_dict()
    return {"root": root, "out": out, "metrics": metrics, "cfg": cfg, "inputs": inputs}


def test_every_format_is_listed_and_has_a_sidecar(run_dir):
    out = run_dir["out"]
    listed = json.loads((out / "artifacts.json").read_text())
    assert list(listed) == ALL_FORMATS
    checkpoint_hash = sha256_file(run_dir["root"] / "03_distill" / "student.pt")
    for key, rel in listed.items():
        path = out / rel
        assert path.is_file(), key
        if path.suffix == ".xml":
            assert path.with_suffix(".bin").is_file() and path.parent.name == key
        side = read_sidecar(path, required=True)
        assert side["format"] == key and side["sha256"] == sha256_file(path)
        assert side["layout"] == ("NHWC" if FORMATS[key].family == "tflite" else "NCHW")
        assert side["preprocess"]["image_size"] == 8 and side["preprocess"]["channels"] == 1
        assert len(side["class_names"]) == 10 and side["sources"]["checkpoint"]["sha256"] == checkpoint_hash
        assert "numpy" in side["tools"]


def test_int8_tflite_sidecar_carries_io_quantisation(run_dir):
    side = read_sidecar(run_dir["out"] / "student_int8.tflite")
    graph = read_tflite(run_dir["out"] / "student_int8.tflite")
    assert side["input"]["dtype"] == side["output"]["dtype"] == "uint8"  # the Edge TPU target's I/O
    assert side["input"]["shape"] == [1, 8, 8, 1]
    assert side["input"]["quantization"] == {"scale": graph.inputs[0].scale, "zero_point": graph.inputs[0].zero_point}
    assert side["output"]["quantization"]["scale"][0] > 0
    assert side["quantization"]["scheme"] == "per-channel" and side["quantization"]["calibration_images"] == 48
    assert read_sidecar(run_dir["out"] / "student_fp32.tflite")["input"]["quantization"] is None


def test_fidelity_is_measured_on_the_whole_test_split(run_dir):
    m = run_dir["metrics"]
    json.dumps(m)  # lands in manifest.json
    assert m["source"] == "distill" and m["test_images"] == 150
    rows = m["fidelity"]
    assert set(rows) == set(ALL_FORMATS)
    for key in [k for k in ALL_FORMATS if FORMATS[k].fidelity == "logits"]:
        assert rows[key]["passed"], rows[key]
        assert rows[key]["agreement"] >= 0.999 and rows[key]["max_abs_logit_diff"] < 1e-3
        assert rows[key]["accuracy"] == pytest.approx(m["source_accuracy"], abs=1 / 150)
    assert m["source_accuracy"] > 0.5  # the student learned something, so int8 agreement means something
    for key in [k for k in ALL_FORMATS if FORMATS[k].precision == "int8"]:
        assert rows[key]["agreement"] >= 0.9, rows[key]
        assert rows[key]["accuracy_retained"] == pytest.approx(rows[key]["accuracy"] / m["source_accuracy"])
    assert rows["openvino_fp16"]["agreement"] >= 0.99
    assert rows["tflite_int8"]["op_check"]["passed"] and rows["tflite_int8"]["op_check"]["problems"] == []
    assert m["passed"] == (m["failed"] == 0) and m["tflite_int8_accuracy"] == rows["tflite_int8"]["accuracy"]


def test_onnx_int8_is_qdq_with_per_channel_weights_and_keeps_the_pytorch_top1(run_dir):
    """ONNX Runtime static quantisation of a model that learned something: int8 weights with one scale per
    output channel, calibrated on the run's calibration images, and top-1 as PyTorch's on the test split."""
    import onnx
    from onnx import numpy_helper

    path = run_dir["out"] / FORMATS["onnx_int8"].file
    graph = onnx.load(str(path)).graph
    ops = [n.op_type for n in graph.node]
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops and "Conv" in ops  # QDQ: float ops between Q/DQ pairs
    weights = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    scales = [weights[n.input[1]] for n in graph.node
              if n.op_type == "DequantizeLinear" and n.input[0] in weights and weights[n.input[0]].dtype == np.int8]
    assert scales and any(s.ndim == 1 and s.size > 1 for s in scales)  # per-channel weight scales
    side = read_sidecar(path, required=True)
    assert side["input"]["dtype"] == "float32" and side["layout"] == "NCHW"
    assert side["quantization"]["format"] == "QDQ" and side["quantization"]["calibration_images"] == 48
    m = run_dir["metrics"]
    row = m["fidelity"]["onnx_int8"]
    assert row["precision"] == "int8" and row["passed"], row
    assert row["agreement"] >= 0.95 and row["accuracy_retained"] >= 0.99, row


def test_int8_op_check_rejects_a_float_model(run_dir):
    problems = full_integer_problems(read_tflite(run_dir["out"] / "student_fp32.tflite"), "uint8")
    assert any("is float32, expected uint8" in p for p in problems)
    assert any(p.startswith("float op") and "CONV_2D" in p for p in problems)


def test_a_fidelity_miss_names_both_numbers():
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((100, 10)).astype(np.float32)
    labels = ref.argmax(1)
    scale = float(np.abs(ref).max())  # > 1: the bound is 1e-3 × scale
    row = compare("tflite_fp32", ref + 2e-3 * scale, ref, labels)
    assert not row["passed"] and f"max |Δlogit| {2e-3 * scale:.2e} > 0.001 × logit scale {scale:.3g}" in row["message"]
    assert compare("tflite_fp32", ref + 0.5e-3 * scale, ref, labels)["passed"]
    worse = ref.copy()
    worse[:10] = -worse[:10]  # 10 % of the predictions change
    row = compare("tflite_int8", worse, ref, labels)
    assert not row["passed"] and "90.00% of fp32 100.00%" in row["message"]
    assert compare("onnx", ref, ref, labels)["passed"]


def test_source_prefers_the_qat_student(run_dir, tmp_path):
    from pipeline.export.stage import source_checkpoint

    qat, distill = tmp_path / "04_qat", run_dir["root"] / "03_distill"
    qat.mkdir()
    shutil.copy(distill / "student.pt", qat / "student.pt")
    ctx = StageContext(cfg=_config(run_dir["root"], source="qat"), out=tmp_path, inputs={"distill": distill, "qat": qat},
                       cache=tmp_path)
    assert source_checkpoint(ctx) == (qat / "student.pt", "qat", "QAT weights: export.source: qat")
    ctx.cfg = _config(run_dir["root"], source="distill")
    assert source_checkpoint(ctx) == (distill / "student.pt", "distill", "distilled weights: export.source: distill")


def test_auto_source_follows_the_qat_guard(run_dir, tmp_path):
    from pipeline.export.stage import source_checkpoint

    qat, distill = tmp_path / "04_qat", run_dir["root"] / "03_distill"
    qat.mkdir()
    shutil.copy(distill / "student.pt", qat / "student.pt")
    ctx = StageContext(cfg=run_dir["cfg"], out=tmp_path, inputs={"distill": distill, "qat": qat}, cache=tmp_path)
    assert run_dir["cfg"].export.source == "auto"
    assert source_checkpoint(ctx)[1:] == ("distill", "distilled weights: no QAT stage decision to follow")
    (qat / "guard.json").write_text('{"export": "distill", "reason": "distilled weights: QAT lost 3.00 points"}')
    assert source_checkpoint(ctx) == (distill / "student.pt", "distill",
                                      "distilled weights: QAT lost 3.00 points (export.source: auto)")
    (qat / "guard.json").write_text('{"export": "qat", "reason": "QAT weights: int8 98 %"}')
    assert source_checkpoint(ctx) == (qat / "student.pt", "qat", "QAT weights: int8 98 % (export.source: auto)")


@pytest.mark.parametrize("damage", ["missing", "empty", "zero_images"])
def test_missing_or_empty_calibration_is_one_clear_error(run_dir, tmp_path, damage):
    import pipeline.export.stage as export_stage

    data = tmp_path / "01_data"
    data.mkdir()
    shutil.copy(run_dir["inputs"]["data"] / "split.json", data / "split.json")
    if damage == "empty":
        (data / "calibration.npy").write_bytes(b"")
    elif damage == "zero_images":
        np.save(data / "calibration.npy", np.zeros((0, 1, 8, 8), np.float32))
    ctx = StageContext(cfg=run_dir["cfg"], out=tmp_path / "out", inputs={**run_dir["inputs"], "data": data}, cache=tmp_path)
    with pytest.raises(PipelineError, match=r"calibration subset .* is missing/empty: .*re-run the data stage .*--from data") as err:
        export_stage.run(ctx)
    assert "\n" not in str(err.value)


def test_converter_failure_names_the_tool_and_the_op(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    from pipeline.export.onnx2tflite import onnx2tflite

    node = helper.make_node("Frobnicate", ["input"], ["logits"], name="frob0", domain="com.example")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 1, 8, 8])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 1, 8, 8])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)]),
              tmp_path / "frob.onnx")
    calib = np.zeros((4, 1, 8, 8), np.float32)
    with pytest.raises(PipelineError, match=r"^export: onnx2tf failed on Frobnicate: .*not yet implemented") as err:
        onnx2tflite(tmp_path / "frob.onnx", tmp_path / "out", calib, "int8", True)
    assert "\n" not in str(err.value)
    (tmp_path / "bogus.onnx").write_bytes(b"not an onnx file")
    with pytest.raises(PipelineError, match="bogus.onnx is not a readable ONNX model"):
        onnx2tflite(tmp_path / "bogus.onnx", tmp_path / "out", calib, "int8", True)


def test_onnx2tf_skips_what_nobody_keeps_and_the_kept_two_are_the_same_bytes(run_dir, tmp_path, monkeypatch):
    """float16, dynamic range, integer quant (float I/O) and both int16-activation models are not converted, onnxsim
    runs in the child's own process; the float32 and full-integer models are byte for byte what onnx2tf makes as is."""
    from pipeline.export import onnx2tflite as mod

    logs = []

    def spy(*args, **kwargs):
        proc = real(*args, **kwargs)
        logs.append(Path(kwargs["stdout"].name).read_text(errors="replace"))
        return proc

    real = mod.run_child
    monkeypatch.setattr(mod, "run_child", spy)
    calib = np.load(run_dir["inputs"]["data"] / "calibration.npy")[:32]
    fast = mod.onnx2tflite(run_dir["out"] / "student.onnx", tmp_path / "fast", calib, "uint8", True)
    monkeypatch.setenv(mod.AS_IS_ENV, "1")
    full = mod.onnx2tflite(run_dir["out"] / "student.onnx", tmp_path / "full", calib, "uint8", True)
    assert logs[0].count("onnx2tf variant not converted (unused)") == 5 and "pipeline:" not in logs[1]
    assert logs[0].count("pipeline: onnxsim run in this process") >= 3  # onnx2tf simplifies three times in a row
    assert list(fast) == list(full) == ["tflite_fp32", "tflite_int8"]
    for key in fast:
        assert sha256_file(fast[key]) == sha256_file(full[key]), key


def test_teacher_is_exported_to_onnx_as_the_latency_baseline_not_as_a_student_artifact(run_dir):
    out, metrics = run_dir["out"], run_dir["metrics"]
    assert (out / "teacher.onnx").is_file()
    assert "teacher.onnx" not in json.loads((out / "artifacts.json").read_text()).values()
    assert read_sidecar(out / "teacher.onnx")["model"] == "teacher"
    row = metrics["teacher_onnx"]
    assert row["passed"] and row["agreement"] >= 0.999 and row["max_abs_logit_diff"] < 1e-3


def test_int8_error_per_layer_is_written_beside_the_int8_model(run_dir):
    out, metrics = run_dir["out"], run_dir["metrics"]
    doc = json.loads((out / "layer_error.json").read_text())
    assert doc["artifact"] == "student_int8.tflite" and doc["reference"] == "student_fp32.tflite"
    assert doc["images"] == 32 and doc["layers"] == len(doc["records"]) > 10  # resnet8: input, 9 convs, adds, pads, mean, fc
    sqnr = [r["sqnr_db"] for r in doc["records"]]
    assert sqnr == sorted(sqnr) and sqnr[0] > 15  # a trained resnet8 quantises well everywhere
    assert doc["worst"] == {"name": doc["records"][0]["name"], "op": doc["records"][0]["op"], "sqnr_db": sqnr[0]}
    summary = metrics["layer_error"]["tflite_int8"]
    assert summary["records"] == doc["records"][:10] and summary["worst"] == doc["worst"] and "error" not in summary


def test_openvino_int8_error_per_layer_is_written_beside_its_ir(run_dir):
    """The IR as deployed (after the accuracy-control decision) against student.onnx: every ReLU/Add/pool output
    NNCF quantised, the logits last in execution order."""
    out, metrics = run_dir["out"], run_dir["metrics"]
    doc = json.loads((out / "openvino_int8" / "layer_error.json").read_text())
    assert doc["artifact"] == "openvino_int8/student.xml" and doc["reference"] == "student.onnx" and doc["images"] == 32
    ops = {r["op"] for r in doc["records"]}
    assert {"Relu", "Add"} <= ops and "FakeQuantize" not in ops and "Constant" not in ops
    logits = [r for r in doc["records"] if r["scale"] is None]
    assert len(logits) == 1 and logits[0]["shape"] == [1, 10]
    assert all(r["sqnr_db"] > 10 for r in doc["records"])  # a trained resnet8: no layer breaks
    assert metrics["layer_error"]["openvino_int8"]["worst"] == doc["worst"]


def test_the_edge_tpu_tflite_int8_is_onnx2tf_and_the_sidecar_says_why(run_dir):
    """tflite_converter: auto (the default) does not try litert-torch for uint8 I/O; the choice is recorded."""
    side = read_sidecar(run_dir["out"] / "student_int8.tflite")
    assert side["converter"] == "onnx2tf" and side["converter_choice"]["chosen"] == "onnx2tf"
    assert "int8 I/O only, the target wants uint8" in side["converter_choice"]["reason"]
    assert run_dir["metrics"]["tflite_converter"] == side["converter_choice"]


def test_openvino_int8_records_the_accuracy_control_decision(run_dir):
    rec = run_dir["metrics"]["openvino_accuracy_control"]
    assert rec["mode"] == "auto" and rec["validation_images"] > 0 and rec["max_drop"] == 0.01
    side = read_sidecar(run_dir["out"] / "openvino_int8" / "student.xml")
    assert side["quantization"]["accuracy_control"] == rec
    used = "nncf.quantize_with_accuracy_control" if rec["used"] else "nncf.quantize"
    assert side["quantization"]["tool"] == used and rec["reason"]
    from report_fakes import make_results

    from pipeline.report.build import RunRecords, build_report
    from pipeline.report.markdown import render_markdown

    md = render_markdown(build_report(make_results(), records=RunRecords(folder="runs/demo", export=run_dir["metrics"])))
    row = next(line for line in md.splitlines() if line.startswith("| OpenVINO accuracy control |"))  # the report shows it
    assert row.startswith(f"| OpenVINO accuracy control | {'accuracy-controlled int8 adopted' if rec['used'] else 'plain int8 kept'}")
    assert f"| {rec['validation_images']} validation" in row


@pytest.mark.parametrize("per_channel", [True, False])
def test_nncf_quantises_weights_by_the_targets_scheme(tmp_path, per_channel):
    """TargetRules.per_channel reaches NNCF: one weight range per output channel, or one per tensor."""
    from conftest import TinyNet
    from pipeline.export.onnx2openvino import onnx2openvino
    from pipeline.export.torch2onnx import torch2onnx
    from pipeline.runtimes.openvino_core import core as ov_core

    torch.manual_seed(0)
    onnx_path = torch2onnx(TinyNet().eval(), (1, 8, 8), tmp_path / "tiny.onnx")
    calibration = np.random.default_rng(0).standard_normal((8, 1, 8, 8)).astype(np.float32)
    xml = onnx2openvino(onnx_path, tmp_path, calibration, fp32=False, per_channel=per_channel)["openvino_int8"]
    conv_weight_ranges = []  # NNCF stores int8 weights: Constant(i8) → Convert → Multiply(scale) feeding each conv
    for op in ov_core().read_model(str(xml)).get_ordered_ops():
        if op.get_type_name() == "Multiply" and op.get_friendly_name().endswith("/fq_weights_1"):
            if len(op.input(0).get_partial_shape()) == 4:
                conv_weight_ranges.append(list(op.input(1).get_partial_shape().to_shape()))
    assert len(conv_weight_ranges) == 3  # the three convs
    for shape, out_channels in zip(conv_weight_ranges, (4, 8, 16)):
        assert int(np.prod(shape)) == (out_channels if per_channel else 1), shape
