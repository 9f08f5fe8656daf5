"""OpenVINO IRs (fp32, fp16, NNCF int8) from the ONNX model in one conversion; the int8 IR may get accuracy control
(``export.openvino_accuracy_control: auto``) and its per-layer error, as deployed."""

from __future__ import annotations

from pathlib import Path

from pipeline.export.common import Artifact, ExportInputs, ExportState, calibration_record, measure_layer_error
from pipeline.formats import FORMATS, primary

OPENVINO_INT8 = primary(precision="int8", family="openvino")
ACCURACY_CONTROL = "openvino_accuracy_control"  # its record's name in the stage metrics and the int8 sidecar


def convert_openvino(inputs: ExportInputs, state: ExportState, keys: list[str]) -> list[Artifact]:
    from pipeline.export.onnx2openvino import PRESET, onnx2openvino
    from pipeline.formats.sidecar import nchw_io

    wanted = {FORMATS[k].precision for k in keys}
    t = state.step(f"OpenVINO IR ({', '.join(keys)}){'; NNCF int8 calibration' if 'int8' in wanted else ''}")
    made = onnx2openvino(state.paths["onnx"], inputs.out, inputs.calibration, fp16="fp16" in wanted,
                         fp32="fp32" in wanted, int8="int8" in wanted, per_channel=inputs.per_channel)
    state.done("openvino", t)
    if OPENVINO_INT8 in made and inputs.settings.accuracy_control == "auto" and inputs.settings.validation is not None:
        state.records[ACCURACY_CONTROL] = _accuracy_control(inputs, state, made[OPENVINO_INT8])
    if OPENVINO_INT8 in made and inputs.settings.layer_error_images:  # the IR as deployed: after accuracy control
        measure_layer_error(inputs, state, OPENVINO_INT8, made[OPENVINO_INT8], state.paths["onnx"])
    control = state.records.get(ACCURACY_CONTROL)
    artifacts = []
    for key, xml in made.items():
        extra: dict = {"runtime_hints": {"INFERENCE_PRECISION_HINT": "f32"}}
        if FORMATS[key].precision == "int8":
            used = bool(control and control["used"])
            extra["quantization"] = calibration_record(
                inputs, "nncf.quantize_with_accuracy_control" if used else "nncf.quantize", preset=PRESET,
                scheme=inputs.scheme, **({"accuracy_control": control} if control else {}))
        artifacts.append(Artifact(key, xml, nchw_io(inputs.input_shape, inputs.num_classes), extra))
    return artifacts


def _accuracy_control(inputs: ExportInputs, state: ExportState, int8_xml: Path) -> dict:
    """NNCF's accuracy control on the validation split: float layers back where int8 costs too much top-1."""
    from rich.markup import escape

    from pipeline.export.accuracy_control import restore_openvino_int8

    validation = inputs.settings.validation
    t = state.step(f"OpenVINO int8 vs fp32 on {len(validation[1])} validation images (accuracy control: auto)")
    record = restore_openvino_int8(state.paths["onnx"], int8_xml, inputs.calibration, validation, "auto",
                                   per_channel=inputs.per_channel)
    state.done(ACCURACY_CONTROL, t)
    style = "yellow" if record["used"] or record.get("error") else "dim"
    state.console.print(f"    [{style}]{escape(record['reason'])}[/{style}]")
    return record
