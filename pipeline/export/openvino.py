"""OpenVINO IRs (fp32, fp16, NNCF int8) from the ONNX model in one conversion; the int8 IR may keep layers in float
(``export.keep_float``, first), get accuracy control (``export.openvino_accuracy_control: auto``, which then usually
finds the rule kept) and its per-layer error, as deployed."""

from __future__ import annotations

from pathlib import Path

from pipeline.export.common import Artifact, ExportInputs, ExportState, calibration_record, measure_layer_error
from pipeline.export.keep_float import KEEP_FLOAT
from pipeline.formats import FORMATS, primary

OPENVINO_INT8 = primary(precision="int8", family="openvino")
ACCURACY_CONTROL = "openvino_accuracy_control"  # its record's name in the stage metrics and the int8 sidecar


def convert_openvino(inputs: ExportInputs, state: ExportState, keys: list[str]) -> list[Artifact]:
    from pipeline.export.onnx2openvino import ACTIVATION_RANGES, BIAS_CORRECTION, PRESET, onnx2openvino
    from pipeline.formats.sidecar import nchw_io

    wanted = {FORMATS[k].precision for k in keys}
    t = state.step(f"OpenVINO IR ({', '.join(keys)}){'; NNCF int8 calibration' if 'int8' in wanted else ''}")
    keep_float = inputs.settings.keep_float if "int8" in wanted else ()
    kept = None
    if keep_float and keep_float != "auto":
        from pipeline.export.keep_float_openvino import openvino_patterns

        kept = openvino_patterns(state.paths["onnx"], list(keep_float))
        state.console.print(f"    [dim]OpenVINO: {kept['reason']}[/dim]")
    made = onnx2openvino(state.paths["onnx"], inputs.out, inputs.calibration, fp16="fp16" in wanted,
                         fp32="fp32" in wanted, int8="int8" in wanted, per_channel=inputs.per_channel,
                         ignored=kept["kept"] if kept else ())
    state.done("openvino", t)
    if OPENVINO_INT8 in made and keep_float == "auto":
        kept = _keep_float_auto(inputs, state, made[OPENVINO_INT8])
    ignored = kept["kept"] if kept else []
    if OPENVINO_INT8 in made and inputs.settings.accuracy_control == "auto" and inputs.settings.validation is not None:
        state.records[ACCURACY_CONTROL] = _accuracy_control(inputs, state, made[OPENVINO_INT8], ignored)
    if kept is not None and OPENVINO_INT8 in made:  # checked in the IR as saved, after accuracy control
        from pipeline.export.keep_float_openvino import float_weights

        kept["float_weights"] = float_weights(made[OPENVINO_INT8], state.paths["onnx"], ignored)
        state.records.setdefault(KEEP_FLOAT, {})[OPENVINO_INT8] = kept
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
                activation_ranges=ACTIVATION_RANGES, bias_correction=BIAS_CORRECTION, scheme=inputs.scheme,
                **({KEEP_FLOAT: kept} if kept is not None else {}),
                **({"accuracy_control": control} if control else {}))
        artifacts.append(Artifact(key, xml, nchw_io(inputs.input_shape, inputs.num_classes), extra))
    return artifacts


def _keep_float_auto(inputs: ExportInputs, state: ExportState, int8_xml: Path) -> dict:
    """``export.keep_float: auto``: the fewest layers in float that bring int8 to 99 % of fp32 on validation."""
    from rich.markup import escape

    from pipeline.export.keep_float_openvino import openvino_auto

    validation = inputs.settings.validation
    if validation is None:
        return {"mode": "auto", "kept": [], "reason": "no validation split to judge int8 on: nothing kept in float"}
    t = state.step(f"OpenVINO int8 vs fp32 on {len(validation[1])} validation images (export.keep_float: auto)")
    record = openvino_auto(state.paths["onnx"], int8_xml, inputs.calibration, validation, inputs.per_channel)
    state.done(f"{KEEP_FLOAT}_{OPENVINO_INT8}", t)
    state.console.print(f"    [{'yellow' if record['kept'] else 'dim'}]{escape(record['reason'])}[/]")
    return record


def _accuracy_control(inputs: ExportInputs, state: ExportState, int8_xml: Path, ignored: list[str]) -> dict:
    """NNCF's accuracy control on the validation split: float layers back where int8 costs too much top-1."""
    from rich.markup import escape

    from pipeline.export.accuracy_control import restore_openvino_int8

    validation = inputs.settings.validation
    t = state.step(f"OpenVINO int8 vs fp32 on {len(validation[1])} validation images (accuracy control: auto)")
    record = restore_openvino_int8(state.paths["onnx"], int8_xml, inputs.calibration, validation, "auto",
                                   per_channel=inputs.per_channel, ignored=ignored)
    state.done(ACCURACY_CONTROL, t)
    style = "yellow" if record["used"] or record.get("error") else "dim"
    state.console.print(f"    [{style}]{escape(record['reason'])}[/{style}]")
    return record
