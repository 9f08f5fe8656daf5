"""Round trip per format: export a tiny net, load it with its runtime, compare with PyTorch.

One module-scoped fixture converts once into every format of the table (ONNX → int8 QDQ ONNX via
ONNX Runtime, → TFLite fp32/int8 via onnx2tf, → OpenVINO fp32/fp16/int8 via NNCF); the tests then check predictions, layout,
integer I/O and errors.
Input is 3×8×8 so the colour path (where onnx2tf would download a sample file) is covered
and C ≠ H tells the layouts apart.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from pipeline.errors import PipelineError
from pipeline.formats import FORMATS, format_keys
from pipeline.formats.sidecar import read_sidecar, tflite_io, write_sidecar
from pipeline.formats.tflite_graph import TFLiteGraph, TFLiteOp, TFLiteTensor, float_ops_between_io, full_integer_problems, read_tflite
from pipeline.runtimes import all_cores, load
from pipeline.runtimes.base import dequantize, quantize, resolve_layout

SHAPE = (3, 8, 8)
CLASSES = 5
EXPORTED = format_keys(exported=True)  # what a host makes (the compiled Edge TPU model needs its compiler)


class TinyConvNet(nn.Module):
    """conv-BN-ReLU ×2, global average pool, linear: 1×3×8×8 → 1×5."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
            nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
        )
        self.head = nn.Linear(16, CLASSES)

    def forward(self, x):
        return self.head(self.features(x).mean((2, 3)))


def _sample(n: int, seed: int) -> np.ndarray:
    """Calibration-like images: normalised, with a per-image brightness offset so classes differ."""
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, *SHAPE)) * 0.7 + rng.standard_normal((n, 3, 1, 1))).astype(np.float32)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from pipeline.export.onnx2openvino import onnx2openvino
    from pipeline.export.onnx2qdq import onnx2qdq
    from pipeline.export.onnx2tflite import onnx2tflite
    from pipeline.export.torch2onnx import torch2onnx

    torch.manual_seed(0)
    model = TinyConvNet()
    with torch.no_grad():  # non-trivial BN statistics so folding is exercised
        for bn in (model.features[1], model.features[4]):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
    model.eval()
    out = tmp_path_factory.mktemp("exported")
    calibration = _sample(64, seed=1)
    paths = {"onnx": torch2onnx(model, SHAPE, out / "tiny.onnx")}
    paths |= onnx2tflite(paths["onnx"], out, calibration, io_dtype="int8", per_channel=True)
    paths |= onnx2openvino(paths["onnx"], out, calibration, fp16=True, fp32=True)
    paths["onnx_int8"] = onnx2qdq(paths["onnx"], out / "tiny_int8.onnx", calibration)
    assert set(paths) == set(EXPORTED), "a format of the table that this fixture does not make is untested"
    x = _sample(16, seed=2)
    with torch.no_grad():
        reference = model(torch.from_numpy(x)).numpy()
    return {"model": model, "paths": paths, "x": x, "reference": reference}


@pytest.mark.parametrize("key", [k for k in EXPORTED if FORMATS[k].fidelity == "logits"])
def test_fp32_round_trip_matches_pytorch(exported, key):
    runtime = load(exported["paths"][key], threads=1)
    logits = runtime.predict(exported["x"])  # batch 16 through a batch-1 model
    assert logits.shape == (16, CLASSES) and logits.dtype == np.float32
    np.testing.assert_allclose(logits, exported["reference"], atol=1e-4, rtol=0)
    assert runtime.threads == 1 and runtime.format == key
    runtime.close()


@pytest.mark.parametrize("key", [k for k in EXPORTED if FORMATS[k].precision == "int8"])
def test_int8_round_trip_agrees_with_pytorch(exported, key):
    runtime = load(exported["paths"][key], threads=1)
    logits = runtime.predict(exported["x"])
    ref = exported["reference"]
    assert logits.shape == ref.shape and logits.dtype == np.float32
    agreement = (logits.argmax(1) == ref.argmax(1)).mean()
    assert agreement >= 0.9, agreement
    # dequantised logits land near the float ones (on average a few output steps; a logit outside the
    # calibrated range is clipped, so the max is not a fair measure)
    assert np.abs(logits - ref).mean() < 0.03 * (ref.max() - ref.min())
    assert runtime.format == key


