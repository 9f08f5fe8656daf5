"""``export.keep_float`` on onnx2tf's TFLite int8: chosen layers stay float, the rest full-integer.

TensorFlow's Quantization Debugger keeps a layer in float by calibrating once (``_experimental_calibrate_only``)
and quantising the calibrated model with ``mlir_quantize(denylisted_nodes=…)``. Its own
``get_nondebug_quantized_model`` drops the converter's int8/uint8 I/O (``mlir_quantize``'s float32 default) and builds
a NumericVerify debug model first, so the same two calls are made here with the converter's I/O types: with no node
denylisted the result is the converter's own full-integer model. ``denylisted_nodes`` takes exact op output tensor
names; patterns are searched in those names with fused constants left out (``layer_key``, the per-layer error's naming).

Inside onnx2tf's child (``child_hook``) the full-integer conversion is calibrated once and quantised with the
patterns' nodes in float; the calibrated model can be kept, so ``auto`` re-quantises sets of layers in one small child
(``requantize``, ``python -m pipeline.export.tflite_keep_float``) without converting again.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.errors import PipelineError

MECHANISM = "TensorFlow Quantization Debugger's denylisted_nodes (calibrated once, mlir_quantize)"
CHILD_TIMEOUT_S = 900


@dataclass
class FloatRequest:
    """What onnx2tf's child is asked (``patterns``; ``calibrated``: where to keep the calibrated model) and what it
    answered (``names``: every layer it could keep, ``nodes``: the exact names denylisted)."""

    patterns: list[str]
    calibrated: Path | None = None
    names: list[str] = field(default_factory=list)
    nodes: list[str] = field(default_factory=list)


def float_layer_names(calibrated: Path) -> dict[str, list[str]]:
    """Layer name (``layer_key``) → the exact output tensor names of the calibrated model's ops it stands for."""
    from pipeline.formats.layer_names import layer_key
    from pipeline.formats.tflite_graph import read_tflite

    names: dict[str, list[str]] = {}
    for op in read_tflite(calibrated).ops:
        for t in op.outputs:
            if t.name and not t.is_constant:
                names.setdefault(layer_key(t.name), []).append(t.name)
    return names


# ops that pass their input's values (and so its int8 range) through: a float activation must stay float across them
PASS_THROUGH = {"PAD", "PADV2", "RESHAPE", "TRANSPOSE", "SQUEEZE", "EXPAND_DIMS", "MAX_POOL_2D", "STRIDED_SLICE", "SLICE",
                "CONCATENATION", "SPLIT", "GATHER", "DEPTH_TO_SPACE", "SPACE_TO_DEPTH", "RESIZE_NEAREST_NEIGHBOR"}


def float_reach(calibrated: Path) -> dict[str, list[str]]:
    """Layer → the layers that must be float with it for its output to stay float: its readers, through range-
    passing ops (``PASS_THROUGH``) to the first op that computes. A layer kept alone still hands int8 on (its output
    is quantised again for the next op), which is no help when that tensor's range is what breaks."""
    from pipeline.formats.layer_names import layer_key
    from pipeline.formats.tflite_graph import read_tflite

    ops = read_tflite(calibrated).ops
    readers: dict[int, list] = {}
    for op in ops:
        for t in op.inputs:
            readers.setdefault(t.index, []).append(op)
    reach = {}
    for op in ops:
        found, todo = [], list(op.outputs)
        while todo:
            for r in readers.get(todo.pop(0).index, []):
                key = layer_key(r.outputs[0].name) if r.outputs else None
                if key and key not in found:
                    found.append(key)
                    todo += r.outputs if r.opcode_name in PASS_THROUGH else []
        for t in op.outputs:
            reach[layer_key(t.name)] = [layer_key(t.name), *found]
    return reach


def quantize(calibrated: bytes, nodes: list[str], settings: dict) -> bytes:
    """The calibrated model quantised as the converter does (its I/O type, its per-channel flags), ``nodes`` in float."""
    import tensorflow as tf
    from tensorflow.lite.python import convert

    io = tf.as_dtype(settings["io_dtype"])
    model = convert.mlir_quantize(calibrated, disable_per_channel=settings["disable_per_channel"], input_data_type=io,
                                  output_data_type=io, denylisted_nodes=list(nodes) or None,
                                  disable_per_channel_for_dense_layers=settings["disable_per_channel_for_dense_layers"])
    try:  # what the converter does last (shared read-only buffers); a size matter only
        from tensorflow.lite.python.lite import _deduplicate_readonly_buffers
        return _deduplicate_readonly_buffers(model)
    except Exception:
        return model


