"""TFLite fp32 and full-integer int8 from one onnx2tf conversion, run in a child process on a thread while the later
families convert (``convert_tflite`` returns it still running); tflite_int8 may come from litert-torch instead
(``tflite_converter``: the converter choice) and may be calibrated again (``tflite_recalibration``)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from pipeline.export.keep_float import KEEP_FLOAT
from pipeline.export.common import Artifact, ExportInputs, ExportState, calibration_record, measure_layer_error
from pipeline.export.tflite_converter import ConverterChoice, choose_converter, convert_with_litert
from pipeline.formats import FORMATS, primary

TFLITE_INT8, TFLITE_FP32 = primary(precision="int8", family="tflite"), primary(precision="fp32", family="tflite")
RECALIBRATION = "tflite_recalibration"  # its record's name in the stage metrics and the int8 sidecar


def convert_tflite(inputs: ExportInputs, state: ExportState, keys: list[str]) -> TFLiteConversion:
    return TFLiteConversion(inputs, state, keys)


class Onnx2tf:
    """onnx2tf's conversion (fp32 and full-integer in one child process) on a thread that waits for the child."""

    def __init__(self, inputs: ExportInputs, state: ExportState, keep_float=None):
        from pipeline.export.onnx2tflite import onnx2tflite

        state.console.print(f"  → TFLite via onnx2tf ({inputs.scheme} int8, {inputs.io_dtype} I/O, {len(inputs.calibration)} "
                            "calibration images), in a child process beside the other formats…")
        self.result: dict = {"started": time.perf_counter()}
        onnx = state.paths["onnx"]

        def convert() -> None:
            try:
                self.result["made"] = onnx2tflite(onnx, inputs.out, inputs.calibration, inputs.io_dtype, inputs.per_channel,
                                                  strict=False, keep_float=keep_float)
            except BaseException as exc:  # raised again by wait, in the stage's own thread
                self.result["error"] = exc
            self.result["seconds"] = time.perf_counter() - self.result["started"]

        self.thread = threading.Thread(target=convert, name="onnx2tf", daemon=True)
        self.thread.start()

    def wait(self, state: ExportState) -> dict[str, Path]:
        """The files it made; its exception, if it failed."""
        self.thread.join()
        if "error" in self.result:
            raise self.result["error"]
        state.timings["tflite"] = self.result["seconds"]
        state.console.print(f"  → TFLite via onnx2tf [dim]done in {self.result['seconds']:.1f}s[/dim]")
        return self.result["made"]


class TFLiteConversion:
    """The family's conversion: onnx2tf started now when it is needed, the rest in ``finish``."""

    def __init__(self, inputs: ExportInputs, state: ExportState, keys: list[str]):
        self.inputs, self.state, self.keys = inputs, state, keys
        self.mode = inputs.settings.tflite_converter if TFLITE_INT8 in keys else "onnx2tf"
        needs_onnx2tf = bool(keys) and not (self.mode == "litert_torch" and len(keys) == 1)
        self.keep_float = float_request(inputs) if TFLITE_INT8 in keys else None
        self.onnx2tf = Onnx2tf(inputs, state, self.keep_float) if needs_onnx2tf else None

    def abandon(self) -> None:
        if self.onnx2tf is not None:
            self.onnx2tf.thread.join()

    def finish(self) -> list[Artifact]:
        """The unrequested twin is dropped; tflite_int8 is litert-torch's when the setting says so or it wins (auto)."""
        from pipeline.formats.sidecar import tflite_io

        inputs, state = self.inputs, self.state
        made: dict[str, Path] = self.onnx2tf.wait(state) if self.onnx2tf is not None else {}
        self.onnx2tf = None
        choice, artifacts = ConverterChoice(self.mode, self.mode), []
        if self.mode == "auto":  # may put litert-torch's model in place of onnx2tf's int8
            choice, chosen = choose_converter(inputs, state, made[TFLITE_INT8])
            artifacts += [chosen] if chosen else []
        onnx2tf_int8 = choice.chosen == "onnx2tf" and TFLITE_INT8 in self.keys
        if self.keep_float is not None and made:
            keep_float(inputs, state, made, self.keep_float, onnx2tf_int8)
        if onnx2tf_int8 and inputs.settings.tflite_recalibration == "auto" and inputs.settings.validation is not None:
            state.records[RECALIBRATION] = recalibrate(inputs, state, made)
        if onnx2tf_int8 and inputs.settings.layer_error_images:  # before the fp32 twin may be dropped
            measure_layer_error(inputs, state, TFLITE_INT8, made[TFLITE_INT8], made[TFLITE_FP32])
        for key, path in made.items():
            if key == TFLITE_INT8 and choice.chosen == "litert_torch":
                if self.mode == "litert_torch":
                    path.unlink()  # made next, from the weights
                continue
            if key not in self.keys:
                path.unlink()
                continue
            extra = onnx2tf_int8_record(inputs, state, choice) if FORMATS[key].precision == "int8" else None
            artifacts.append(Artifact(key, path, tflite_io(path), extra))
        if self.mode == "litert_torch" and TFLITE_INT8 in self.keys:
            artifacts.append(convert_with_litert(inputs, state, TFLITE_INT8, choice))
        return artifacts


