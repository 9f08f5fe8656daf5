"""Who makes tflite_int8 (``export.tflite_converter``): onnx2tf, litert-torch, or ``auto``, the better of both on the
validation split. litert-torch is the second path, so it is chosen only when better beyond doubt: the paired 95 %
interval of its top-1 minus onnx2tf's lies above 0 (``pipeline/decision.py``); a tie or a win by an image or two keeps
onnx2tf. The choice is a record of its own: in the metrics (``tflite_converter``) and in the int8 sidecar
(``converter_choice``), with its ``decision``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import PipelineError
from pipeline.export.common import Artifact, ExportInputs, ExportState, calibration_record
from pipeline.formats import primary

CONVERTER_CHOICE = "tflite_converter"  # the auto choice's record name in the stage metrics
TFLITE_INT8 = primary(precision="int8", family="tflite")
ONNX2TF_HITS = "tflite_int8 by onnx2tf"  # its per-image hits in ExportState.val_hits, for the recalibration after it


@dataclass(frozen=True)
class ConverterChoice:
    """What the setting (``mode``) came to for this run: who makes tflite_int8, and auto's record of why."""

    mode: str  # the setting: onnx2tf | litert_torch | auto (onnx2tf when tflite_int8 is not wanted)
    chosen: str  # onnx2tf | litert_torch
    record: dict | None = None  # auto's comparison

    @property
    def sidecar_fields(self) -> dict:
        return {"converter_choice": self.record} if self.record else {}


def litert_unusable(inputs: ExportInputs, state: ExportState) -> str | None:
    """Why litert-torch cannot make this model's tflite_int8 here (None: it can)."""
    from pipeline.export.torch2litert import litert_python

    if state.model is None:
        return "litert_torch converts PyTorch weights, and the given model is ONNX"
    if inputs.io_dtype != "int8":
        return f"litert_torch makes int8 I/O only, the target wants {inputs.io_dtype}"
    try:
        litert_python()
    except PipelineError as exc:
        return str(exc).removeprefix("export: ")
    return None


def choose_converter(inputs: ExportInputs, state: ExportState, onnx2tf_int8: Path) -> tuple[ConverterChoice, Artifact | None]:
    """``auto``: litert-torch's int8 beside onnx2tf's, top-1 of both on the validation split; a litert-torch win is moved
    to ``onnx2tf_int8`` and returned as its artifact. The record is kept in ``state`` under ``CONVERTER_CHOICE``."""
    import shutil
    import tempfile

    from rich.markup import escape

    from pipeline.decision import accuracy, decision, supported_clause, unsupported
    from pipeline.export.fidelity import hits

    x_val, y_val = inputs.settings.validation if inputs.settings.validation is not None else (None, [])
    why_not = litert_unusable(inputs, state) or (None if len(y_val) else "no validation images to choose by")
    if why_not:
        choice = _keep_onnx2tf(state, f"litert-torch not tried: {why_not}", len(y_val))
        state.console.print(f"    [dim]tflite_converter auto → onnx2tf ({escape(choice.record['reason'])})[/dim]")
        return choice, None
    t = state.step(f"tflite_int8 converter (auto): litert-torch beside onnx2tf, int8 top-1 on {len(y_val)} validation images")
    artifact = None
    with tempfile.TemporaryDirectory(prefix=".litert-candidate-", dir=inputs.out) as tmp:
        candidate = Path(tmp) / onnx2tf_int8.name
        try:
            versions = litert_convert(inputs, state, candidate)
        except PipelineError as exc:
            choice = _keep_onnx2tf(state, f"litert-torch failed: {exc}", len(y_val))
            state.done(CONVERTER_CHOICE, t)
            state.console.print(f"    [yellow]{escape(choice.record['reason'])}[/yellow]")
            return choice, None
        measured = {"onnx2tf": hits(onnx2tf_int8, x_val, y_val), "litert_torch": hits(candidate, x_val, y_val)}
        state.val_hits[ONNX2TF_HITS] = measured["onnx2tf"]
        judged = decision(measured["litert_torch"], measured["onnx2tf"])
        chosen = "litert_torch" if judged["supported"] else "onnx2tf"
        acc = {name: accuracy(h) for name, h in measured.items()}
        why = supported_clause(judged) if judged["supported"] else unsupported(judged, "onnx2tf")
        choice = ConverterChoice("auto", chosen, {
            "mode": "auto", "chosen": chosen, "validation_images": int(len(y_val)), "val_accuracy": acc, "decision": judged,
            "reason": f"int8 top-1 on validation: onnx2tf {acc['onnx2tf']:.2%}, litert-torch {acc['litert_torch']:.2%}; {why}"})
        state.records[CONVERTER_CHOICE] = choice.record
        if chosen == "litert_torch":
            shutil.move(candidate, onnx2tf_int8)
            artifact = litert_artifact(inputs, TFLITE_INT8, onnx2tf_int8, versions, choice)
    state.done(CONVERTER_CHOICE, t)
    state.console.print(f"    → {chosen}: {escape(choice.record['reason'])}")
    return choice, artifact


def _keep_onnx2tf(state: ExportState, reason: str, images: int) -> ConverterChoice:
    """onnx2tf's int8, litert-torch never compared on the ``images`` validation images."""
    from pipeline.decision import untried

    choice = ConverterChoice("auto", "onnx2tf", {"mode": "auto", "chosen": "onnx2tf", "decision": untried(images),
                                                 "reason": reason})
    state.records[CONVERTER_CHOICE] = choice.record
    return choice


def convert_with_litert(inputs: ExportInputs, state: ExportState, key: str, choice: ConverterChoice) -> Artifact:
    """tflite_int8 by litert-torch (``export.tflite_converter: litert_torch``)."""
    from pipeline.formats import FORMATS

    why_not = litert_unusable(inputs, state)
    if why_not:
        raise PipelineError(f"export.tflite_converter: {why_not}; use onnx2tf or auto")
    t = state.step(f"TFLite int8 via litert-torch (PT2E, {inputs.scheme}, int8 I/O, {len(inputs.calibration)} calibration images)")
    path = inputs.out / FORMATS[key].file
    versions = litert_convert(inputs, state, path)
    state.done("tflite_litert", t)
    return litert_artifact(inputs, key, path, versions, choice)


def litert_convert(inputs: ExportInputs, state: ExportState, path: Path) -> dict:
    """litert-torch's int8 .tflite at ``path`` from the same (dead-channel-neutralised) weights that went to ONNX;
    the tool versions it ran with."""
    import tempfile

    from pipeline.export.torch2litert import tool_versions, torch2litert
    from pipeline.models.checkpoint import save_checkpoint

    with tempfile.TemporaryDirectory(prefix=".litert-src-", dir=inputs.out) as tmp:
        source = Path(tmp) / "student.pt"
        save_checkpoint(source, state.model, state.meta)
        torch2litert(source, path, inputs.calibration, per_channel=inputs.per_channel)
    versions = tool_versions(path)
    path.with_name(path.name + ".versions.json").unlink(missing_ok=True)
    return versions


def litert_artifact(inputs: ExportInputs, key: str, path: Path, versions: dict, choice: ConverterChoice) -> Artifact:
    from pipeline.formats.sidecar import tflite_io

    record = calibration_record(inputs, "litert_torch.quantize.pt2e_quantizer", scheme=inputs.scheme, io_dtype=inputs.io_dtype)
    extra = {"quantization": record, "converter": "litert_torch", "converter_versions": versions, **choice.sidecar_fields}
    return Artifact(key, path, tflite_io(path), extra, from_weights=True)