def child_hook(converter, convert, request_path: str) -> bytes:
    """In onnx2tf's child, in place of the full-integer ``converter.convert()`` (``convert``: the unpatched one)."""
    from pipeline.export.keep_float import matched

    request = json.loads(Path(request_path).read_text())
    converter._experimental_calibrate_only = True
    try:
        calibrated = convert(converter)
    finally:
        converter._experimental_calibrate_only = False
    settings = {"io_dtype": converter.inference_input_type.name,
                "disable_per_channel": bool(converter._experimental_disable_per_channel),
                "disable_per_channel_for_dense_layers": bool(getattr(
                    converter, "_experimental_disable_per_channel_quantization_for_dense_layers", False))}
    path = Path(request.get("calibrated") or Path(request_path).with_name("calibrated.tflite"))
    path.write_bytes(calibrated)
    path.with_suffix(".json").write_text(json.dumps(settings))
    names = float_layer_names(path)
    kept, _ = matched(request["patterns"], names)
    nodes = [n for k in kept for n in names[k]]
    Path(request_path).with_suffix(".answer.json").write_text(json.dumps({"names": list(names), "nodes": nodes}))
    print(f"pipeline: full-integer model quantised once calibrated, {len(nodes)} node(s) kept in float", flush=True)
    return quantize(calibrated, nodes, settings)


# appended to onnx2tf's child driver: wraps every converter class's convert once more (argv[3]: the request's JSON)
CHILD_SOURCE = """
if len(sys.argv) > 3:
    import tensorflow as tf
    from tensorflow.lite.python import lite as _lite
    from pipeline.export.tflite_keep_float import child_hook as _kf_hook
    _kf_int16 = tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8
    _kf_want = {"int8": tf.int8, "uint8": tf.uint8, "float32": tf.float32}[sys.argv[2]]
    def _kf_full_integer(conv):
        return bool(conv.optimizations) and conv.representative_dataset is not None and \\
            _kf_int16 not in set(conv.target_spec.supported_ops or ()) and conv.inference_input_type == _kf_want
    def _kf_wrap(cls):
        inner = cls.__dict__["convert"]
        def convert(self, *args, **kwargs):
            if args or kwargs or not _kf_full_integer(self):
                return inner(self, *args, **kwargs)
            return _kf_hook(self, inner, sys.argv[3])
        cls.convert = convert
    for _cls in (_lite.TFLiteConverterV2, _lite.TFLiteKerasModelConverterV2, _lite.TFLiteSavedModelConverterV2,
                 _lite.TFLiteFrozenGraphConverterV2):
        _kf_wrap(_cls)
"""


def write_request(request: FloatRequest, work: Path) -> Path:
    path = work / "keep_float.json"
    calibrated = str(Path(request.calibrated).resolve()) if request.calibrated else None
    path.write_text(json.dumps({"patterns": list(request.patterns), "calibrated": calibrated}))
    return path


def read_answer(request: FloatRequest, request_path: Path) -> None:
    """The child's answer into ``request``; one line when the full-integer conversion never reached the hook."""
    answer = request_path.with_suffix(".answer.json")
    if not answer.is_file():
        raise PipelineError("export: keep_float: onnx2tf's full-integer conversion did not go through the keep-float "
                            "quantisation (no answer from the child)")
    got = json.loads(answer.read_text())
    request.names, request.nodes = got["names"], got["nodes"]