def onnx2tf_int8_record(inputs: ExportInputs, state: ExportState, choice: ConverterChoice) -> dict:
    """The sidecar's extra fields of onnx2tf's tflite_int8: how it was quantised, and what auto decided about it."""
    quantization = calibration_record(inputs, "onnx2tf", scheme=inputs.scheme, io_dtype=inputs.io_dtype)
    recalibration = state.records.get(RECALIBRATION) or {}
    if recalibration.get("used"):  # the adopted try: the other weight scheme, or the recorded subset and more
        adopted = next(t for t in recalibration["tried"] if t["adopted"])
        quantization["scheme"] = adopted["scheme"]
        if adopted["calibration_images"] != quantization["calibration_images"]:
            quantization.update(calibration_images=adopted["calibration_images"],
                                calibration_sha256=adopted["calibration_sha256"],
                                calibration="the recorded subset, then the next training images")
    keep_float = state.records.get(KEEP_FLOAT, {}).get(TFLITE_INT8)
    if keep_float:
        quantization[KEEP_FLOAT] = keep_float
    return {"quantization": quantization, "converter": "onnx2tf", **choice.sidecar_fields,
            **({"recalibration": recalibration} if recalibration else {})}


def recalibrate(inputs: ExportInputs, state: ExportState, made: dict[str, Path]) -> dict:
    """``tflite_recalibration: auto``: onnx2tf's int8 judged on validation, converted again on more images (and with the
    other weight scheme where the target runs it) when it misses the 99 % rule (``pipeline/export/tflite_recalibration.py``);
    the decision's record."""
    from rich.markup import escape

    from pipeline.export.tflite_recalibration import recalibrate_tflite_int8
    from pipeline.export.tflite_converter import ONNX2TF_HITS

    validation = inputs.settings.validation
    t = state.step(f"TFLite int8 vs fp32 on {len(validation[1])} validation images (recalibration: auto)")
    measured = state.val_hits.get(ONNX2TF_HITS)  # by the auto choice
    if state.records.get(KEEP_FLOAT, {}).get(TFLITE_INT8, {}).get("kept"):
        measured = None  # measured before keep_float put another int8 in place
    patterns = inputs.settings.keep_float if inputs.settings.keep_float != "auto" else ()
    record = recalibrate_tflite_int8(state.paths["onnx"], made, inputs.calibration, inputs.settings.more_images, validation,
                                     io_dtype=inputs.io_dtype, per_channel=inputs.per_channel,
                                     other_weight_scheme=inputs.other_weight_scheme, int8_hits=measured,
                                     keep_float=list(patterns))
    state.done(RECALIBRATION, t)
    style = "yellow" if "tried" in record else "dim"
    state.console.print(f"    [{style}]{escape(record['reason'])}[/{style}]")
    return record


def float_request(inputs: ExportInputs):
    """What onnx2tf's child is asked for ``export.keep_float``: the patterns, or (auto) to keep the calibrated model."""
    from pipeline.export.tflite_keep_float import FloatRequest

    wanted = inputs.settings.keep_float
    if wanted == "auto":
        return FloatRequest([], calibrated=inputs.out / ".tflite_int8_calibrated.tflite")
    return FloatRequest(list(wanted)) if wanted else None


def keep_float(inputs: ExportInputs, state: ExportState, made: dict[str, Path], request, applies: bool) -> None:
    """``export.keep_float`` on onnx2tf's int8 (``pipeline/export/tflite_keep_float.py``): the patterns' record, or
    auto's choice on the validation split; its record under ``state.records["keep_float"]["tflite_int8"]``."""
    from rich.markup import escape

    from pipeline.export.keep_float import pattern_record
    from pipeline.export.tflite_keep_float import MECHANISM, keep_float_auto

    try:
        if not applies:
            return
        if request.calibrated is None:
            record = pattern_record(request.patterns, request.names, MECHANISM)
        else:
            validation = inputs.settings.validation
            t = state.step(f"TFLite int8 layers kept in float (keep_float: auto, {len(validation[1])} validation images)")
            record = keep_float_auto(made, request.calibrated, inputs.calibration, validation)
            state.done(KEEP_FLOAT, t)
        state.records.setdefault(KEEP_FLOAT, {})[TFLITE_INT8] = record
        state.console.print(f"    [dim]{escape(record['reason'])}[/dim]")
    finally:
        if request.calibrated is not None:
            for path in (request.calibrated, request.calibrated.with_suffix(".json")):
                path.unlink(missing_ok=True)
