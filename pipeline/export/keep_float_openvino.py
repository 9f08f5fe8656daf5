"""``export.keep_float`` on the OpenVINO path: NNCF's ``IgnoredScope(names=…)`` in ``nncf.quantize`` (and in accuracy
control after it).

Patterns are searched in the friendly names of the IR's ops, which keep the ONNX names (``layer_error.json``'s:
``/stage0/conv/Conv``; OpenVINO splits a biased Conv into ``…/Conv/WithoutBiases`` and the bias ``…/Conv``, and one
pattern finds both). ``auto`` takes its candidates from the plain IR's per-layer error (``openvino_layer_errors``, most
SQNR lost first, ``sqnr_lost``): the compute op that wrote each bad tensor, then the ones that read it through its
FakeQuantize.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.export.keep_float import choose_float_layers, most_lost_first, pattern_record, sqnr_lost

MECHANISM = "nncf.quantize(ignored_scope=nncf.IgnoredScope(names=…, validate=False))"
COMPUTE = ("Convolution", "GroupConvolution", "ConvolutionBackpropData", "GroupConvolutionBackpropData", "MatMul")
JOINS = ("Add", "Multiply", "Concat")  # compute too when two or more inputs are activations (not a bias)
RANK_IMAGES = 16  # calibration images the plain IR's per-layer error is measured on


def openvino_patterns(onnx_path: Path, patterns: list[str]) -> dict:
    """The record of ``patterns`` applied to the ops of the IR converted from ``onnx_path``."""
    import openvino as ov

    ops = ov.convert_model(str(onnx_path)).get_ordered_ops()
    names = [op.get_friendly_name() for op in ops if op.get_type_name() not in ("Constant", "Parameter", "Result")]
    return pattern_record(list(patterns), names, MECHANISM)


def openvino_auto(onnx_path: Path, int8_xml: Path, calibration: np.ndarray, validation, per_channel: bool) -> dict:
    """``auto``: judge the plain IR at ``int8_xml`` on ``validation``; when it misses the 99 % rule, the fewest
    layers that keep it, the IR rewritten in place with them in float. Returns the record."""
    import openvino as ov

    from pipeline.export.accuracy_control import validation_accuracy, validation_hits
    from pipeline.export.onnx2openvino import quantize_openvino, stable_names
    from pipeline.runtimes.openvino_core import core

    x, y = (np.asarray(a) for a in validation)
    fp32 = ov.convert_model(str(onnx_path))
    fp32_acc = validation_accuracy(fp32, x, y)
    plain_hits = validation_hits(core().read_model(str(int8_xml)), x, y)

    def score(kept: list[str]) -> np.ndarray:
        return validation_hits(quantize_openvino(fp32, calibration, per_channel, ignored=kept), x, y)

    record = choose_float_layers(lambda: rank_layers(int8_xml, onnx_path, calibration[:RANK_IMAGES]), score, fp32_acc,
                                 plain_hits, MECHANISM)
    if "candidates" in record:
        record["ranked_by"] = (f"the plain IR's per-layer error (openvino_layer_errors, most SQNR lost first, "
                               f"{min(len(calibration), RANK_IMAGES)} calibration images)")
    if record["kept"]:
        quantized = quantize_openvino(fp32, calibration, per_channel, ignored=record["kept"])
        ov.save_model(stable_names(quantized), str(int8_xml), compress_to_fp16=False)
    return record


def rank_layers(int8_xml: Path, onnx_path: Path, images: np.ndarray) -> list[tuple[str, float | None]]:
    """The IR's compute ops, worst first: for each quantised tensor by SQNR lost where it was computed (``sqnr_lost``),
    the op that wrote it, then the ops that read it; ops next to no measured tensor follow in graph order (None)."""
    from pipeline.export.layer_error_openvino import openvino_layer_errors
    from pipeline.runtimes.openvino_core import core

    errors = openvino_layer_errors(int8_xml, onnx_path, np.asarray(images, np.float32))
    ops = core().read_model(str(int8_xml)).get_ordered_ops()
    by_name = {op.get_friendly_name(): op for op in ops}
    readers: dict[str, list[str]] = {}
    for op in ops:
        if op.get_type_name() == "FakeQuantize":
            producer = op.input_value(0).get_node().get_friendly_name()
            readers.setdefault(producer, []).extend(
                t.get_node().get_friendly_name() for t in op.output(0).get_target_inputs() if _is_compute(t.get_node()))
    lost = sqnr_lost({e.name: e.sqnr_db for e in errors},
                     lambda name: [n.get_friendly_name() for n in _activations(by_name[name])] if name in by_name else [])
    worst: dict[str, float | None] = {}
    for name in most_lost_first(lost):
        writer = _compute_above(by_name[name]) if name in by_name else None
        for op_name in [writer, *readers.get(name, [])]:
            if op_name is not None and op_name not in worst:
                worst[op_name] = lost[name]
    rest = [(op.get_friendly_name(), None) for op in ops if _is_compute(op) and op.get_friendly_name() not in worst]
    return list(worst.items()) + rest


def _activations(op) -> list:
    """The inputs of ``op`` not computed from constants (a weight and its decompression are)."""
    from pipeline.export.layer_error_openvino import _is_constant

    return [op.input_value(i).get_node() for i in range(op.get_input_size())
            if not _is_constant(op.input_value(i).get_node())]


def _is_compute(op) -> bool:
    kind = op.get_type_name()
    return kind in COMPUTE or (kind in JOINS and len(_activations(op)) > 1)


def _compute_above(op, steps: int = 8) -> str | None:
    """The compute op that wrote ``op``'s tensor, through activations and bias additions."""
    for _ in range(steps):
        if _is_compute(op):
            return op.get_friendly_name()
        inputs = _activations(op)
        if not inputs:
            return None
        op = inputs[0]
    return None


def float_weights(int8_xml: Path, onnx_path: Path, kept: list[str]) -> list[str]:
    """Of ``kept``, the convolutions and MatMuls whose weights the saved IR holds in float (``float_layers``)."""
    import openvino as ov

    from pipeline.export.accuracy_control import float_layers
    from pipeline.runtimes.openvino_core import core

    wanted = set(kept)
    return [n for n in float_layers(core().read_model(str(int8_xml)), ov.convert_model(str(onnx_path))) if n in wanted]