def test_tflite_int8_is_full_integer_with_quantised_nhwc_io(exported):
    graph = read_tflite(exported["paths"]["tflite_int8"])
    (t_in,), (t_out,) = graph.inputs, graph.outputs
    assert t_in.shape == (1, 8, 8, 3) and t_in.dtype == "int8" and len(t_in.scale) == 1
    assert t_out.shape == (1, CLASSES) and t_out.dtype == "int8" and t_out.scale[0] > 0
    assert full_integer_problems(graph, "int8") == []
    assert float_ops_between_io(graph) == []
    assert {"CONV_2D", "FULLY_CONNECTED"} <= set(graph.op_counts())
    conv = next(op for op in graph.ops if op.opcode_name == "CONV_2D")
    weights = next(t for t in conv.inputs if t.is_constant and t.dtype == "int8")
    assert len(weights.scale) == weights.shape[0]  # per-channel, one scale per output channel


def test_fp32_tflite_fails_the_full_integer_check(exported):
    graph = read_tflite(exported["paths"]["tflite_fp32"])
    problems = full_integer_problems(graph, "int8")
    assert any("input" in p and "float32" in p for p in problems)
    floats = float_ops_between_io(graph)
    assert floats and all("float32" in line for line in floats)
    assert any("CONV_2D" in line for line in floats)


def test_a_float_op_in_the_middle_is_flagged():
    """int8 in → CONV_2D → DEQUANTIZE → SOFTMAX (float) → QUANTIZE → int8 out: the Edge TPU's "not quantized"."""
    q = {"scale": [0.1], "zero_point": [0]}
    t_in, t_conv, t_out = (TFLiteTensor(n, (1, 4), (1, 4), "int8", **q) for n in ("in", "conv", "out"))
    w = TFLiteTensor("w", (4, 4), (4, 4), "int8", is_constant=True, **q)
    f1, f2 = TFLiteTensor("deq", (1, 4), (1, 4), "float32"), TFLiteTensor("soft", (1, 4), (1, 4), "float32")
    ops = [TFLiteOp(0, "CONV_2D", [t_in, w], [t_conv]), TFLiteOp(1, "DEQUANTIZE", [t_conv], [f1]),
           TFLiteOp(2, "SOFTMAX", [f1], [f2]), TFLiteOp(3, "QUANTIZE", [f2], [t_out])]
    bad = TFLiteGraph(path=None, ops=ops, inputs=[t_in], outputs=[t_out], tensors=[])
    assert float_ops_between_io(bad) == ["#1 DEQUANTIZE (float32 output 'deq')", "#2 SOFTMAX (float32 input 'deq')",
                                         "#3 QUANTIZE (float32 input 'soft')"]
    problems = full_integer_problems(bad, "int8")
    assert "#1 DEQUANTIZE in the middle of the graph" in problems and len(problems) == 5
    good = TFLiteGraph(path=None, ops=ops[:1], inputs=[t_in], outputs=[t_conv], tensors=[])
    assert full_integer_problems(good, "int8") == [] and full_integer_problems(good, "uint8") != []


def test_int8_runtime_quantises_with_the_tensors_own_parameters(exported):
    runtime = load(exported["paths"]["tflite_int8"], threads=1)
    scale, zero = runtime.in_q
    graph = read_tflite(exported["paths"]["tflite_int8"])
    assert (scale, zero) == (pytest.approx(graph.inputs[0].scale[0]), graph.inputs[0].zero_point[0])
    q = quantize(np.array([0.0, scale * 3, 1e9, -1e9], np.float32), scale, zero, np.int8)
    assert q.tolist() == [zero, zero + 3, 127, -128]
    np.testing.assert_allclose(dequantize(q[:2], scale, zero), [0.0, scale * 3], rtol=1e-6)


