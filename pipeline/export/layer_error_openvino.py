"""Where does OpenVINO int8 lose accuracy? Every quantised activation of the NNCF IR against the fp32 graph, per layer.

NNCF quantises an activation by inserting a FakeQuantize after the op that produces it
(``<producer>/fq_output_0``) and keeps the producer's ONNX name, so every quantised tensor has an
fp32 twin: the producer of the same name in the ONNX model. Both graphs get those tensors as extra
outputs and run on the same calibration images on the CPU plugin (fp32 inference hint, the int8
IR executing in int8 as deployed); the FakeQuantize's output (int8 value × scale) is compared with
the twin with the same measures as the TFLite comparison (``pipeline.export.layer_error``): SQNR,
relative error, cosine, and the share of fp32 values outside the FakeQuantize's input range
(clipping). The model's outputs (float logits of the int8 IR) are compared too, unquantised.

Producers named by OpenVINO's own counter (``Reshape_11``) have no stable twin and are left out;
the ONNX-named ones are every convolution, activation, addition and pooling layer.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.errors import PipelineError
from pipeline.export.layer_error import LayerError, _Sums, worst_first


def openvino_layer_errors(int8_xml: Path, reference: Path, images: np.ndarray) -> list[LayerError]:
    """Per-layer error of the int8 IR ``int8_xml`` against ``reference`` (the ONNX model, or an fp32 IR, it was made from)
    on float32 N×C×H×W ``images`` (already cut to the number wanted), worst first."""
    from pipeline.runtimes.openvino_core import core as ov_core

    for path in (int8_xml, reference):
        if not Path(path).is_file():
            raise PipelineError(f"layer error: {path}: no such model file")
    core = ov_core()
    q_model, f_model = core.read_model(str(int8_xml)), core.read_model(str(reference))
    twins = {op.get_friendly_name(): op for op in f_model.get_ordered_ops()}
    q_ops = q_model.get_ordered_ops()
    order = {op.get_friendly_name(): i for i, op in enumerate(q_ops)}
    probes = []  # (int8 output, fp32 output, producer, the FakeQuantize or None)
    for op in q_ops:
        kind = op.get_type_name()
        if kind not in ("FakeQuantize", "Result"):
            continue
        producer = op.input_value(0).get_node()
        if kind == "FakeQuantize" and _is_constant(producer):  # a weight's FakeQuantize (kept when not compressed)
            continue
        twin = twins.get(producer.get_friendly_name())
        if twin is None or twin.get_output_partial_shape(0) != producer.get_output_partial_shape(0):
            continue
        out = op.output(0) if kind == "FakeQuantize" else op.input_value(0)
        probes.append((out, twin.output(0), producer, op if kind == "FakeQuantize" else None))
    if not probes:
        raise PipelineError(f"layer error: no quantised tensor of {Path(int8_xml).name} has a twin in {Path(reference).name} "
                            "(not made from that model?)")
    q_compiled = _compiled(core, q_model, [p[0] for p in probes])
    f_compiled = _compiled(core, f_model, [p[1] for p in probes])
    ranges = [_range(fq) for *_, fq in probes]
    sums = [_Sums() for _ in probes]
    for x in np.asarray(images, dtype=np.float32):
        q_out, f_out = q_compiled(x[None]), f_compiled(x[None])
        for i, acc in enumerate(sums):
            ref, got = f_out[f_compiled.outputs[i]], q_out[q_compiled.outputs[i]]
            acc.add(ref, got, None)
            if ranges[i] is not None:
                lo, hi, step = ranges[i]
                acc.clipped += int(((ref < lo - step / 2) | (ref > hi + step / 2)).sum())
    records = []
    for (out, _, producer, fq), acc, rng in zip(probes, sums, ranges):
        scale, zero = (None, None) if rng is None else (rng[2], _zero_point(rng[0], rng[2]))
        records.append(LayerError(name=producer.get_friendly_name(), op=producer.get_type_name(),
                                  shape=[int(d) for d in out.get_partial_shape().to_shape()],
                                  index=order.get(producer.get_friendly_name(), -1), **acc.result(),
                                  clipped=acc.clipped_share(), scale=scale, zero_point=zero))
    return worst_first(records)


def _is_constant(node) -> bool:
    """Whether ``node`` is computed from constants only (a weight and its decompression: Convert, Multiply by scales)."""
    if node.get_type_name() == "Constant":
        return True
    return node.get_input_size() > 0 and all(_is_constant(node.input_value(i).get_node()) for i in range(node.get_input_size()))


def _compiled(core, model, outputs):
    """``model`` with ``outputs`` as its outputs, in that order, compiled for the CPU in fp32 (the int8 IR still runs int8)."""
    import openvino as ov
    import openvino.opset13 as ops

    probed = ov.Model([ops.result(o) for o in outputs], model.get_parameters(), "probes")
    return core.compile_model(probed, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})


def _range(fq) -> tuple[float, float, float] | None:
    """(low, high, step) of a FakeQuantize's input range (the first element of a per-channel one); None for no FakeQuantize."""
    if fq is None:
        return None
    low = np.asarray(fq.input_value(1).get_node().get_data(), np.float64).ravel()
    high = np.asarray(fq.input_value(2).get_node().get_data(), np.float64).ravel()
    step = float((high[0] - low[0]) / (fq.get_levels() - 1))
    return float(low.min()), float(high.max()), step


def _zero_point(low: float, step: float) -> int:
    """The int8 (signed range) or uint8 (range from ≥ 0) zero point of a FakeQuantize range."""
    return int(round(-low / step)) - (128 if low < 0 else 0) if step > 0 else 0
