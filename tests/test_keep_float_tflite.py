"""``export.keep_float`` on onnx2tf's TFLite int8 (Quantization Debugger's ``denylisted_nodes``).

One onnx2tf conversion of the broken TinyNet (an outlier channel after stage 0 that sets that tensor's whole int8
range) with a pattern request that also keeps the calibrated model: the pattern's layer is float in the int8 file,
every other op int8, the unmatched pattern recorded, and the full-integer checks accept exactly that layer. The plain
int8 is the calibrated model re-quantised with nothing in float; ``auto`` on it must win back the 99 % rule.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from test_accuracy_control import _digits, _trained

from pipeline.export.fidelity import MIN_INT8_RETAINED, top1

CONV0 = r"tf\.nn\.relu/Relu;"  # stage 0's conv+BN+ReLU: the layer whose output holds the outlier channel


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    import torch

    from conftest import with_outlier_channel
    from pipeline.export.onnx2tflite import onnx2tflite
    from pipeline.export.tflite_keep_float import FloatRequest
    from pipeline.export.torch2onnx import torch2onnx

    x, y = _digits()
    broken = with_outlier_channel(_trained(torch.from_numpy(x[:1200]), torch.from_numpy(y[:1200])), 300.0)
    folder = tmp_path_factory.mktemp("broken")
    onnx = torch2onnx(broken, (1, 8, 8), folder / "student.onnx", opset=17)
    request = FloatRequest([CONV0, "no_such_layer"], calibrated=folder / "calibrated.tflite")
    made = onnx2tflite(onnx, folder, x[:16], "int8", True, strict=True, keep_float=request)
    return made, request, x, y, folder


def test_the_patterns_layer_is_float_and_the_rest_int8(converted):
    from pipeline.export.keep_float import pattern_record
    from pipeline.export.tflite_keep_float import MECHANISM
    from pipeline.formats.layer_names import layer_key
    from pipeline.formats.tflite_graph import full_integer_problems, read_tflite

    made, request, *_ = converted
    record = pattern_record(request.patterns, request.names, MECHANISM)
    assert len(record["kept"]) == 1 and record["kept"][0].startswith("model_1/tf.nn.relu/Relu;")
    assert record["unmatched"] == ["no_such_layer"] and len(request.nodes) == 1
    graph = read_tflite(made["tflite_int8"])
    computing = [op for op in graph.ops if op.opcode_name not in ("QUANTIZE", "DEQUANTIZE")]
    float_ops = [op for op in computing if op.outputs[0].dtype == "float32"]
    assert [layer_key(op.outputs[0].name) for op in float_ops] == record["kept"]
    assert all(op.outputs[0].dtype == "int8" for op in computing if op not in float_ops) and len(computing) == 7
    assert [t.dtype for t in graph.inputs + graph.outputs] == ["int8", "int8"]
    assert full_integer_problems(graph, "int8", float_layers=record["kept"]) == []  # strict=True passed too
    assert full_integer_problems(graph, "int8")  # not without the record
    other = [layer_key(op.outputs[0].name) for op in computing if op not in float_ops][:1]
    assert full_integer_problems(graph, "int8", float_layers=other)  # nor with another layer named


def test_the_rpi4_target_check_reads_the_kept_layers_from_the_sidecar(converted, tmp_path):
    from pipeline.formats.sidecar import tflite_io, write_sidecar
    from pipeline.target import TARGETS
    from pipeline.target.checks import check_tflite

    made, request, *_ = converted
    path = shutil.copy(made["tflite_int8"], tmp_path / "student_int8.tflite")
    spec_in, spec_out = tflite_io(path)
    write_sidecar(path, format="tflite_int8", input=spec_in, output=spec_out, class_names=[str(i) for i in range(10)],
                  preprocess={"image_size": 8, "channels": 1, "mean": [0.5], "std": [0.5]}, sources={}, extra={"quantization": {"keep_float": {"kept": [request.names[0]]}}})
    report = check_tflite(path, TARGETS["rpi4"])
    assert report["passed"], report["problems"]
    assert report["kept_float"] == [request.names[0]] and "1 layer(s) kept in float" in report["summary"]


def test_auto_keeps_the_broken_layer_and_wins_the_rule_back(converted, tmp_path):
    from pipeline.export.tflite_keep_float import keep_float_auto, requantize
    from pipeline.formats.tflite_graph import full_integer_problems, read_tflite

    made, request, x, y, folder = converted
    plain = requantize(request.calibrated, [[]], tmp_path / "plain")[0]  # nothing in float: the converter's own int8
    pair = {"tflite_fp32": made["tflite_fp32"], "tflite_int8": shutil.copy(plain, tmp_path / "student_int8.tflite")}
    validation = (x[1200:1500], y[1200:1500])
    fp32, before = top1(pair["tflite_fp32"], *validation), top1(pair["tflite_int8"], *validation)
    assert before < MIN_INT8_RETAINED * fp32
    record = keep_float_auto(pair, request.calibrated, x[:16], validation)
    kept = record["kept"]
    assert 1 <= len(kept) <= 3 and kept[0].startswith("model_1/tf.nn.relu/Relu;")  # the broken layer first
    assert record["because_of"] == kept[:1] and record["plain_val_accuracy"] == before
    after = top1(pair["tflite_int8"], *validation)
    assert after == record["val_accuracy"] >= MIN_INT8_RETAINED * fp32 > before
    assert full_integer_problems(read_tflite(pair["tflite_int8"]), "int8", float_layers=kept) == []
    assert not list(tmp_path.glob(".keep-float-*"))
    print(f"\nfp32 {fp32:.4f}, plain int8 {before:.4f}, auto {after:.4f}, kept {len(kept)}: {kept}")