def test_sidecar_supplies_format_and_layout(exported, tmp_path):
    import shutil

    src = exported["paths"]["tflite_int8"]
    artifact = shutil.copy(src, tmp_path / "m.tflite")
    io_in, io_out = tflite_io(artifact)
    pre = {"image_size": 8, "channels": 3, "mean": [0.5] * 3, "std": [0.25] * 3}
    write_sidecar(artifact, format="tflite_int8", input=io_in, output=io_out, preprocess=pre, class_names=list("abcde"),
                  sources={"onnx": exported["paths"]["onnx"]})
    side = read_sidecar(artifact)
    assert side["layout"] == "NHWC" and side["input"]["quantization"]["scale"] == io_in["quantization"]["scale"]
    runtime = load(artifact, threads=1)
    assert runtime.format == "tflite_int8" and runtime.layout_hint() == "NHWC"
    np.testing.assert_array_equal(runtime.predict(exported["x"]), load(src, threads=1).predict(exported["x"]))


def test_layout_is_decided_from_the_model_shape_and_sidecar():
    p = __import__("pathlib").Path("m.tflite")
    assert resolve_layout((1, 8, 8, 3), None, (4, 3, 8, 8), p) == "NHWC"
    assert resolve_layout((1, 3, 8, 8), None, (4, 3, 8, 8), p) == "NCHW"
    assert resolve_layout((None, 3, None, None), None, (4, 3, 8, 8), p) == "NCHW"
    with pytest.raises(PipelineError, match="sidecar"):  # 3×3×3: either layout fits, only the sidecar can tell
        resolve_layout((1, 3, 3, 3), None, (1, 3, 3, 3), p)
    assert resolve_layout((1, 3, 3, 3), "NHWC", (1, 3, 3, 3), p) == "NHWC"
    with pytest.raises(PipelineError, match="does not take images"):
        resolve_layout((1, 8, 8, 3), "NCHW", (1, 3, 8, 8), p)
    with pytest.raises(PipelineError, match="fits neither"):
        resolve_layout((1, 3, 16, 16), None, (1, 3, 8, 8), p)


def test_wrong_image_shape_is_a_clear_error(exported):
    runtime = load(exported["paths"]["onnx"], threads=1)
    with pytest.raises(PipelineError, match="fits neither"):
        runtime.predict(np.zeros((2, 1, 8, 8), np.float32))


def test_missing_openvino_device_lists_the_available_ones(exported):
    with pytest.raises(PipelineError, match=r"device 'NPU' not available here \(available: .*CPU"):
        load(exported["paths"]["openvino_int8"], device="NPU")


def test_openvino_records_its_precision_hint(exported):
    runtime = load(exported["paths"]["openvino_fp32"], threads=1)
    assert runtime.info["INFERENCE_PRECISION_HINT"] == "f32" and runtime.info["INFERENCE_NUM_THREADS"] == "1"


def test_load_rejects_unknown_or_missing_files(tmp_path):
    with pytest.raises(PipelineError, match="no runtime for '.h5'"):
        load(tmp_path / "m.h5")
    with pytest.raises(PipelineError, match="no such artifact"):
        load(tmp_path / "m.onnx")
    bogus = tmp_path / "m.tflite"
    bogus.write_bytes(b"not a flatbuffer")
    with pytest.raises(PipelineError, match="m.tflite"):
        load(bogus)


def test_threads_zero_means_all_cores(exported):
    assert load(exported["paths"]["onnx"]).threads == all_cores()


def test_torch_runtime_loads_a_pipeline_checkpoint(tmp_path):
    from pipeline.models import build_model
    from pipeline.models.checkpoint import save_checkpoint

    torch.manual_seed(0)
    model = build_model("resnet8", 10, 1).eval()
    pre = {"image_size": 8, "channels": 1, "mean": [0.3], "std": [0.4]}
    save_checkpoint(tmp_path / "s.pt", model, {"arch": "resnet8", "arch_args": {}, "num_classes": 10, "in_channels": 1, "preprocess": pre})
    x = np.random.default_rng(0).standard_normal((300, 1, 8, 8)).astype(np.float32)  # > one internal batch
    runtime = load(tmp_path / "s.pt", threads=1)
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(runtime.predict(x), expected, atol=1e-5)
    assert runtime.format == "torch" and runtime.name == "torch"


