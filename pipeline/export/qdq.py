"""ONNX int8: ONNX Runtime's static quantisation (QDQ) of the ONNX model, int8 weights per the target's scheme."""

from __future__ import annotations

from pipeline.export.common import Artifact, ExportInputs, ExportState, calibration_record
from pipeline.formats import FORMATS


def convert_onnx_int8(inputs: ExportInputs, state: ExportState, keys: list[str]) -> list[Artifact]:
    import onnx

    from pipeline.export.onnx2qdq import onnx2qdq
    from pipeline.formats.sidecar import nchw_io

    made = []
    for key in keys:
        t = state.step(f"ONNX int8 via onnxruntime quantize_static (QDQ, {inputs.scheme} weights, "
                       f"{len(inputs.calibration)} calibration images)")
        path = onnx2qdq(state.paths["onnx"], inputs.out / FORMATS[key].file, inputs.calibration, per_channel=inputs.per_channel)
        state.done(key, t)
        record = calibration_record(inputs, "onnxruntime.quantization.quantize_static", format="QDQ", scheme=inputs.scheme,
                                    weights="int8 symmetric", activations="uint8 asymmetric (MinMax)")
        graph = onnx.load(str(path), load_external_data=False).graph
        io = nchw_io(inputs.input_shape, inputs.num_classes, graph.input[0].name, graph.output[0].name)
        made.append(Artifact(key, path, io, {"quantization": record}))
    return made
