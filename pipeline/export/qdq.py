"""ONNX int8: ONNX Runtime's static quantisation (QDQ) of the ONNX model, int8 weights per the target's scheme;
``export.keep_float`` leaves the layers it names (or ``auto`` picks) in float (``keep_float_onnx``)."""

from __future__ import annotations

from pipeline.export.common import Artifact, ExportInputs, ExportState, calibration_record
from pipeline.export.keep_float import KEEP_FLOAT
from pipeline.formats import FORMATS


def convert_onnx_int8(inputs: ExportInputs, state: ExportState, keys: list[str]) -> list[Artifact]:
    import onnx

    from pipeline.export.keep_float_onnx import qdq_keep_float
    from pipeline.export.onnx2qdq import onnx2qdq
    from pipeline.formats.sidecar import nchw_io

    made = []
    keep_float = inputs.settings.keep_float
    for key in keys:
        t = state.step(f"ONNX int8 via onnxruntime quantize_static (QDQ, {inputs.scheme} weights, "
                       f"{len(inputs.calibration)} calibration images"
                       + (f"; export.keep_float: {_said(keep_float)}" if keep_float else "") + ")")
        out = inputs.out / FORMATS[key].file
        kept = None
        if keep_float:
            kept = qdq_keep_float(state.paths["onnx"], out, inputs.calibration, keep_float, inputs.per_channel,
                                  inputs.settings.validation)
            state.records.setdefault(KEEP_FLOAT, {})[key] = kept
            state.console.print(f"    [dim]{kept['reason']}[/dim]")
            path = out
        else:
            path = onnx2qdq(state.paths["onnx"], out, inputs.calibration, per_channel=inputs.per_channel)
        state.done(key, t)
        record = calibration_record(inputs, "onnxruntime.quantization.quantize_static", format="QDQ", scheme=inputs.scheme,
                                    weights="int8 symmetric", activations="uint8 asymmetric (MinMax)",
                                    **({KEEP_FLOAT: kept} if kept is not None else {}))
        graph = onnx.load(str(path), load_external_data=False).graph
        io = nchw_io(inputs.input_shape, inputs.num_classes, graph.input[0].name, graph.output[0].name)
        made.append(Artifact(key, path, io, {"quantization": record}))
    return made


def _said(keep_float) -> str:
    return keep_float if isinstance(keep_float, str) else ", ".join(keep_float)