def requantize(calibrated: Path, sets: list[list[str]], out_dir: Path) -> list[Path]:
    """``calibrated`` quantised once per set of layer names (``layer_key``) kept in float, in one child process:
    ``out_dir/keep_float_<i>.tflite``."""
    from pipeline.child import run_child

    out_dir.mkdir(parents=True, exist_ok=True)
    batch = out_dir / "sets.json"
    batch.write_text(json.dumps(sets))
    argv = [sys.executable, "-m", "pipeline.export.tflite_keep_float", str(Path(calibrated).resolve()), str(batch.resolve())]
    env = {**__import__("os").environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": "-1"}
    try:
        done = run_child(argv, cwd=out_dir, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         timeout=CHILD_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise PipelineError(f"export: keep_float: re-quantising took over {CHILD_TIMEOUT_S} s and was stopped") from None
    paths = [out_dir / f"keep_float_{i}.tflite" for i in range(len(sets))]
    if done.returncode != 0 or not all(p.is_file() for p in paths):
        lines = [ln for ln in (done.stderr or "").strip().splitlines() if ln.strip()]
        why = f"killed by signal {-done.returncode}" if done.returncode < 0 else (lines[-1] if lines else f"exit {done.returncode}")
        raise PipelineError(f"export: keep_float: re-quantising failed ({why.strip()[:300]})")
    return paths


def keep_float_auto(made: dict[str, Path], calibrated: Path, calibration, validation, *, int8_hits=None) -> dict:
    """``auto``: plain int8 vs fp32 on ``validation``; when it misses the 99 % rule, the layers most SQNR lost first (the
    per-layer error on ``calibration``, ``sqnr_lost``) tried in float by re-quantising ``calibrated``, each judged on validation
    (``choose_float_layers``), each with the layers its output must stay float through (``float_reach``; the record's
    ``kept`` lists them all, ``because_of`` the chosen ones). The chosen model takes the int8 file's place."""
    import shutil

    from pipeline.export.fidelity import hits, top1
    from pipeline.export.keep_float import MAX_CANDIDATES, choose_float_layers, most_lost_first, sqnr_lost
    from pipeline.export.layer_error import layer_errors
    from pipeline.formats import primary

    int8, fp32 = made[primary(precision="int8", family="tflite")], made[primary(precision="fp32", family="tflite")]
    x, y = validation
    fp32_acc = top1(fp32, x, y)
    plain = hits(int8, x, y) if int8_hits is None else int8_hits
    reach = float_reach(calibrated)

    def grown(kept: list[str]) -> list[str]:  # each chosen layer with the layers its output stays float through
        return list(dict.fromkeys(n for k in kept for n in reach[k]))
    with tempfile.TemporaryDirectory(prefix=".keep-float-", dir=Path(int8).parent) as tmp:
        scored: dict[tuple, tuple[np.ndarray, Path]] = {}

        def run(sets: list[list[str]]) -> None:  # one child per batch: TensorFlow imported once
            for kept, path in zip(sets, requantize(calibrated, sets, Path(tmp) / f"batch{len(scored)}")):
                scored[tuple(kept)] = (hits(path, x, y), path)

        def score(kept: list[str]) -> np.ndarray:
            if tuple(grown(kept)) not in scored:
                run([grown(kept)])
            return scored[tuple(grown(kept))][0]

        def rank() -> list[tuple[str, float | None]]:  # most SQNR lost first; the singles scored in one child
            lost = sqnr_lost({r.name: r.sqnr_db for r in layer_errors(int8, fp32, calibration)}, tensor_inputs(int8))
            ranked = [(name, lost[name]) for name in most_lost_first(lost) if lost[name] is not None and name in reach]
            run([grown([name]) for name, _ in ranked[:MAX_CANDIDATES]])
            return ranked

        record = choose_float_layers(rank, score, fp32_acc, plain, MECHANISM)
        if record["kept"]:
            shutil.move(scored[tuple(grown(record["kept"]))][1], int8)
    for tried in record["tried"] + [record]:  # what was in float, not only the layers chosen
        if tried.get("kept"):
            tried["because_of"], tried["kept"] = tried["kept"], grown(tried["kept"])
    return record


def tensor_inputs(path: Path):
    """``inputs_of`` for ``sqnr_lost`` on a .tflite: a tensor's name (as the per-layer error keys it) → the names of the
    activations the op writing it reads."""
    from pipeline.formats.layer_names import layer_key
    from pipeline.formats.tflite_graph import read_tflite

    reads = {layer_key(t.name): [layer_key(i.name) for i in op.inputs if not i.is_constant]
             for op in read_tflite(path).ops for t in op.outputs}
    return lambda name: reads.get(name, [])


def _main(argv: list[str]) -> int:
    """The re-quantising child: argv = calibrated model, JSON list of sets; writes keep_float_<i>.tflite beside the list."""
    calibrated, batch = Path(argv[0]), Path(argv[1])
    settings = json.loads(calibrated.with_suffix(".json").read_text())
    names = float_layer_names(calibrated)
    content = calibrated.read_bytes()
    for i, kept in enumerate(json.loads(batch.read_text())):
        missing = [k for k in kept if k not in names]
        if missing:
            raise SystemExit(f"no layer named {missing[0]!r} in {calibrated.name}")
        model = quantize(content, [n for k in kept for n in names[k]], settings)
        (batch.parent / f"keep_float_{i}.tflite").write_bytes(model)
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