@pytest.mark.parametrize("key", EXPORTED)
def test_engine_call_on_a_prepared_input_gives_what_predict_gives(exported, key):
    """The latency headline times ``invoke(engine_input(x))``: it must be the same computation as ``predict``."""
    runtime = load(exported["paths"][key], threads=1)
    x = exported["x"][:1]
    prepared = runtime.engine_input(x)
    if key == "tflite_int8":
        assert prepared.dtype == np.int8 and prepared.shape == (1, 8, 8, 3)  # quantised NHWC, before any timing
    raw = runtime.invoke(prepared)
    np.testing.assert_array_equal(runtime._finish(raw).reshape(1, -1), runtime.predict(x))
    runtime.close()


def test_torch_runtime_engine_call_matches_predict(tmp_path):
    from pipeline.runtimes.torch_rt import TorchRuntime

    torch.manual_seed(0)
    runtime = TorchRuntime(tmp_path / "unused.pt", threads=1, model=TinyConvNet())
    runtime.input_shape = (None, *SHAPE)
    x = _sample(2, seed=3)
    np.testing.assert_allclose(runtime.invoke(runtime.engine_input(x)), runtime.predict(x), atol=1e-6)


def test_torch_runtime_gives_the_thread_count_back_on_close(tmp_path):
    """set_num_threads is process-wide: a stage that benchmarks at N threads must not leave training at N."""
    from pipeline.runtimes.torch_rt import TorchRuntime

    before = torch.get_num_threads()
    wanted = 1 if before != 1 else 2
    with TorchRuntime(tmp_path / "unused.pt", threads=wanted, model=TinyConvNet()):
        assert torch.get_num_threads() == wanted
    assert torch.get_num_threads() == before


def test_onnx2tf_converts_from_relative_paths(exported, tmp_path, monkeypatch):
    """The default runs_dir is relative ("runs"); onnx2tf runs in its own work folder, so paths must not stay relative."""
    from pipeline.export.onnx2tflite import onnx2tflite

    monkeypatch.chdir(tmp_path)
    shutil.copyfile(exported["paths"]["onnx"], tmp_path / "tiny.onnx")
    paths = onnx2tflite(Path("tiny.onnx"), Path("out"), _sample(8, seed=3), io_dtype="int8", per_channel=True)
    assert paths["tflite_int8"] == Path("out/tiny_int8.tflite") and (tmp_path / "out" / "tiny_int8.tflite").is_file()


