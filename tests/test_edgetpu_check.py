"""The static Edge TPU checker on tiny int8 TFLite models built here with TensorFlow's own converter,
and its per-op limits on hand-made ops (no TensorFlow)."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.formats.tflite_graph import TFLiteOp, TFLiteTensor
from pipeline.target import edge_tpu_ops as E
from pipeline.target.edge_tpu_check import FULLY, NOT_MAPPED, PARTIALLY, check_edgetpu, partition


# ---- tiny models, converted by tf.lite.TFLiteConverter (fast: no onnx2tf) ----

def _convert(tmp_path, name, build, input_shape=(1, 8, 8, 1), int8=True):
    tf = pytest.importorskip("tensorflow")
    tf.random.set_seed(0)
    inputs = tf.keras.Input(shape=input_shape[1:], batch_size=input_shape[0])
    model = tf.keras.Model(inputs, build(tf.keras.layers, inputs))
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if int8:
        rng = np.random.default_rng(0)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([rng.standard_normal(input_shape).astype(np.float32)] for _ in range(8))
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    path = tmp_path / f"{name}.tflite"
    path.write_bytes(converter.convert())
    return path


def _conv_net(L, x):
    x = L.Conv2D(8, 3, padding="same", activation="relu")(x)
    x = L.DepthwiseConv2D(3, padding="same", activation="relu6")(x)
    x = L.MaxPooling2D(2)(x)
    x = L.Conv2D(16, 3, padding="same", activation="relu")(x)
    x = L.GlobalAveragePooling2D()(x)
    return L.Dense(10)(x)


def _leaky_net(L, x):
    x = L.Conv2D(8, 3, padding="same")(x)
    x = L.LeakyReLU(0.1)(x)
    x = L.Conv2D(16, 3, padding="same", activation="relu")(x)
    x = L.GlobalAveragePooling2D()(x)
    return L.Dense(10)(x)


def _five_d_net(L, x):
    x = L.Conv2D(8, 3, padding="same", activation="relu")(x)  # 1x8x8x8
    x = L.Reshape((2, 4, 8, 8))(x)  # 1x2x4x8x8: two outer dimensions, one of them 2
    x = L.Lambda(lambda t: __import__("tensorflow").reduce_max(t, axis=1))(x)  # grouped max -> 1x4x8x8
    x = L.Permute((2, 3, 1))(x)
    x = L.Conv2D(8, 3, padding="same", activation="relu")(x)
    x = L.GlobalAveragePooling2D()(x)
    return L.Dense(10)(x)


@pytest.fixture(scope="module")
def conv_tflite(tmp_path_factory):
    return _convert(tmp_path_factory.mktemp("conv"), "conv", _conv_net)


def test_all_int8_conv_net_is_fully_mapped(conv_tflite):
    r = check_edgetpu(conv_tflite)
    assert r["verdict"] == FULLY and r["passed"]
    assert r["ops_mapped"] == r["ops_total"] > 4 and r["ops_cpu"] == 0
    assert r["cpu_from"] is None and r["first_unmapped"] is None
    assert {"CONV_2D", "DEPTHWISE_CONV_2D", "MAX_POOL_2D", "FULLY_CONNECTED"} <= set(r["op_counts"])
    assert all(row["status"] == E.MAPPED for row in r["ops"])
    # parameters: conv 8x3x3x1 + dw 3x3x8 + conv 16x3x3x8 + fc 10x16 int8 weights, int32 biases
    weights = 8 * 9 + 9 * 8 + 16 * 9 * 8 + 10 * 16
    assert weights < r["parameter_bytes_on_edgetpu"] == r["parameter_bytes"] < weights + 4 * (8 + 8 + 16 + 10) + 64
    assert r["fits_on_chip"] and "fully mapped: " in r["summary"]


@pytest.fixture(scope="module")
def leaky_tflite(tmp_path_factory):
    return _convert(tmp_path_factory.mktemp("leaky"), "leaky", _leaky_net)


def test_unsupported_op_is_named_with_the_cpu_cut_point(leaky_tflite):
    r = check_edgetpu(leaky_tflite)
    ops = [row["op"] for row in r["ops"]]
    cut = ops.index("LEAKY_RELU")
    assert r["verdict"] == PARTIALLY and not r["passed"]
    assert r["first_unmapped"]["op"] == "LEAKY_RELU" and r["first_unmapped"]["index"] == cut
    assert "not in the Edge TPU's supported operations" in r["first_unmapped"]["reason"]
    assert r["cpu_from"] == cut and r["ops_mapped"] == cut and r["ops_cpu"] == len(ops) - cut
    after = r["ops"][cut + 1:]
    assert after and all(row["status"] == E.AFTER_CUT and not row["on_edgetpu"] for row in after)
    assert r["ops"][cut]["status"] == E.NOT_SUPPORTED
    assert f"CPU from #{cut}" in r["summary"] and "LEAKY_RELU" in r["summary"]


def test_tensor_with_an_outer_dimension_above_one_is_flagged(tmp_path):
    r = check_edgetpu(_convert(tmp_path, "fived", _five_d_net))
    first = r["first_unmapped"]
    assert r["verdict"] == PARTIALLY and first["op"] == "RESHAPE"
    assert "[1, 2, 4, 8, 8]" in first["reason"] and "3 innermost" in first["reason"]
    assert r["ops"][first["index"]]["status"] == E.UNSUPPORTED_RANK
    assert r["cpu_from"] == first["index"] and r["ops_mapped"] == first["index"] >= 1


def test_batch_of_two_is_not_mapped(tmp_path):
    r = check_edgetpu(_convert(tmp_path, "batch2", _conv_net, input_shape=(2, 8, 8, 1)))
    assert r["verdict"] == NOT_MAPPED and r["ops_mapped"] == 0
    assert r["first_unmapped"]["index"] == 0 and "[2, 8, 8" in r["first_unmapped"]["reason"]


def test_float_model_is_rejected_as_not_quantized(tmp_path):
    r = check_edgetpu(_convert(tmp_path, "float", _conv_net, int8=False))
    assert r["verdict"] == NOT_MAPPED and not r["passed"] and r["ops_mapped"] == 0
    assert r["rejected"].startswith("Model not quantized") and "float32" in r["rejected"]
    assert all(not row["on_edgetpu"] for row in r["ops"])
    assert r["first_unmapped"]["op"] == "CONV_2D" and "float32" in r["first_unmapped"]["reason"]


# ---- the partition rule and per-op limits, on hand-made ops ----

@pytest.mark.parametrize("supported, expected", [
    ([True, True, True], (0, None)),
    ([True, False, True], (0, 1)),  # one partition: the supported op after the cut stays on the CPU
    ([False, True, True], (1, None)),  # a leading CPU op (float input's QUANTIZE), then the partition
    ([False, False], (None, None)),
])
def test_partition_is_one_run_of_mappable_ops(supported, expected):
    assert partition(supported) == expected


def _t(name, shape, dtype="int8", constant=False, index=-1, zero_point=0):
    return TFLiteTensor(name=name, shape=tuple(shape), shape_signature=tuple(shape), dtype=dtype, scale=[0.1],
                        zero_point=[zero_point], is_constant=constant, index=index)


def _view(opcode, inputs, outputs, options=None, constants=None):
    return E.OpView(TFLiteOp(0, opcode, inputs, outputs), options or {}, constants or {})


X = _t("x", (1, 8, 8, 4))


@pytest.mark.parametrize("view, fragment", [
    (_view("MAX_POOL_2D", [X], [X], {"fusedActivationFunction": 1}), "fused activation RELU"),
    (_view("CONV_2D", [X, _t("w", (4, 3, 3, 4), constant=True)], [X], {"dilationHFactor": 2, "dilationWFactor": 1}),
     "dilation 2x1"),
    (_view("SOFTMAX", [_t("s", (1, 4, 10))], [_t("o", (1, 4, 10))]), "not 1-D"),
    (_view("PAD", [X, _t("p", (4, 2), "int32", True, index=7)], [_t("y", (1, 10, 10, 4))],
           constants={7: np.array([[1, 1], [1, 1], [1, 1], [0, 0]])}), "pads the batch dimension"),
    (_view("MEAN", [_t("x6", (1, 8, 8, 6)), _t("a", (1,), "int32", True, index=3)], [_t("m", (1, 8, 8, 1))],
           constants={3: np.array([-1])}), "multiple of 4"),
    (_view("CONCATENATION", [X, _t("c", (1, 8, 8, 4), constant=True, index=5, zero_point=-3)], [_t("y", (1, 8, 8, 8))],
           constants={5: np.full((1, 8, 8, 4), 7, np.int8)}), "not all zeros"),
    (_view("STRIDED_SLICE", [X, *(_t(n, (4,), "int32", True, index=i) for n, i in (("b", 1), ("e", 2), ("s", 3)))], [X],
           constants={1: np.zeros(4), 2: np.array([1, 8, 8, 4]), 3: np.array([1, 2, 2, 1])}), "all strides must be 1"),
    (_view("FULLY_CONNECTED", [_t("f", (1, 16)), _t("w", (10, 16), constant=True)], [_t("o", (1, 10))],
           {"weightsFormat": 1}), "default format"),
    (_view("ADD", [X, _t("i32", (1, 8, 8, 4), "int32")], [X]), "not 8-bit quantised"),
    (_view("CONV_2D", [X, _t("w", (4, 3, 3, 4), "float32", True)], [X]), "constant 'w' is float32"),
    (_view("HARD_SWISH", [X], [X]), "not in the Edge TPU's supported operations"),
    (_view("FlexErf", [X], [X]), "custom op"),
])
def test_documented_limits_are_enforced(view, fragment):
    if fragment == "custom op":
        view = E.OpView(TFLiteOp(0, "FlexErf", [X], [X], is_custom=True))
        fragment = "Flex (TensorFlow) op"
    problem = E.op_problem(view)
    assert problem is not None and fragment in problem[1], problem


@pytest.mark.parametrize("view", [
    _view("AVERAGE_POOL_2D", [X], [X], {"fusedActivationFunction": 0}),
    _view("MEAN", [X, _t("a", (2,), "int32", True, index=3)], [_t("m", (1, 1, 1, 4))], constants={3: np.array([1, 2])}),
    _view("PAD", [X, _t("p", (4, 2), "int32", True, index=7)], [_t("y", (1, 10, 10, 4))],
          constants={7: np.array([[0, 0], [1, 1], [1, 1], [0, 0]])}),
    _view("CONCATENATION", [X, _t("c", (1, 8, 8, 4), constant=True, index=5, zero_point=-3)], [_t("y", (1, 8, 8, 8))],
          constants={5: np.full((1, 8, 8, 4), -3, np.int8)}),  # all real zeros: a zero-padding concat
    _view("SOFTMAX", [_t("s", (1, 1, 10))], [_t("o", (1, 1, 10))]),
    _view("FULLY_CONNECTED", [_t("f", (1, 16)), _t("w", (10, 16), constant=True), _t("b", (10,), "int32", True)],
          [_t("o", (1, 10))]),
])
def test_ops_within_their_limits_map(view):
    assert E.op_problem(view) is None


# ---- the target stage on an exported folder (static check + compiler) ----

def _stage(tmp_path, model_path, compiler="auto", listed=None):
    import shutil

    from pipeline.artifacts import atomic_write_json
    from pipeline.config import validate_config
    from pipeline.run import StageContext
    from pipeline.target.stage import run

    export, out = tmp_path / "05_export", tmp_path / "06_target"
    export.mkdir(exist_ok=True)
    out.mkdir(exist_ok=True)
    shutil.copyfile(model_path, export / "student_int8.tflite")
    atomic_write_json(export / "artifacts.json", {"tflite_int8": "student_int8.tflite"} if listed is None else listed)
    cfg = validate_config({"runs_dir": str(tmp_path), "target": {"name": "edge_tpu", "compiler": compiler}})
    return run(StageContext(cfg=cfg, out=out, inputs={"export": export}, cache=tmp_path / "cache")).manifest_dict(), out


def test_target_stage_without_compiler_says_not_compiled(tmp_path, monkeypatch, conv_tflite):
    import json

    from pipeline.target.edge_tpu_compiler import NOT_FOUND

    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    metrics, out = _stage(tmp_path, conv_tflite)
    assert metrics["verdict"] == FULLY and metrics["passed"] and metrics["ops_mapped"] == metrics["ops_total"]
    assert metrics["compiler"] == NOT_FOUND and metrics["compiled"] is False
    assert json.loads((out / "check.json").read_text())["verdict"] == FULLY
    assert not list(out.glob("*_edgetpu.tflite"))
    json.dumps(metrics)  # lands in manifest.json

    off, _ = _stage(tmp_path, conv_tflite, compiler="off")
    assert off["compiler"] == "not compiled: target.compiler is off"


def test_target_stage_keeps_the_compiled_model_and_its_numbers(tmp_path, monkeypatch, conv_tflite):
    from test_edgetpu_compiler import FULL_STDOUT, _fake_compiler

    (tmp_path / "bin").mkdir()
    _fake_compiler(tmp_path / "bin", FULL_STDOUT.replace("Total number of operations: 12", "Total number of operations: 7"))
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{__import__('os').environ['PATH']}")
    metrics, out = _stage(tmp_path, conv_tflite)
    assert metrics["compiled"] and metrics["compiler"] == "compiled"
    assert (out / "student_int8_edgetpu.tflite").is_file() and (out / "edgetpu_compiler.log").is_file()
    result = metrics["compiler_result"]
    assert result["ops_mapped"] == 7 and result["on_chip_bytes_used"] == 81 * 1024
    assert metrics["compiler_agrees"] == (metrics["ops_mapped"] == 7)


def test_target_stage_records_a_partial_mapping_without_failing(tmp_path, monkeypatch, leaky_tflite):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    metrics, _ = _stage(tmp_path, leaky_tflite)
    assert metrics["verdict"] == PARTIALLY and metrics["passed"] is False
    assert metrics["first_unmapped"].startswith(f"#{metrics['cpu_from']} LEAKY_RELU: ")
    assert metrics["ops_mapped"] == metrics["cpu_from"] and metrics["check"]["ops"][metrics["cpu_from"]]["op"] == "LEAKY_RELU"


def test_target_stage_names_a_missing_deploy_artifact(tmp_path, conv_tflite):
    from pipeline.errors import PipelineError

    with pytest.raises(PipelineError, match="deploys 'tflite_int8'.*add it to export.formats"):
        _stage(tmp_path, conv_tflite, listed={"onnx": "student.onnx"})


# ---- the same tiny models through the Raspberry Pi (LiteRT) checker ----

def test_rpi4_checker_accepts_a_full_integer_model_and_runs_it(conv_tflite):
    from pipeline.target import TARGETS

    rules = TARGETS["rpi4"]
    r = rules.checker(conv_tflite, rules)
    assert r["verdict"] == "ready" and r["passed"] and r["full_integer"] and r["problems"] == []
    assert r["threads"] == 4 and r["first_run_ms"] > 0 and r["ops_total"] == sum(r["op_counts"].values())
    assert [t["dtype"] for t in r["io"]] == ["int8", "int8"]


def test_rpi4_checker_rejects_wrong_io_dtype_and_float_models(conv_tflite, tmp_path):
    import dataclasses

    from pipeline.target import TARGETS

    uint8_io = dataclasses.replace(TARGETS["rpi4"], io_dtype="uint8")
    r = uint8_io.checker(conv_tflite, uint8_io)
    assert not r["passed"] and r["verdict"] == "not ready" and "is int8, expected uint8" in r["summary"]
    float_model = _convert(tmp_path, "float", _conv_net, int8=False)
    r = TARGETS["rpi4"].checker(float_model, TARGETS["rpi4"])
    assert not r["passed"] and not r["full_integer"] and "float op" in r["summary"]
    assert "error" not in r  # it loads and runs; it just is not the int8 model the Pi recipe deploys


def test_a_hard_swish_student_is_refused_in_one_line_naming_the_op_and_the_minimal_variant():
    """MobileNetV3's HARD_SWISH is not in Coral's table (the compiler leaves it on the CPU): the precheck's line
    names the op, why, and the Edge-TPU-friendly variant (ReLU, no squeeze-excite) to train instead."""
    from pipeline.formats.tflite_graph import TFLiteGraph
    from pipeline.target import TARGETS
    from pipeline.export.untrained import failure_message
    from pipeline.target.edge_tpu_check import judge

    w = _t("w", (4, 3, 3, 4), constant=True)
    m, a = _t("m", (1, 4)), _t("a", (2,), "int32", True, index=3)
    ops = [TFLiteOp(0, "CONV_2D", [X, w], [X]), TFLiteOp(1, "HARD_SWISH", [X], [X]), TFLiteOp(2, "MEAN", [X, a], [m])]
    graph = TFLiteGraph(path=None, ops=ops, inputs=[X], outputs=[m], tensors=[X, w, m, a])
    views = [E.OpView(ops[0]), E.OpView(ops[1]), E.OpView(ops[2], {}, {3: np.array([1, 2])})]
    report = judge(graph, views)
    assert report["verdict"] == PARTIALLY and report["first_unmapped"]["op"] == "HARD_SWISH"
    for arch in ("timm:mobilenetv3_small_100", "torchvision:mobilenet_v3_small"):
        line = failure_message(report, "edge_tpu", arch)
        assert "\n" not in line and "#1 HARD_SWISH" in line and "edgetpu#272" in line
        assert "try student.arch: timm:tf_mobilenetv3_small_minimal_100" in line, line
    assert TARGETS["edge_tpu"].friendly_alternative("timm:mobilenetv3_large_100") == "timm:tf_mobilenetv3_large_minimal_100"
    assert TARGETS["edge_tpu"].friendly_alternative("timm:tf_mobilenetv3_small_minimal_100") is None  # already friendly
    assert TARGETS["edge_tpu"].friendly_alternative("resnet8") is None