@pytest.mark.parametrize("key", ["onnx", "onnx_int8", "openvino_fp32", "openvino_int8"])
def test_per_op_time_names_the_nodes_that_ran_and_adds_up(exported, key):
    """Engines that profile: every row is an op of the graph as the engine ran it, shares sum to 1, slowest first."""
    from pipeline.runtimes.op_time import op_times

    paths, x = exported["paths"], exported["x"]
    table = op_times(paths[key], x, threads=1, runs=5, warmup=1)
    assert table["measured"] and table["runs"] == 5 and table["total_ms"] > 0
    ops = table["ops"]
    assert ops and [r["ms"] for r in ops] == sorted((r["ms"] for r in ops), reverse=True)
    assert sum(r["share"] for r in ops) == pytest.approx(1.0)
    assert sum(r["ms"] for r in ops) == pytest.approx(table["total_ms"])
    if FORMATS[key].runtime == "openvino":  # the plugin's own node names (after its fusions)
        import openvino as ov

        compiled = ov.Core().compile_model(str(paths[key]), "CPU", {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": "1"})
        ran = {op.get_friendly_name() for op in compiled.get_runtime_model().get_ops()}
        assert {r["node"] for r in ops} <= ran
        assert "Convolution" in {r["op_type"] for r in ops}
    else:  # ONNX Runtime names a fused kernel after the original node or its output tensor, and adds layout reorders
        import onnx

        graph = onnx.load(str(paths[key])).graph
        names = {n.name for n in graph.node} | {o for n in graph.node for o in n.output}
        derived = [r for r in ops if r["op_type"] not in ("ReorderInput", "ReorderOutput", "Transpose")]  # layout: NCHWc, NHWC
        assert derived and all(any(r["node"].startswith(n) for n in names if n) for r in derived), [r["node"] for r in derived if not any(r["node"].startswith(n) for n in names if n)]
        assert {"Conv", "QLinearConv"} & {r["op_type"] for r in ops}


def test_per_op_time_of_tflite_is_not_measured_and_says_why(exported):
    from pipeline.runtimes.op_time import op_times

    paths, x = exported["paths"], exported["x"]
    table = op_times(paths["tflite_int8"], x, threads=1, runs=2)
    assert table == {"measured": False, "engine": "tflite",
                     "reason": "LiteRT's Python API has no op profiler (benchmark_model --enable_op_profiling is C++ only)"}


def _explorer_graph(model: Path) -> tuple[str, set[str]]:
    """The graph id and node ids Model Explorer's own adapter gives ``model`` (what its overlays are matched to)."""
    import dataclasses

    if model.suffix == ".tflite":
        from model_explorer.builtin_tflite_flatbuffer_adapter import BuiltinTfliteFlatbufferAdapter as Adapter
    else:
        from model_explorer_onnx.main import ONNXAdapter as Adapter
    converted = Adapter().convert(str(model), {})
    graph = converted["graphCollections"][0].graphs[0] if "graphCollections" in converted else converted["graphs"][0]
    graph = graph if isinstance(graph, dict) else dataclasses.asdict(graph)
    return graph["id"], {n["id"] for n in graph["nodes"]}


@pytest.mark.parametrize("key", ["tflite_int8", "openvino_int8", "onnx_int8"])
def test_model_explorer_node_data_names_nodes_its_adapter_draws(exported, key, tmp_path):
    """SQNR and ms per node land on node ids of the graph Model Explorer's adapter builds for the overlay's model."""
    pytest.importorskip("model_explorer")
    pytest.importorskip("model_explorer_onnx")
    from pipeline.export.layer_error import write_layer_error
    from pipeline.export.layer_error_openvino import openvino_layer_errors
    from pipeline.report.explore import graph_nodes, node_for, overlay_model, write_node_data
    from pipeline.runtimes.op_time import op_times

    import json

    paths, x = exported["paths"], exported["x"]
    folder = paths["onnx"].parent
    listed = {k: str(p.relative_to(folder)) for k, p in paths.items()}
    layer_error = None
    if key != "onnx_int8":  # no per-layer error for the QDQ model yet
        reference, compare = ((paths["tflite_fp32"], None) if key == "tflite_int8" else (paths["onnx"], openvino_layer_errors))
        layer_error = write_layer_error(paths[key], reference, x, folder, top=1000, compare=compare)
    model = overlay_model(folder, listed, key)
    written = write_node_data(tmp_path, key, model, layer_error, op_times(paths[key], x, threads=1, runs=3))
    assert set(written) == {"tflite_int8": {"sqnr"}, "openvino_int8": {"sqnr", "ms"}, "onnx_int8": {"ms"}}[key]
    graph_id, nodes = _explorer_graph(model)
    for path in written.values():
        (graph, data), = json.loads(path.read_text()).items()
        assert graph == graph_id
        assert data["results"] and set(data["results"]) <= nodes, set(data["results"]) - nodes
    if "sqnr" in written:  # every measured layer of the error table is on the graph (the graph input is no node)
        shown = json.loads(written["sqnr"].read_text())[graph_id]["results"]
        measured = [r for r in layer_error["records"] if r["sqnr_db"] is not None and r["index"] >= 0]
        if key == "tflite_int8":  # op index = node id
            assert set(shown) == {str(r["index"]) for r in measured}
        else:  # named after the ONNX node or its output tensor
            ids = graph_nodes(model)[1]
            assert all(node_for(r["name"], ids) in shown for r in measured), [(r["name"], node_for(r["name"], ids)) for r in measured]
        worst = min(measured, key=lambda r: r["sqnr_db"])
        assert min(v["value"] for v in shown.values()) == pytest.approx(worst["sqnr_db"], abs=1e-3)


def test_explore_serves_the_model_and_its_overlays_to_model_explorer(exported, tmp_path):
    """`python -m pipeline explore RUN`: the viewer's own server converts the model through its adapter and hands the
    browser our node data, whose ids are nodes of the graph it serves (what the web app then colours)."""
    pytest.importorskip("model_explorer_onnx")
    import json
    import os
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    from pipeline.export.layer_error import write_layer_error
    from pipeline.export.layer_error_openvino import openvino_layer_errors

    paths, x = exported["paths"], exported["x"]
    run = tmp_path / "run"
    export, data = run / "05_export", run / "01_data"
    shutil.copytree(paths["onnx"].parent, export)
    data.mkdir()
    np.save(data / "calibration.npy", x)
    listed = {k: str(p.relative_to(paths["onnx"].parent)) for k, p in paths.items()}
    (export / "artifacts.json").write_text(json.dumps(listed))
    write_layer_error(export / listed["openvino_int8"], export / listed["onnx"], x, export, compare=openvino_layer_errors)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    viewer = subprocess.Popen([sys.executable, "-m", "pipeline", "explore", str(run), "--artifact", "openvino_int8",
                               "--port", str(port), "--no-browser"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines = []
        deadline = time.monotonic() + 120
        while not any("Starting Model Explorer server" in line for line in lines) and time.monotonic() < deadline:
            line = viewer.stdout.readline()
            assert line or viewer.poll() is None, "".join(lines)
            lines.append(line)
        overlays = lines[0].strip().split(": ", 1)[1].split(", ")
        assert [Path(p).name for p in overlays] == ["openvino_int8.sqnr.json", "openvino_int8.ms.json"]
        base = f"http://127.0.0.1:{port}"
        command = {"cmdId": "convert", "extensionId": "onnx_adapter", "modelPath": str(export / listed["onnx"]), "settings": {},
                   "deleteAfterConversion": False}
        request = urllib.request.Request(f"{base}/apipost/v1/send_command", json.dumps(command).encode(),
                                         {"Content-Type": "application/json"})
        served = json.loads(urllib.request.urlopen(request, timeout=60).read())
        graph = served["graphs"][0] if "graphs" in served else served["graphCollections"][0]["graphs"][0]
        nodes = {n["id"] for n in graph["nodes"]}
        for overlay in overlays:
            url = f"{base}/api/v1/read_text_file?path={urllib.parse.quote(overlay)}"
            content = json.loads(json.loads(urllib.request.urlopen(url, timeout=30).read())["content"])
            assert set(content) == {graph["id"]}
            assert content[graph["id"]]["results"] and set(content[graph["id"]]["results"]) <= nodes
    finally:
        viewer.terminate()
        viewer.wait(timeout=30)


def test_format_is_read_from_the_file_by_one_rule(exported, tmp_path):
    """``detect_format``: an IR with f16 constants is openvino_fp16 (the runtime once said fp32), a model the Edge TPU
    compiler named ``*_edgetpu.tflite`` is the compiled one, and a sidecar that names another family is refused."""

    from pipeline.formats.detect import detect_format

    for key, path in exported["paths"].items():
        assert detect_format(path) == key
    with load(exported["paths"]["openvino_fp16"], threads=1) as runtime:
        assert runtime.format == "openvino_fp16"
    compiled = shutil.copy(exported["paths"]["tflite_int8"], tmp_path / "tiny_int8_edgetpu.tflite")
    assert detect_format(compiled) == "tflite_edgetpu"
    onnx = shutil.copy(exported["paths"]["onnx"], tmp_path / "m.onnx")
    (tmp_path / "m.onnx.json").write_text('{"format": "tflite_int8", "input": {"dtype": "float32"}}')
    with pytest.raises(PipelineError, match="says tflite_int8, but the file is onnx float"):
        detect_format(onnx)
